"""The code fingerprint of a method: which code made a run's numbers, so a record is reused (and averaged on the
leaderboard) only for the code that is here now.

The rule: **a fingerprint follows the code a method's losses are made of, by content, not by location.**

- **What is hashed.** The module that defines the method's Distiller class (a built-in `methods/*.py` or a
  third-party plugin registered through the `kdbench.methods` entry point) and, followed transitively, every module
  it imports from the layers where losses and the pieces they are computed on live: the methods layer
  (`kdbench.methods`, or the plugin's own top-level package) and the models layer (`kdbench.models`: feature taps,
  graph learners, architectures a method builds itself). Imports of the harness layers below — core, spec, data,
  train (the engine, evaluator, optimizer and the Distiller base class) — are not followed: their numbers are
  versioned by hand (next point). A method that distils from a zoo teacher also covers the `ce` method's code,
  through which the zoo trains its teachers.
- **How.** Each module counts as the hash of its syntax tree without docstrings (`ast.dump`), so comments,
  docstrings and layout change nothing, while any change to code does (even one that happens not to change the
  numbers: a fresh run costs compute, never a wrong comparison). An import of a kdbench module (or of the
  plugin's own package) is hashed as the names it imports, not the path it imports them from, and the fingerprint
  is a hash of the modules' sorted hashes, not of their names: moving or renaming a module is not a code change.
- **The harness's numbers, by hand: :data:`RESULTS_VERSION`.** Every change to the engine, data pipeline,
  recipes, models or evaluator that alters numbers must raise RESULTS_VERSION by one in the same commit and
  regenerate the reference records (`bash results/regenerate.sh`, `bash results/canary.sh`).
  `tests/test_results_version.py` reruns small committed canary records and fails when their numbers changed
  while RESULTS_VERSION did not.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import inspect
import textwrap
from pathlib import Path
from typing import Any

# Raise by one with every change to the harness that alters numbers (engine, data, recipes, models, evaluator),
# then regenerate results/reference (bash results/regenerate.sh) and its canaries (bash results/canary.sh).
# History: 1 — fingerprints introduced; 2 — the learning rate changes per optimizer step (not per epoch) and
# milestones/warm-up follow --epochs; 3 — training augmentation is a pure function of (seed, epoch, sample index)
# (per-sample keyed RNG, kdbench.data.loaders.EpochKeyedAugmentation) instead of the global stream, so every
# augmented run draws other crops (and methods that draw random numbers, e.g. CRD, draw other ones too); 4 — crops
# and flips from a counter hash of (seed, epoch, index) computed per batch (kdbench.data.keyed) instead of a
# per-sample seeded RNG, in-memory sets served as whole batches, and the ragged last training batch dropped
# (issues #27, #28): other crops, other batches wherever the training split is not a multiple of the batch size;
# 5 — the one regeneration of issues #35, #36 and #38: fitnet's and at's default stages on non-ResNet families
# (ViT, Swin, Mixer) follow relative depth and every feature method reads token maps as N×C×H×W (one feature tap);
# on CNN pairs the code gives version 4's numbers for version 4's teacher (checked byte for byte when the tap
# landed), but every zoo teacher was retrained for it (the digits ResNet-18 98.33 % where version 4's had 98.89)
# and every student distils from them.
RESULTS_VERSION: int = 5

FINGERPRINT_LENGTH = 12
# The method teachers are trained with (kdbench.teachers.zoo): its code shapes every zoo teacher.
TEACHER_METHOD = "ce"


# The layers a fingerprint follows imports into (besides the method's own package): where losses are computed.
FOLLOWED_PACKAGES = ("kdbench.methods", "kdbench.models")
# The name every kdbench import is hashed under, whatever module it names (a move is not a code change).
_KDBENCH = "kdbench"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop each module, class and function docstring (a leading string expression) from `tree`, in place."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _is_kdbench(name: str) -> bool:
    return name == _KDBENCH or name.startswith(f"{_KDBENCH}.")


def _forget_locations(tree: ast.AST, packages: tuple[str, ...]) -> ast.AST:
    """Rewrite every import from `packages` (kdbench, and a plugin's own package) to import the same names from the
    package's name alone, in place: where a module lives is not part of the code (its content is, when the
    fingerprint follows it)."""
    def inside(name: str) -> str | None:
        return next((p for p in packages if name == p or name.startswith(f"{p}.")), None)

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: inside the module's own package
            node.module, node.level = packages[-1], 0
        elif isinstance(node, ast.ImportFrom) and node.module and inside(node.module):
            node.module = inside(node.module)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                alias.name = inside(alias.name) or alias.name
    return tree


def _tree_hash(tree: ast.AST, own_package: str = _KDBENCH) -> str:
    """sha256 of a syntax tree without docstrings or the paths of kdbench (and own-package) imports (rewrites
    `tree` in place)."""
    packages = tuple(dict.fromkeys((_KDBENCH, own_package)))
    return hashlib.sha256(ast.dump(_forget_locations(_strip_docstrings(tree), packages)).encode()).hexdigest()


def normalised_source_hash(source: str) -> str:
    """sha256 of the source's syntax tree without docstrings: blind to comments, docstrings, layout and the paths of
    kdbench imports."""
    return _tree_hash(ast.parse(source))


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported_modules(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """The absolute names of the modules `tree` imports (anywhere in it, functions included)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base_parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            for alias in node.names:  # `from pkg import sub` imports a module; `from mod import name` does not
                candidate = f"{base}.{alias.name}"
                out.add(candidate if _module_file(candidate) else base)
    return {name for name in out if name}


@functools.cache
def _module_hash_and_imports(name: str, path: Path) -> tuple[str, frozenset[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = _imported_modules(tree, name, path.name == "__init__.py")  # before the tree is rewritten
    return _tree_hash(tree, name.split(".")[0]), frozenset(imports)


def _follows(imported: str, own_package: str) -> bool:
    """Whether the fingerprint follows an import into `imported`: the method's own package (a plugin's), the
    methods layer or the models layer."""
    packages = (*FOLLOWED_PACKAGES, *([own_package] if not _is_kdbench(own_package) else []))
    return any(imported == p or imported.startswith(f"{p}.") for p in packages)


def module_sources(name: str, path: Path, sources: dict[str, str] | None = None) -> dict[str, str]:
    """`{module: sha256}` of module `name` (at `path`) and every module it imports that the fingerprint follows,
    transitively (see the module docstring)."""
    sources = {} if sources is None else sources
    own_package = name.split(".")[0]
    pending = [(name, path)]
    while pending:
        current, file = pending.pop()
        if current in sources:
            continue
        digest, imports = _module_hash_and_imports(current, file)
        sources[current] = digest
        for imported in sorted(imports):
            if imported not in sources and _follows(imported, own_package):
                found = _module_file(imported)
                if found is not None:
                    pending.append((imported, found))
    return sources


def combine(sources: dict[str, str]) -> str:
    """The fingerprint of a set of module hashes: their sorted contents with RESULTS_VERSION, never their names."""
    blob = "\n".join([f"results_version={RESULTS_VERSION}", *sorted(sources.values())])
    return hashlib.sha256(blob.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def _method_sources(method_name: str, sources: dict[str, str]) -> None:
    from kdbench.train.method import get_method

    spec = get_method(method_name)
    module = inspect.getmodule(spec.cls)
    file = getattr(module, "__file__", None)
    if module is None or file is None or not str(file).endswith(".py"):
        # A class without a module file (defined in a notebook or at runtime): its own source when Python has
        # it, else its name alone.
        try:
            digest = normalised_source_hash(textwrap.dedent(inspect.getsource(spec.cls)))
        except (OSError, TypeError, SyntaxError):
            digest = hashlib.sha256(spec.cls.__qualname__.encode()).hexdigest()
        sources[f"{spec.cls.__module__}.{spec.cls.__qualname__}"] = digest
        return
    module_sources(module.__name__, Path(file), sources)


@functools.cache
def _fingerprint(method_name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    from kdbench.train.method import get_method

    sources: dict[str, str] = {}
    _method_sources(method_name, sources)
    if get_method(method_name).needs_teacher and method_name != TEACHER_METHOD:
        _method_sources(TEACHER_METHOD, sources)
    return combine(sources), tuple(sorted(sources.items()))


def code_fingerprint(method_name: str) -> dict[str, Any]:
    """`{"fingerprint", "results_version", "sources": {module: sha256}}` of the method's code (cached per process).

    `fingerprint` is a short sha256 over RESULTS_VERSION and the sources' hashes (not their names); it is part of
    every run id. `sources` names the modules hashed, for a person reading the record."""
    fingerprint, items = _fingerprint(method_name)
    return {"fingerprint": fingerprint, "results_version": RESULTS_VERSION,
            "sources": {m: h[:FINGERPRINT_LENGTH] for m, h in items}}


def teacher_code() -> str:
    """The fingerprint of the code a zoo teacher is trained with (the `ce` method's), part of its zoo key."""
    return code_fingerprint(TEACHER_METHOD)["fingerprint"]
