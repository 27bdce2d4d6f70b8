"""`--compile`: the run's modules through torch.compile, each falling back to eager on its own when it cannot be
compiled, with the compile seconds and recompilations counted for the record.

What is compiled: the student, the teacher (its forward in inference mode, also while the teacher-output cache is
filled), and every other module the method trains (a projector, a connector). Each is compiled in place
(`nn.Module.compile`): its parameters and state_dict keys stay the same, so checkpoints, exports and the
teacher-output cache see the module they always saw.

The optimizer step of a compiled run is torch's fused kernel (`fused=True`: one pass over each parameter for the
weight decay, momentum and update, where the default `foreach` implementation makes several): what compiling the
step would give, without a recompilation at every learning-rate change (kdbench.train.optim.build_optimizer).
ResNet-152 at 16 px on one CPU thread: 26-29 ms a step instead of 64-80 ms.

A module that cannot be compiled (an operator without a fake-tensor kernel, e.g. a plugin's custom op or a graph
library's; an inductor that fails to build its C++) raises on its first compiled call, before the module ran:
one warning line names it and it runs eager from then on, never a traceback. The step then goes on with the
eager call, the same numbers as a run without `--compile` for that module.

Recompilations are bounded: evaluation is a recompile (train → eval), the ragged last batch of an epoch makes
dynamo mark the batch dimension dynamic (one more graph, not one per size), and a stage tap added to a teacher
adds a graph. They are counted (dynamo's own counters) and the record states them with the compile seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbench.core.errors import UserError

# torch.compile's modes (torch.compile(mode=...)); "default" is torch's default.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def check_compile_mode(mode: str) -> str:
    if mode not in COMPILE_MODES:
        raise UserError(f"unknown compile mode '{mode}'. Valid: {', '.join(COMPILE_MODES)}")
    return mode


def inductor_cache_dir(teacher_cache_dir: Path) -> Path:
    """Where inductor keeps its compiled kernels for kdbench: `inductor/` beside the teacher-output cache (in the
    kdbench cache folder), one folder per torch build (its version and git revision), so another torch never reads
    kernels it did not build."""
    build = f"{torch.__version__}-{(torch.version.git_version or 'unknown')[:12]}".replace("+", "_")
    return Path(teacher_cache_dir).parent / "inductor" / build


def use_inductor_cache(teacher_cache_dir: Path) -> None:
    """Point inductor at the kdbench cache (a sweep on one machine then reuses its compiled kernels), unless the
    user set TORCHINDUCTOR_CACHE_DIR. (Importing parts of torch sets it to torch's default, /tmp/torchinductor_USER:
    that value is not the user's choice.)"""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given is None or os.path.abspath(given) == _torch_default_cache_dir():
        folder = inductor_cache_dir(teacher_cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)


def _torch_default_cache_dir() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # another torch: its default is not known here
        return None
    return os.path.abspath(default_cache_dir())


@dataclass
class CompileStats:
    """What compilation cost a run: seconds compiling, graphs built, recompilations, modules left eager."""

    mode: str
    modules: list[str] = field(default_factory=list)  # compiled
    eager: dict[str, str] = field(default_factory=dict)  # module name → why it runs eager
    _start: dict[str, float] = field(default_factory=dict)

    def begin(self) -> None:
        self._start = _dynamo_totals()

    def describe(self) -> dict[str, Any]:
        now = _dynamo_totals()
        since = {k: now[k] - self._start.get(k, 0.0) for k in now}
        # Each compiled module's forward is one frame compiled once; every frame beyond is a recompilation (a
        # guard failed: eval mode, the ragged batch's size, a new tap) or a graph break's resumed part.
        return {"mode": self.mode, "modules": list(self.modules), "eager": dict(self.eager),
                "compile_s": round(since["compile_s"], 3), "graphs": int(since["graphs"]),
                "recompiles": max(int(since["frames"]) - len(self.modules), 0)}


def _dynamo_totals() -> dict[str, float]:
    """Dynamo's process-wide counters: seconds compiling, graphs built, frames compiled."""
    from torch._dynamo import utils

    metrics = getattr(utils, "compilation_time_metrics", {})
    return {"compile_s": float(sum(metrics.get("_compile.compile_inner", ()))),
            "graphs": float(utils.counters["stats"]["unique_graphs"]),
            "frames": float(utils.counters["frames"]["ok"])}


class _Guarded:
    """The compiled call of one module, which turns into the module's eager call when compiling it fails."""

    def __init__(self, module: nn.Module, name: str, mode: str, stats: CompileStats,
                 warn: Callable[[str], None]) -> None:
        self.module, self.name, self.stats, self.warn = module, name, stats, warn
        options = {} if mode == "default" else {"mode": mode}
        self.compiled = torch.compile(module._call_impl, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001 - any compiler failure: the module runs eager (the eager call
            # raises again if the error is the module's own, not the compiler's)
            self.module._compiled_call_impl = None
            self.stats.modules.remove(self.name)
            why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.stats.eager[self.name] = f"{type(e).__name__}: {why}"[:200]
            self.warn(f"warning: --compile: {self.name} ({type(self.module).__name__}) could not be compiled "
                      f"({type(e).__name__}); it runs eager")
            torch._dynamo.reset()  # drop the half-built state of the failed frame
            return self.module._call_impl(*args, **kwargs)


def compile_module(module: nn.Module, name: str, mode: str, stats: CompileStats,
                   warn: Callable[[str], None]) -> None:
    """Compile `module` in place (its state_dict unchanged); on failure it warns once and runs eager."""
    if not hasattr(torch, "compile"):  # a torch before 2.0
        stats.eager[name] = f"torch {torch.__version__} has no torch.compile"
        warn(f"warning: --compile: {name} ({type(module).__name__}) not compiled: torch {torch.__version__} has no "
             "torch.compile; it runs eager")
        return
    module._compiled_call_impl = _Guarded(module, name, mode, stats, warn)
    stats.modules.append(name)


def configure_inductor(device: torch.device) -> None:
    """Inductor's settings for a compiled run on `device`. On a CPU, inductor's layout optimization is off: it turns
    convolutions channels-last, and oneDNN's channels-last convolutions on the small maps kdbench trains on were
    slower than the contiguous ones (ResNet-152 at 16 px, 1 thread, AMD EPYC: a compiled training step's
    forward and backward 560 ms with it, 417 ms without, eager 419-436 ms; benchmarks/compile_speed.py). On a GPU
    torch's default stays (channels-last is what tensor cores want)."""
    if device.type == "cpu" and hasattr(torch, "_inductor"):
        import torch._inductor.config as inductor_config

        if hasattr(inductor_config, "layout_optimization"):
            inductor_config.layout_optimization = False


def compile_distiller(distiller: Any, mode: str, warn: Callable[[str], None], device: torch.device) -> CompileStats:
    """The student, the teacher and the method's other trained modules compiled (see the module docstring), with
    inductor set for `device` (:func:`configure_inductor`)."""
    configure_inductor(device)
    stats = CompileStats(mode=check_compile_mode(mode))
    stats.begin()
    compile_module(distiller.student, "student", mode, stats, warn)
    if distiller.teacher is not None:
        compile_module(distiller.teacher, "teacher", mode, stats, warn)
    for name, child in distiller.named_children():
        if name != "student" and any(p.requires_grad for p in child.parameters()):
            compile_module(child, name, mode, stats, warn)
    return stats
