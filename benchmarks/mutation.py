"""Mutation testing of the modules that produce kdbench's numbers: how many small wrong changes do the tests catch?

A small self-contained runner (stdlib + pytest), written instead of using mutmut 3, which copies the tree into
`mutants/` and would have to be taught the package-dir mapping `methods/ → kdbench.methods`. Here nothing on
disk changes: each mutant is a modified syntax tree of one module, compiled with the module's real file name and
served by an import hook to a forked pytest process that runs only the tests listed for that module (TARGETS).

    python benchmarks/mutation.py                       # every target (long: not part of CI)
    python benchmarks/mutation.py kdbench.train.evaluate      # some targets
    python benchmarks/mutation.py --list                # the targets, their tests, their mutant counts

Per mutant the outcome is `killed` (a test failed or errored), `timeout` (ran past 3× the clean run + 30 s:
counted as killed, a loop the tests would not finish), `survived`, or `uncovered` (a survivor on a line the
selected tests never execute, known from a line trace of the clean run, so it is not run). Kill ratio =
(killed + timeout) / all mutants. Survivors are printed with their line and the change, to be judged (killed by
a new test, or explained as equivalent in docs/testing.md).

Mutations (one per mutant): arithmetic operators (+ −, * /, // /, ** *), comparison boundaries and negations
(< <=, > >=, == !=, in / not in, is / is not), and / or, dropping `not` and unary minus, numbers n → n + 1,
True / False, augmented assignments (+= −=, *= /=), the method calls sum/mean and min/max and the builtins min/max,
and — the wiring mutation — `x.w_a` → `x.w_b` for two loss weights of the same module, and `x.temperature` /
`x.T`-like parameter reads replaced by their default. Not mutated: docstrings, type annotations, the messages of
`raise` statements and of warnings, and strings in general (they name things; they are not numbers).

Subprocesses the tests start (the CLI tests) would import the unmutated code, so the targets list in-process
tests only.
"""

from __future__ import annotations

import argparse
import ast
import copy
import importlib.abc
import importlib.util
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Target:
    module: str  # import name
    path: str  # source file, relative to the repository root
    tests: tuple[str, ...]  # pytest node ids, fastest first
    functions: tuple[str, ...] = ()  # only these top-level functions/classes (empty: the whole module)
    keyword: str = ""  # pytest -k: only the tests whose names match (e.g. one method's cases of a shared test)


WIRING = "tests/test_method_wiring.py"
PARAMS = "tests/test_method_params.py"
GRAPH_TESTS = ("tests/test_graph_operators.py", "tests/test_graph_module.py")

TARGETS = [
    Target("kdbench.train.evaluate", "kdbench/train/evaluate.py", ("tests/test_evaluator.py",)),
    Target("kdbench.train.schedule", "kdbench/train/schedule.py", ("tests/test_schedule.py",)),
    Target("kdbench.methods.kd", "methods/kd.py", ("tests/test_kd_loss.py", WIRING, PARAMS), keyword="kd"),
    Target("kdbench.models.graph", "kdbench/models/graph.py", GRAPH_TESTS),
    Target("kdbench.models.gnn", "kdbench/models/gnn.py", GRAPH_TESTS),
    Target("kdbench.methods.ce", "methods/ce.py", (WIRING, PARAMS), keyword="ce"),
    Target("kdbench.methods.cnn2gnn", "methods/cnn2gnn.py", (WIRING, PARAMS), keyword="cnn2gnn"),
    Target("kdbench.methods.rkd", "methods/rkd.py", ("tests/test_method_rkd.py", WIRING, PARAMS), keyword="rkd"),
    Target("kdbench.methods.fitnet", "methods/fitnet.py", ("tests/test_method_fitnet.py", WIRING, PARAMS),
           keyword="fitnet"),
    Target("kdbench.methods.crd", "methods/crd.py", ("tests/test_method_crd.py", WIRING, PARAMS), keyword="crd"),
    Target("kdbench.data.loaders", "kdbench/data/loaders.py",
           ("tests/test_loader_workers.py", "tests/test_sampler.py")),
    Target("kdbench.data.augment", "kdbench/data/augment.py", ("tests/test_augment.py",)),
    Target("kdbench.train.engine", "kdbench/train/engine.py",
           ("tests/test_sampler.py", "tests/test_engine_numbers.py")),
    Target("kdbench.train.checkpoint", "kdbench/train/checkpoint.py",
           ("tests/test_engine_numbers.py",
            # the checkpoint's validation, in process (the rest of test_security.py starts CLI subprocesses)
            "tests/test_security.py::test_a_checkpoint_is_saved_only_as_plain_data_and_a_misfit_restores_nothing")),
    # The leaderboard's statistics (its own module since the leaderboard was split) and the cell format.
    Target("kdbench.report.leaderboard.stats", "kdbench/report/leaderboard/stats.py", ("tests/test_leaderboard.py",)),
    Target("kdbench.report.leaderboard.cells", "kdbench/report/leaderboard/cells.py", ("tests/test_leaderboard.py",),
           functions=("format_cell",)),
    Target("kdbench.methods.at", "methods/at.py", ("tests/test_method_at_pkt.py", WIRING, PARAMS), keyword="at"),
    Target("kdbench.methods.pkt", "methods/pkt.py", ("tests/test_method_at_pkt.py", WIRING, PARAMS),
           keyword="pkt"),
    Target("kdbench.methods.dkd", "methods/dkd.py", ("tests/test_method_dkd.py", WIRING, PARAMS), keyword="dkd"),
    Target("kdbench.methods.hkd", "methods/hkd.py", ("tests/test_method_hkd.py", WIRING, PARAMS), keyword="hkd"),
]

# ---------------------------------------------------------------------------------------------------------------
# Mutation points

_BINOP_SWAPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div,
                ast.Pow: ast.Mult, ast.Mod: ast.FloorDiv}
_CMP_SWAPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
              ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Pow: "**",
           ast.Mod: "%", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!=",
           ast.In: "in", ast.NotIn: "not in", ast.Is: "is", ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
_CALL_SWAPS = {"sum": "mean", "mean": "sum", "max": "min", "min": "max", "amax": "amin", "amin": "amax"}


@dataclass(frozen=True)
class Mutation:
    node: int  # position of the node in ast.walk order
    kind: str
    line: int
    change: str  # what the mutant does, for people


@dataclass
class _Defaults:
    weights: dict[str, list[str]] = field(default_factory=dict)  # "w_" fields of each params class
    values: dict[str, object] = field(default_factory=dict)  # field → default literal (numbers only)


def _params_fields(tree: ast.Module) -> _Defaults:
    """The loss weights (`w_*`) and numeric defaults of the module's dataclass fields."""
    found = _Defaults()
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        weights = []
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                name = stmt.target.id
                if name.startswith("w_"):
                    weights.append(name)
                if isinstance(stmt.value, ast.Constant) and type(stmt.value.value) in (int, float):
                    found.values[name] = stmt.value.value
        for w in weights:
            found.weights[w] = [o for o in weights if o != w]
    return found


def _skipped_nodes(tree: ast.Module, functions: tuple[str, ...]) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, raise/warn messages, code outside `functions`."""
    skip: set[int] = set()

    def drop(node: ast.AST | None) -> None:
        if node is not None:
            skip.update(id(n) for n in ast.walk(node))

    if functions:
        for stmt in tree.body:
            if not (isinstance(stmt, ast.FunctionDef | ast.ClassDef) and stmt.name in functions):
                drop(stmt)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
            drop(first)  # docstring
        if isinstance(node, ast.AnnAssign):
            drop(node.annotation)
        if isinstance(node, ast.arg):
            drop(node.annotation)
        if isinstance(node, ast.FunctionDef):
            drop(node.returns)
        if isinstance(node, ast.Raise):
            drop(node.exc)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn":
            drop(node)
        if isinstance(node, ast.JoinedStr):
            drop(node)
    return skip


def _alternatives(node: ast.AST, defaults: _Defaults) -> list[tuple[str, str]]:
    """(kind, change) of each mutant of this node."""
    out: list[tuple[str, str]] = []
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOP_SWAPS:
        out.append(("binop", f"{_SYMBOL[type(node.op)]} → {_SYMBOL[_BINOP_SWAPS[type(node.op)]]}"))
    elif isinstance(node, ast.AugAssign) and type(node.op) in _BINOP_SWAPS:
        out.append(("augassign", f"{_SYMBOL[type(node.op)]}= → {_SYMBOL[_BINOP_SWAPS[type(node.op)]]}="))
    elif isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in _CMP_SWAPS:
                out.append((f"compare{i}", f"{_SYMBOL[type(op)]} → {_SYMBOL[_CMP_SWAPS[type(op)]]}"))
    elif isinstance(node, ast.BoolOp):
        out.append(("boolop", f"{_SYMBOL[type(node.op)]} → {'or' if isinstance(node.op, ast.And) else 'and'}"))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not | ast.USub):
        out.append(("unary", f"drop {'not' if isinstance(node.op, ast.Not) else 'unary -'}"))
    elif isinstance(node, ast.Constant) and type(node.value) is bool:
        out.append(("const", f"{node.value} → {not node.value}"))
    elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
        out.append(("const", f"{node.value!r} → {node.value + 1!r}"))
    elif isinstance(node, ast.Call):
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr in _CALL_SWAPS:
            out.append(("call", f".{func.attr}() → .{_CALL_SWAPS[func.attr]}()"))
        elif isinstance(func, ast.Name) and func.id in ("min", "max"):
            out.append(("call", f"{func.id}() → {_CALL_SWAPS[func.id]}()"))
    elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
        for other in defaults.weights.get(node.attr, []):
            out.append((f"weight:{other}", f".{node.attr} → .{other}"))
        if "temperature" in node.attr and node.attr in defaults.values:
            out.append(("default", f".{node.attr} → {defaults.values[node.attr]!r} (its default)"))
    return out


def mutation_points(tree: ast.Module, functions: tuple[str, ...] = ()) -> list[Mutation]:
    skip = _skipped_nodes(tree, functions)
    defaults = _params_fields(tree)
    points = []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        for kind, change in _alternatives(node, defaults):
            points.append(Mutation(i, kind, getattr(node, "lineno", 0), change))
    return points


def _parents(tree: ast.AST) -> dict[int, tuple[ast.AST, str, int | None]]:
    parents = {}
    for parent in ast.walk(tree):
        for name, value in ast.iter_fields(parent):
            if isinstance(value, ast.AST):
                parents[id(value)] = (parent, name, None)
            elif isinstance(value, list):
                for j, item in enumerate(value):
                    if isinstance(item, ast.AST):
                        parents[id(item)] = (parent, name, j)
    return parents


def apply(tree: ast.Module, m: Mutation, defaults: _Defaults) -> ast.Module:
    """A mutated copy of `tree`."""
    tree = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(tree)) if i == m.node)
    if m.kind in ("binop", "augassign"):
        node.op = _BINOP_SWAPS[type(node.op)]()
    elif m.kind.startswith("compare"):
        i = int(m.kind[len("compare"):])
        node.ops[i] = _CMP_SWAPS[type(node.ops[i])]()
    elif m.kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif m.kind == "const":
        node.value = (not node.value) if type(node.value) is bool else node.value + 1
    elif m.kind == "call":
        if isinstance(node.func, ast.Attribute):
            node.func.attr = _CALL_SWAPS[node.func.attr]
        else:
            node.func.id = _CALL_SWAPS[node.func.id]
    elif m.kind.startswith("weight:"):
        node.attr = m.kind.split(":", 1)[1]
    elif m.kind in ("unary", "default"):
        replacement = node.operand if m.kind == "unary" else ast.Constant(defaults.values[node.attr])
        parent, name, j = _parents(tree)[id(node)]
        if j is None:
            setattr(parent, name, replacement)
        else:
            getattr(parent, name)[j] = replacement
    else:
        raise ValueError(m.kind)
    return ast.fix_missing_locations(tree)


# ---------------------------------------------------------------------------------------------------------------
# Running tests against a mutant, in a forked child with an import hook


class _ServeCode(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, module: str, path: str, code) -> None:
        self.module, self.path, self.code = module, path, code

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.module:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.path)

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        module.__file__ = self.path
        exec(self.code, module.__dict__)


def _pytest_args(target: Target, first_failure: bool = True) -> list[str]:
    keyword = ["-k", target.keyword] if target.keyword else []
    stop = ["-x"] if first_failure else ["-rf"]
    # `-n 0`: the tests must run in this (forked, mutant-serving, traced) process, not in the pytest-xdist workers
    # that pyproject's addopts start; in a worker the real module is imported and every mutant "survives".
    return [*stop, "-n", "0", "-q", "-p", "no:cacheprovider", "--no-header", "-W", "ignore", "--rootdir", str(ROOT),
            *keyword, *[str(ROOT / t) for t in target.tests]]


def _child(target: Target, code, log: Path, trace_lines: Path | None, first_failure: bool = True) -> None:
    """In the forked child: serve `code` for the target module, run its tests, exit with pytest's code."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    path = str(ROOT / target.path)
    sys.meta_path.insert(0, _ServeCode(target.module, path, code))
    import pytest

    if trace_lines is None:
        os._exit(int(pytest.main(_pytest_args(target, first_failure))))
    executed: set[int] = set()

    def local(frame, event, arg):
        if event == "line":
            executed.add(frame.f_lineno)
        return local

    def global_trace(frame, event, arg):
        if frame.f_code.co_filename == path:
            executed.add(frame.f_lineno)
            return local
        return None

    sys.settrace(global_trace)
    import threading

    threading.settrace(global_trace)
    code_ = int(pytest.main(_pytest_args(target)))
    sys.settrace(None)
    trace_lines.write_text(json.dumps(sorted(executed)))
    os._exit(code_)


def run_child(target: Target, code, log: Path, timeout: float, trace_lines: Path | None = None,
              first_failure: bool = True) -> tuple[str, float]:
    t0 = time.monotonic()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        try:
            _child(target, code, log, trace_lines, first_failure)
        finally:
            os._exit(99)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout", time.monotonic() - t0
        time.sleep(0.02)
    code_ = os.waitstatus_to_exitcode(status)
    return ("survived" if code_ == 0 else "killed"), time.monotonic() - t0


def _statement_lines(tree: ast.Module) -> dict[int, set[int]]:
    """For each line, the lines of the innermost statement holding it (a multi-line expression's mutant is
    covered when its statement ran; the tracer reports the statement's lines that executed)."""
    spans: dict[int, set[int]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.stmt) and not isinstance(node, ast.FunctionDef | ast.ClassDef | ast.If | ast.For |
                                                            ast.While | ast.With | ast.Try):
            lines = set(range(node.lineno, (node.end_lineno or node.lineno) + 1))
            for line in lines:
                spans[line] = lines
    return spans


def mutate_target(target: Target, workdir: Path, limit: int | None = None) -> dict:
    source = (ROOT / target.path).read_text()
    tree = ast.parse(source, filename=str(ROOT / target.path))
    points = mutation_points(tree, target.functions)
    if limit is not None:
        points = points[:limit]
    defaults = _params_fields(tree)
    lines = source.splitlines()
    clean = compile(tree, str(ROOT / target.path), "exec")
    trace = workdir / f"{target.module}.lines.json"
    status, clean_s = run_child(target, clean, workdir / f"{target.module}.clean.log", 1800, trace)
    if status != "survived":
        raise SystemExit(f"{target.module}: the tests fail without any mutation; see "
                         f"{workdir}/{target.module}.clean.log")
    executed = set(json.loads(trace.read_text()))
    spans = _statement_lines(tree)
    timeout = 3 * clean_s + 30
    results = []
    print(f"\n{target.module}: {len(points)} mutants, tests {' '.join(target.tests)} {target.keyword} "
          f"(clean run {clean_s:.1f} s)", flush=True)
    for n, m in enumerate(points, 1):
        if not (spans.get(m.line, {m.line}) & executed):
            outcome, seconds = "uncovered", 0.0
        else:
            code = compile(apply(tree, m, defaults), str(ROOT / target.path), "exec")
            outcome, seconds = run_child(target, code, workdir / "mutant.log", timeout)
        results.append({"line": m.line, "change": m.change, "outcome": outcome, "seconds": round(seconds, 2),
                        "source": lines[m.line - 1].strip() if m.line else ""})
        mark = {"killed": ".", "timeout": "T", "survived": "S", "uncovered": "u"}[outcome]
        print(mark, end="\n" if n % 60 == 0 else "", flush=True)
    counts = {k: sum(r["outcome"] == k for r in results) for k in ("killed", "timeout", "survived", "uncovered")}
    total = len(results)
    ratio = (counts["killed"] + counts["timeout"]) / total if total else 1.0
    return {"module": target.module, "path": target.path, "tests": list(target.tests),
            "functions": list(target.functions), "mutants": total, **counts, "kill_ratio": round(ratio, 4),
            "clean_s": round(clean_s, 1), "results": results}


def by_hand(target: Target, old: str, new: str, workdir: Path) -> None:
    """Run the target's tests (all of them, not stopping at the first failure) against its source with the one
    textual change `old` → `new`, and list the tests that fail: a hand-made mutant, checked without touching
    the file."""
    path = ROOT / target.path
    source = path.read_text()
    if source.count(old) != 1:
        raise SystemExit(f"{target.path}: {old!r} occurs {source.count(old)} times; give a unique snippet")
    code = compile(source.replace(old, new), str(path), "exec")
    log = workdir / "by-hand.log"
    outcome, seconds = run_child(target, code, log, 1800, first_failure=False)
    failed = [line.split(" - ")[0] for line in log.read_text().splitlines() if line.startswith(("FAILED", "ERROR"))]
    print(f"{target.path}: {old!r} → {new!r}: {outcome} ({seconds:.0f} s)")
    for line in failed:
        print(f"  {line}")


def report(summary: dict) -> None:
    print(f"\n{summary['module']}: {summary['killed'] + summary['timeout']}/{summary['mutants']} killed "
          f"({100 * summary['kill_ratio']:.1f} %; {summary['timeout']} by timeout), {summary['survived']} survived, "
          f"{summary['uncovered']} on lines the tests never run")
    for r in summary["results"]:
        if r["outcome"] in ("survived", "uncovered"):
            print(f"  {summary['path']}:{r['line']}  [{r['outcome']}]  {r['change']:<40}  {r['source'][:90]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", help="import names of the targets (default: all)")
    parser.add_argument("--list", action="store_true", help="list targets, tests and mutant counts, run nothing")
    parser.add_argument("--json", type=Path, help="write every mutant's outcome to this file")
    parser.add_argument("--limit", type=int, help="only the first N mutants of each target (a smoke run)")
    parser.add_argument("--by-hand", nargs=2, metavar=("OLD", "NEW"),
                        help="one hand-made mutant of the (single) target: replace the unique snippet OLD by NEW "
                             "in memory and list the tests that fail")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/kdbench-mutation"))
    args = parser.parse_args()
    by_name = {t.module: t for t in TARGETS}
    unknown = [m for m in args.modules if m not in by_name]
    if unknown:
        raise SystemExit(f"unknown target(s) {unknown}; targets: {', '.join(by_name)}")
    targets = [by_name[m] for m in args.modules] if args.modules else TARGETS
    if args.list:
        for t in targets:
            tree = ast.parse((ROOT / t.path).read_text())
            keyword = f"  -k {t.keyword}" if t.keyword else ""
            print(f"{t.module:<26} {len(mutation_points(tree, t.functions)):>4} mutants  {' '.join(t.tests)}{keyword}")
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    # Heavy third-party imports once, before forking: every child starts with them loaded (kdbench itself is
    # imported fresh in each child, through the hook).
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch

    torch.set_num_threads(1)
    import scipy.optimize  # noqa: F401
    import timm  # noqa: F401

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.by_hand:
        if len(targets) != 1:
            raise SystemExit("--by-hand takes exactly one target module")
        by_hand(targets[0], *args.by_hand, args.workdir)
        return
    summaries = []
    for t in targets:
        summary = mutate_target(t, args.workdir, args.limit)
        report(summary)
        summaries.append(summary)
        if args.json:  # after each target, so a long run keeps what it measured
            args.json.write_text(json.dumps(summaries, indent=1))
    print("\nmodule                      mutants  killed  survived  uncovered  kill ratio")
    for s in summaries:
        print(f"{s['module']:<27} {s['mutants']:>7} {s['killed'] + s['timeout']:>7} {s['survived']:>9} "
              f"{s['uncovered']:>10}  {100 * s['kill_ratio']:>8.1f} %")


if __name__ == "__main__":
    main()
