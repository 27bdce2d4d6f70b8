"""The pre-stage of RepDistiller's two-stage methods (AB, FT, FSP): a number of first epochs in which only the
method's initialisation loss trains, before the ordinary training stage.

RepDistiller (train_student.py `--init_epochs 30`, helper/pretrain.py `init`) runs the pre-stage *before* its 240
epochs, with an optimizer of its own (SGD over the init modules only, at a constant lr) and the student in eval
mode. kdbench's engine owns one optimizer and one lr schedule for the whole run, so here the pre-stage is the first
`init_epochs` of the run's `--epochs`, under the run's schedule; a module without a gradient in a stage is simply
not updated (grads are set to None between steps, and SGD skips such parameters, weight decay and momentum
included). Its length is the reference's 30 of 240 epochs rescaled to the run's `--epochs`
(:func:`kdbench.spec.recipe.rescale_epochs`, the rule fitnet's hint stage and the recipe's milestones follow),
resolved into the run config (`METHOD.init_epochs`, so the run id follows); an explicit value is kept.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from kdbench.core.errors import UserError
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Distiller, MethodContext

# RepDistiller's train_student.py: --init_epochs 30 beside --epochs 240 (its CIFAR-100 schedule).
PUBLISHED_INIT_EPOCHS, PUBLISHED_EPOCHS = 30, 240


def resolved_init_epochs(init_epochs: int | None, epochs: int) -> int:
    """`init_epochs` when set, else the published 30 of 240 epochs rescaled to `epochs` (0 for a 1-epoch run)."""
    if init_epochs is not None:
        return init_epochs
    return rescale_epochs(PUBLISHED_INIT_EPOCHS, PUBLISHED_EPOCHS, epochs)


def check_pre_stage(method: str, init_epochs: int, epochs: int) -> None:
    """Refuse a run without both stages (one line naming the cause and the allowed range)."""
    if epochs < 2:  # with no pre-stage the run would be plain CE under the method's name
        raise UserError(f"{method} needs a pre-stage and a training stage: at least 2 epochs, got {epochs}")
    if not 1 <= init_epochs < epochs:
        raise UserError(f"{method}.init_epochs={init_epochs} leaves no training stage in {epochs} epochs; "
                        f"allowed: [1, {epochs - 1}]")


class PreStageDistiller(Distiller):
    """A Distiller whose params have `init_epochs` (int | None): epochs 1 … init_epochs are the pre-stage.

    Subclasses call :meth:`setup_pre_stage` in __init__ and read `self.in_pre_stage` in forward_train; the stage
    is a function of the epoch alone (on_epoch_start), so a resumed run takes the same path."""

    pre_stage_trains: str = ""  # what trains in the pre-stage, for the record

    def setup_pre_stage(self, ctx: MethodContext) -> None:
        self.init_epochs = resolved_init_epochs(self.params.init_epochs, ctx.epochs)
        check_pre_stage(self.name, self.init_epochs, ctx.epochs)
        self.in_pre_stage = False

    def on_epoch_start(self, epoch: int) -> None:
        self.in_pre_stage = epoch <= self.init_epochs

    @classmethod
    def resolve_params(cls, params: Any, *, teacher: str | None, student: str, epochs: int) -> Any:
        """`init_epochs` rescaled to the run's `epochs` into the config (an explicit value is kept); a run with no
        room for both stages is refused here, before a teacher is trained for it."""
        init_epochs = resolved_init_epochs(params.init_epochs, epochs)
        check_pre_stage(cls.name, init_epochs, epochs)
        return params if params.init_epochs is not None else replace(params, init_epochs=init_epochs)

    def describe(self) -> dict[str, Any]:
        return {"pre_stage_epochs": [1, self.init_epochs], "pre_stage_trains": self.pre_stage_trains}
