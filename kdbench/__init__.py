"""kdbench: a benchmark harness for knowledge distillation.

The public face is small (as in timm): run a method, discover methods, get a teacher, load results.
Everything else lives in modules named for what they hold.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["create_teacher", "get_method", "leaderboard", "list_methods", "load_runs", "run"]

# The CRD codebase's CIFAR architectures (`cifar_resnet8x4`, …) join timm's registry as soon as timm is
# imported, without importing it here (see _timm_hook).
from kdbench.models.timm_hook import register_cifar_models_with_timm  # noqa: E402

register_cifar_models_with_timm()


def __getattr__(name: str) -> Any:
    # Lazy: `import kdbench` stays cheap (no torch/timm import) until a function is used.
    if name == "run":
        from kdbench.execute.runner import run

        return run
    if name in ("list_methods", "get_method"):
        from kdbench.train import method

        return getattr(method, name)
    if name == "create_teacher":
        from kdbench.execute.create_teacher import create_teacher

        return create_teacher
    if name == "load_runs":
        from kdbench.report.results import load_runs

        return load_runs
    if name == "leaderboard":
        from kdbench.report.leaderboard import leaderboard

        return leaderboard
    raise AttributeError(f"module 'kdbench' has no attribute '{name}'")
