"""kdbench: a benchmark harness for knowledge distillation.

The public face is small (as in timm): run a method, discover methods, get a teacher, load results.
Everything else lives in modules named for what they hold.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

__all__ = ["create_teacher", "get_method", "leaderboard", "list_methods", "load_runs", "run"]



def __getattr__(name: str) -> Any:
    # Lazy: `import kdbench` stays cheap (no torch/timm import) until a function is used.
    if name == "run":
        from kdbench.execute.api import run

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


# ---------------------------------------------------------------------------------------------------------------
# `timm.create_model("cifar_…")` after `import kdbench`, without importing timm in `import kdbench`.
#
# `import kdbench` is deliberately cheap (no torch/timm: a tenth of a second against seconds), and the CLI depends
# on that. The CRD codebase's `cifar_` architectures (`cifar_resnet8x4`, …) live in timm's registry, which exists
# only once timm is imported, so they register at the first moment both are there:
# - timm imported before kdbench → registered during `import kdbench`;
# - timm imported later → a finder on `sys.meta_path` sees the import of `timm`, lets the normal loader run it,
#   then imports `kdbench.models.cifar` (which registers), and removes itself.
# Any kdbench code that builds models imports `kdbench.models`, which registers them too. This lives in the
# package root (the top layer) because importing any module of kdbench.models would import timm.


def _register() -> None:
    try:
        import kdbench.models.cifar  # noqa: F401
    except Exception as e:  # never break the user's `import timm` over a convenience
        warnings.warn(f"kdbench could not register its cifar_ models in timm: {e}", stacklevel=2)


class _AfterTimmImport(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname != "timm":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("timm")  # the finders after this one locate the real package
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_timm = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run_timm(module)
            _register()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  (this spec's loader only)
        return spec


def register_cifar_models_with_timm() -> None:
    if "timm" in sys.modules:
        _register()
    elif not any(isinstance(f, _AfterTimmImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterTimmImport())


register_cifar_models_with_timm()
