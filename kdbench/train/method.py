"""The method contract: a registry of distillation methods and the :class:`Distiller` base class.

A method is one file in `methods/`, registered by decorator::

    @dataclass(frozen=True)
    class KDParams:
        temperature: float = 4.0
        w_ce: float = 0.1
        w_kd: float = 0.9

    @register_method("kd", paper="Hinton et al. 2015 ...", params=KDParams())
    class KD(Distiller):
        def forward_train(self, batch):
            ...
            return student_logits, {"ce": self.params.w_ce * ce, "kd": self.params.w_kd * kd}

The engine sums the returned losses, logs each by name, and owns the optimizer, the backward pass, the AMP
scaler and the results store; a method never touches them. What a method needs from the engine it *declares*
as class attributes (`needs_teacher`, `default_student`), and what it needs to size itself comes in the
:class:`MethodContext` (training-set size and labels, classes, input shape).
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.registry import Registry
from kdbench.models.features import Features, FeatureTap
from kdbench.train.teacher_outputs import TeacherOutputs

if TYPE_CHECKING:
    from kdbench.train.optim import ParamGroup

ENTRY_POINT_GROUP = "kdbench.methods"
# The package of the built-in methods (the repository's methods/ folder, installed as kdbench.methods).
BUILTIN_METHODS = "kdbench.methods"


@dataclass
class Batch:
    images: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor  # position of each sample in the training split


@dataclass(frozen=True)
class MethodContext:
    num_classes: int
    in_chans: int
    image_size: int
    num_train: int
    train_targets: torch.Tensor  # (num_train,) labels, for class-aware sampling (CRD negatives)
    epochs: int
    seed: int
    # The recipe's label smoothing, applied by :meth:`Distiller.cross_entropy` to every method's CE-on-labels term.
    label_smoothing: float = 0.0


class Distiller(nn.Module):
    """Holds the student, the frozen teacher (or None) and any extra trainable modules of a method.

    Subclasses implement :meth:`forward_train`. The teacher is put in eval mode, its parameters frozen, and kept
    in eval mode whatever `train()` is called with. Every other parameter of the distiller is trainable and
    given to the optimizer by the engine (student + regressors / embedding heads / ...).

    What changes while training must be in the state dict (parameters, buffers: CRD's memory banks; or torch's
    `get_extra_state`), or be a function of the epoch set by :meth:`on_epoch_start` (FitNet's stage): a checkpoint,
    one taken inside an epoch too (kdbench.train.checkpoint), holds the state dict only.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    default_student: ClassVar[str] = "resnet18"
    # What the teacher-output cache holds for the method (`kdbench methods`): the outputs it takes through
    # teacher_logits / teacher_features. Features are cached when the run's entries fit $KDBENCH_CACHE_GB.
    teacher_outputs: ClassVar[str] = "logits"
    # The method's own modules that form parameter groups of their own (group name → attribute path, e.g.
    # {"regressor": "regressor"}): `--set group.NAME.lr_scale=` / `.weight_decay=` reach them (kdbench.train.optim).
    param_group_modules: ClassVar[dict[str, str]] = {}

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: Any, ctx: MethodContext) -> None:
        super().__init__()
        self.student = student
        self.params = params
        self.ctx = ctx
        if teacher is not None:
            teacher.eval()
            teacher.requires_grad_(False)
        # Stored outside the module tree: the teacher is not trained, not checkpointed with the student, and
        # not moved by DDP; `to()` below moves it along.
        self._teacher = [teacher] if teacher is not None else []

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def _apply(self, fn: Callable, recurse: bool = True) -> Distiller:  # .to(), .cuda(), .half() ...
        super()._apply(fn, recurse)
        if self.teacher is not None:
            self.teacher._apply(fn, recurse)
        return self

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the student's logits and a dict of *weighted* losses for one training batch."""
        raise NotImplementedError

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation: the student's logits. The evaluator judges every method through this one call."""
        return self.student(images)

    def on_epoch_start(self, epoch: int) -> None:
        """Called by the engine before each epoch (1-based), e.g. for a two-stage schedule."""

    def describe(self) -> dict[str, Any]:
        """Facts about the method's own state worth keeping in the run record (e.g. a memory bank's size)."""
        return {}

    @classmethod
    def student_options(cls, params: Any, student: str) -> dict[str, Any]:
        """Keyword options the method passes to its student's builder (e.g. CNN2GNN's graph settings for the
        GNN student). Explicit `--set student.KEY=VALUE` options win over these."""
        return {}

    @classmethod
    def transductive(cls, params: Any, student: str, student_params: dict[str, Any]) -> bool:
        """Whether this run's student predicts a test image from the other test images of its evaluation batch
        (a graph over the batch): its results are then marked transductive in every table. Default: ask the
        student's architecture, built with the options this method passes it plus the explicit `student.*`."""
        from kdbench.models.zoo import is_transductive_model

        return is_transductive_model(student, {**cls.student_options(params, student), **student_params})

    @classmethod
    def resolve_params(cls, params: Any, *, teacher: str | None, student: str, epochs: int) -> Any:
        """The hyperparameters this pair runs with, fixed when the run's config is resolved (so they are in its
        config and run id): e.g. DKD's published per-pair β, or an epoch count of the method's own (DKD's
        warm-up) rescaled to the run's `epochs` as the recipe's milestones are (kdbench.spec.recipe.rescale_epochs).
        Explicit `--set` values arrive already applied; a method must keep them. Default: `params` unchanged."""
        return params

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        return (p for p in self.parameters() if p.requires_grad)

    def param_groups(self) -> list[ParamGroup]:
        """The trainable parameters as named groups, each with the method's own lr scale / weight decay (default:
        the recipe's). Default: one group per entry of `param_group_modules`, then "main" with the rest (the
        student). The engine turns them into optimizer groups (kdbench.train.optim); a method never builds one."""
        from kdbench.train.optim import MAIN_GROUP, ParamGroup

        claimed: set[int] = set()
        groups = []
        for name, path in self.param_group_modules.items():
            try:
                module = self.get_submodule(path)
            except AttributeError:  # e.g. CNN2GNN's graph learner with a student that has none: an empty group
                module = nn.Module()
            params = [p for p in module.parameters() if p.requires_grad and id(p) not in claimed]
            claimed.update(id(p) for p in params)
            groups.append(ParamGroup(name, params))
        rest = [p for p in self.trainable_parameters() if id(p) not in claimed]
        return [ParamGroup(MAIN_GROUP, rest), *groups]

    def cross_entropy(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of `logits` against the hard `labels`, with the recipe's label smoothing ε:
        CE = −Σ_c q_c log softmax(z)_c, q = (1 − ε)·onehot(y) + ε/C. Every method's CE-on-labels term goes
        through here, so `recipe.label_smoothing` means the same for all of them; soft-target (KD) terms do not."""
        return F.cross_entropy(logits, labels, label_smoothing=self.ctx.label_smoothing)

    # Set by the runner: where the teacher's outputs come from when not recomputed (the teacher-output cache; the
    # engine calls its epoch hooks). Methods never touch it, they ask the two helpers below.
    teacher_cache: TeacherOutputs | None = None

    @torch.no_grad()
    def teacher_logits(self, images: torch.Tensor | Batch) -> torch.Tensor:
        """The teacher's logits for a batch; given the :class:`Batch` (not its images) they may come from the
        teacher-output cache (bit-identical to recomputing them)."""
        assert self.teacher is not None
        if isinstance(images, Batch):
            return self.teacher_features(images).logits
        return self.teacher(images)

    @torch.no_grad()
    def teacher_features(self, batch: Batch, tap: FeatureTap | None = None) -> Features:
        """The teacher's :class:`~kdbench.models.features.Features` for `batch` as `tap` (a FeatureTap on the
        teacher; None: logits only) takes them, from the teacher-output cache when it holds them."""
        assert self.teacher is not None
        if self.teacher_cache is not None:
            return self.teacher_cache.features(self.teacher, tap, batch.images, batch.index)
        return tap(batch.images) if tap is not None else Features(self.teacher(batch.images), {}, None)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    cls: type[Distiller]
    paper: str
    params: Any  # default hyperparameters: a frozen dataclass instance

    @property
    def needs_teacher(self) -> bool:
        return self.cls.needs_teacher

    @property
    def default_student(self) -> str:
        return self.cls.default_student

    def defaults(self) -> dict[str, Any]:
        return dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else {}


def _load_methods() -> None:
    """Import every module of kdbench.methods (built-ins) and every `kdbench.methods` entry point (plugins).

    Built-ins are found as plugins are, by name at run time: the methods layer sits above this one (a method
    imports the Distiller), so this layer never imports it (tests/test_layers.py).

    A plugin that fails to import (a missing dependency, a syntax error, an exception at import) is named once,
    with its error, and the other methods work: one broken package installed beside kdbench broke `kdbench
    methods`, every leaderboard and every run, `--method ce` included (issue #34). Asking for it is the error."""
    from importlib.metadata import entry_points

    methods = importlib.import_module(BUILTIN_METHODS)

    for info in pkgutil.iter_modules(methods.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{methods.__name__}.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # whatever a third party's import raises (Ctrl-C still stops it)
            where = f" of {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
            METHODS.mark_unavailable(ep.name, f"plugin entry point '{ep.name} = {ep.value}'{where} (group "
                                     f"{ENTRY_POINT_GROUP}) failed to import: {type(e).__name__}: {_one_line(e)}")


def _one_line(error: BaseException) -> str:
    """An import error's message on one line (a SyntaxError's says its file and line; others may span lines)."""
    if isinstance(error, SyntaxError):
        return f"{error.msg} ({error.filename}, line {error.lineno})"
    return " ".join(str(error).split())


METHODS: Registry[MethodSpec] = Registry("method", loader=_load_methods)


@dataclass(frozen=True)
class _NoParams:
    pass


def register_method(name: str, *, paper: str, params: Any = None) -> Callable[[type[Distiller]], type[Distiller]]:
    """Register a Distiller subclass under `name` with its paper and default hyperparameters.

    The same class may be registered twice under different names with different defaults (a named variant,
    e.g. `crd+kd`).
    """

    def decorator(cls: type[Distiller]) -> type[Distiller]:
        if not (isinstance(cls, type) and issubclass(cls, Distiller)):
            raise TypeError(f"@register_method('{name}') expects a Distiller subclass, got {cls!r}")
        # The class's own attributes only: a subclass of a registered method (CNN2GNN reuses KD's loss) must not
        # inherit its parent's name (which is also its `--set` scope) or paper. A class registered twice (a
        # named variant such as crd+kd) keeps its first name.
        if "name" not in cls.__dict__:
            cls.name = name
        if "paper" not in cls.__dict__:
            cls.paper = paper
        METHODS.add(name, MethodSpec(name, cls, paper, params if params is not None else _NoParams()))
        return cls

    return decorator


def get_method(name: str) -> MethodSpec:
    return METHODS.get(name)


def list_methods() -> list[str]:
    return METHODS.names()


def method_params(config: Any) -> Any:
    """The method's hyperparameter dataclass for a run config (kdbench.spec.config.RunConfig), rebuilt from its
    resolved `method_params`."""
    spec = get_method(config.method)
    return spec.params.__class__(**config.method_params) if config.method_params else spec.params
