"""kdbench's layers, enforced from the import graph (README "Architecture").

kdbench/ is a stack of packages, each with one job. A module imports only its own layer and the layers below
it, so a low layer never loads a high one (reading a results table does not import the training loop; the
engine never imports the command line). The rule holds for every import statement anywhere in a module —
inside functions and under `TYPE_CHECKING` too — with no list of exceptions. Built-in methods sit in their own
layer above `train`: they are found the way plugins are (the method registry in kdbench/train/method.py), never
imported by the layers below.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

# Bottom to top. The package root (`kdbench`, the public API of `kdbench/__init__.py`) and `kdbench.__main__`
# are the top: they may import anything, nothing imports them.
LAYERS = ("core", "spec", "data", "models", "train", "methods", "store", "teachers", "execute", "report",
          "sweep", "cli")
TOP = len(LAYERS)
# Third-party packages only one layer may import: the terminal UI belongs to the command line.
ONLY_IN = {"rich": "cli", "typer": "cli"}


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations, name
    return Path(next(iter(spec.submodule_search_locations)))


def _modules() -> dict[str, Path]:
    """Every module of kdbench (and of kdbench.methods, which lives in the repository's methods/ folder)."""
    out: dict[str, Path] = {}
    for package in ("kdbench", "kdbench.methods"):
        root = _package_dir(package)
        for path in root.rglob("*.py"):
            parts = [*package.split("."), *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> tuple[set[str], set[str]]:
    """(kdbench modules, top-level third-party packages) that `name` imports anywhere in its source."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    inner: set[str] = set()
    outer: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
                base = ".".join([*parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            if target == "kdbench" or target.startswith("kdbench."):
                # `import kdbench.a.b` names the deepest module that exists
                while target not in MODULES and "." in target:
                    target = target.rpartition(".")[0]
                inner.add(target)
            else:
                outer.add(target.split(".")[0])
    inner.discard(name)
    return inner, outer


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return TOP
    return LAYERS.index(parts[1])


def test_every_module_is_in_a_layer() -> None:
    loose = [m for m in MODULES if m.count(".") == 1 and m.split(".")[1] not in (*LAYERS, "__main__")]
    assert not loose, f"modules outside every layer (put each in the package of its layer): {loose}"


@pytest.mark.parametrize("layer", LAYERS)
def test_each_layer_says_what_it_is_for(layer: str) -> None:
    init = MODULES[f"kdbench.{layer}"]
    doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")))
    assert doc, f"kdbench/{layer}/__init__.py needs a docstring saying what the layer is for"


def test_a_layer_imports_only_itself_and_layers_below() -> None:
    upward = sorted(f"{src} ({LAYERS[layer_of(src)] if layer_of(src) < TOP else 'api'}) imports {dst} "
                    f"({LAYERS[layer_of(dst)] if layer_of(dst) < TOP else 'api'})"
                    for src, (inner, _) in GRAPH.items() for dst in inner if layer_of(dst) > layer_of(src))
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_only_the_command_line_imports_the_terminal_ui() -> None:
    wrong = sorted(f"{src} imports {pkg}" for src, (_, outer) in GRAPH.items() for pkg in outer
                   if pkg in ONLY_IN and layer_of(src) != LAYERS.index(ONLY_IN[pkg]))
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each an import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_circles() -> None:
    circles = _cycles({src: inner for src, (inner, _) in GRAPH.items()})
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


def test_the_cycle_finder_finds_a_circle() -> None:
    # The check above is only as good as this search: a two-module and a three-module circle are found, a
    # chain is not.
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": set()}) == [["a", "b"]]
    assert _cycles({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == [["x", "y", "z"]]


def test_the_layer_rule_sees_imports_inside_functions(tmp_path: Path) -> None:
    # A late import in a function body is still an import: the graph must see it.
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from kdbench.cli import app\n    import rich\n")
    inner, outer = _imports("kdbench.core.m", source)
    assert "kdbench.cli.app" in inner and "rich" in outer


def test_the_readme_draws_the_layers_in_their_order() -> None:
    # README "Architecture" draws the stack top to bottom, one layer per line: it must be the order enforced here.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    drawing = section.split("```", 2)[1]
    drawn = [line.split()[0] for line in drawing.splitlines() if line.strip() and line.split()[0] in LAYERS]
    assert drawn == list(reversed(LAYERS))
