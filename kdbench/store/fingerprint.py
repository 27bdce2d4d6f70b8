"""The code fingerprint of a method: which code made a run's numbers, so a record is reused (and averaged on the
leaderboard) only for the code that is here now.

Two halves, each covering what the other cannot:

- **the method's code, hashed automatically.** The module that defines the method's Distiller class (a built-in
  `methods/*.py` or a third-party plugin registered through the `kdbench.methods` entry point), and every
  `kdbench.*` module it imports, transitively within kdbench (found from the modules' import statements, not
  the whole package). A method that distils from a zoo teacher also covers the `ce` method's modules, through
  which the zoo trains its teachers. The hash is of the parsed source with docstrings removed (`ast.dump`), so
  comments, docstrings and formatting do not change it; any change to code does, even one that happens not to
  change the numbers (a fresh run costs compute, never a wrong comparison).
- **the harness's numbers, by hand: :data:`RESULTS_VERSION`.** The engine, data pipeline, recipes, models and
  evaluator are not imported by a method, so an edit there is not in the hash above. Every change to them that
  alters numbers (a different augmentation, a fixed bug in the evaluator, a new default recipe field) must raise
  RESULTS_VERSION by one in the same commit, and regenerate the reference records (`bash results/regenerate.sh`,
  `bash results/canary.sh`). `tests/test_results_version.py` reruns small committed canary records and fails
  when their numbers changed while RESULTS_VERSION did not.
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
# (issues #27, #28): other crops, other batches wherever the training split is not a multiple of the batch size.
RESULTS_VERSION: int = 4

FINGERPRINT_LENGTH = 12
# The method teachers are trained with (kdbench.teacher_zoo): its code shapes every zoo teacher.
TEACHER_METHOD = "ce"


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """Drop each module, class and function docstring (a leading string expression) from `tree`, in place."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree


def _tree_hash(tree: ast.AST) -> str:
    """sha256 of a syntax tree without docstrings (strips them from `tree` in place)."""
    return hashlib.sha256(ast.dump(_strip_docstrings(tree)).encode()).hexdigest()


def normalised_source_hash(source: str) -> str:
    """sha256 of the source's syntax tree without docstrings: blind to comments, docstrings and layout."""
    return _tree_hash(ast.parse(source))


def _module_file(name: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _is_kdbench(name: str) -> bool:
    return name == "kdbench" or name.startswith("kdbench.")


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
                out.add(candidate if _is_kdbench(candidate) and _module_file(candidate) else base)
    return {name for name in out if name}


@functools.cache
def _module_hash_and_imports(name: str, path: Path) -> tuple[str, frozenset[str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = _imported_modules(tree, name, path.name == "__init__.py")  # before the docstrings are stripped
    return _tree_hash(tree), frozenset(imports)


def _closure(name: str, path: Path, sources: dict[str, str]) -> None:
    """Hash module `name` (at `path`) into `sources`, then every kdbench module it imports, transitively."""
    if name in sources:
        return
    digest, imports = _module_hash_and_imports(name, path)
    sources[name] = digest
    for imported in sorted(imports):
        if _is_kdbench(imported) and imported not in sources:
            file = _module_file(imported)
            if file is not None:
                _closure(imported, file, sources)


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
    _closure(module.__name__, Path(file), sources)


@functools.cache
def _fingerprint(method_name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    from kdbench.train.method import get_method

    sources: dict[str, str] = {}
    _method_sources(method_name, sources)
    if get_method(method_name).needs_teacher and method_name != TEACHER_METHOD:
        _method_sources(TEACHER_METHOD, sources)
    items = tuple(sorted(sources.items()))
    blob = "\n".join([f"results_version={RESULTS_VERSION}", *(f"{m}={h}" for m, h in items)])
    return hashlib.sha256(blob.encode()).hexdigest()[:FINGERPRINT_LENGTH], items


def code_fingerprint(method_name: str) -> dict[str, Any]:
    """`{"fingerprint", "results_version", "sources": {module: sha256}}` of the method's code (cached per process).

    `fingerprint` is a short sha256 over RESULTS_VERSION and the sources' hashes; it is part of every run id."""
    fingerprint, items = _fingerprint(method_name)
    return {"fingerprint": fingerprint, "results_version": RESULTS_VERSION,
            "sources": {m: h[:FINGERPRINT_LENGTH] for m, h in items}}


def teacher_code() -> str:
    """The fingerprint of the code a zoo teacher is trained with (the `ce` method's), part of its zoo key."""
    return code_fingerprint(TEACHER_METHOD)["fingerprint"]
