"""Training recipes: optimizer, learning-rate schedule, epochs, batch size and augmentation for one dataset.

A recipe is part of a run's identity (it goes into the run id and the teacher-zoo key, its name included), so two
recipes never share a leaderboard column silently. Every field can be overridden from the CLI; the overridden
recipe keeps its `name` but hashes differently.

A dataset's recipe states its published schedule for its own `epochs`; a run with other epochs gets the
milestones and warm-up rescaled to them (:meth:`Recipe.with_epochs`), and the rescaled values are what the run's
config holds and hashes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from kdbench.core.errors import UserError, check_range

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")


# Fields added after the first records, left out of a recipe's dict at these values (off), so that the run ids and
# zoo keys of every recipe without them stay what they were.
ADDED_AT_DEFAULT: dict[str, object] = {"dot_delta": 0.0}


def without_added_defaults(recipe: dict) -> dict:
    """A recipe's dict without the ADDED_AT_DEFAULT fields that hold their default."""
    return {k: v for k, v in recipe.items() if k not in ADDED_AT_DEFAULT or v != ADDED_AT_DEFAULT[k]}


def rescale_epochs(value: int, from_epochs: int, to_epochs: int) -> int:
    """An epoch count (a milestone, a warm-up, a method's warm-up or hint phase) stated for a schedule of
    `from_epochs`, moved to one of `to_epochs`: round(value · to / from) (halves round up), at least 1 when
    `value` is non-zero, at most to − 1 so that some epochs follow it; 0 stays 0, and a 1-epoch run gets 0.
    The one rule for every epoch setting that follows `--epochs` (:meth:`Recipe.with_epochs`, DKD's warm-up,
    FitNet's hint epochs)."""
    if not value or to_epochs <= 1:
        return 0
    return min(max(math.floor(value * to_epochs / from_epochs + 0.5), 1), to_epochs - 1)


@dataclass(frozen=True)
class Recipe:
    # A label (e.g. "crd-cifar100"): it changes no number of a run (tests/test_no_dead_settings.py), but it is in
    # the run id and the zoo key: it names the leaderboard column a run goes to, and a teacher recipe named
    # "imported" selects an imported teacher (kdbench.teachers.import_weights), so one record never carries two labels.
    name: str = field(metadata={"affects_results": False})
    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: tuple[int, ...] = ()  # for "multistep": epochs (1-based) after which lr *= gamma, in 1..epochs-1
    gamma: float = 0.1
    warmup_epochs: int = 0
    # Named augmentation pipeline understood by the dataset (e.g. "crop-pad2", "crop-pad4-flip", "none").
    augment: str = "none"
    eval_batch_size: int = 256
    label_smoothing: float = 0.0
    # Small-image CNN stem (3×3 stride-1 conv, no max-pool) as the CIFAR KD literature uses; timm's ImageNet
    # stem shrinks a 32 px input 4× at once. Applies to teacher and student CNNs built for this recipe.
    cifar_stem: bool = False
    # DOT (Zhao et al. ICCV 2023; kdbench.train.dot): Δ > 0 trains the `ce` term's gradient with momentum − Δ and the
    # distillation terms' with momentum + Δ (the paper's Δ: 0.075, mdistiller's configs/cifar100/dot/*.yaml).
    # 0 (off): plain SGD, and the field is left out of the recipe's dict (ADDED_AT_DEFAULT).
    dot_delta: float = 0.0

    def __post_init__(self) -> None:
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 1_000_000)
        check_range("eval_batch_size", self.eval_batch_size, 1, 1_000_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("gamma", self.gamma, 0.0, 1.0, low_open=True)
        check_range("warmup_epochs", self.warmup_epochs, 0, self.epochs)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        bad = [m for m in self.milestones if not 1 <= m <= self.epochs - 1]
        if bad or list(self.milestones) != sorted(set(self.milestones)):
            allowed = f"1..{self.epochs - 1}" if self.epochs > 1 else "none (a 1-epoch run has no milestone)"
            raise UserError(f"milestones={','.join(map(str, self.milestones))}: each must be an epoch after which "
                            f"the lr decays, strictly increasing, within this run's {self.epochs} epochs; "
                            f"allowed: {allowed}")
        if self.optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer '{self.optimizer}'. Valid: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise UserError(f"unknown schedule '{self.schedule}'. Valid: {', '.join(SCHEDULES)}")
        self._check_dot()

    def _check_dot(self) -> None:
        """DOT's Δ: both momenta β ± Δ within [0, 1], on SGD with momentum (what its reference implements)."""
        check_range("dot_delta", self.dot_delta, 0.0, 1.0)
        if not self.dot_delta:
            return
        if self.optimizer != "sgd" or self.momentum == 0:
            raise UserError(f"dot_delta={self.dot_delta:g}: DOT splits SGD's momentum; this recipe trains with "
                            f"optimizer={self.optimizer}, momentum={self.momentum:g}: use optimizer=sgd with "
                            "momentum > 0")
        check_range("dot_delta", self.dot_delta, 0.0, min(self.momentum, 1.0 - self.momentum))

    def replace(self, **overrides: object) -> Recipe:
        """A copy with the non-None overrides applied (None means "keep the recipe's value")."""
        kept = {k: v for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **kept) if kept else self

    def with_epochs(self, epochs: int | None) -> Recipe:
        """This recipe run for `epochs` epochs, its schedule rescaled by epochs / self.epochs (None: unchanged).

        Rule: each milestone m becomes round(m · epochs / self.epochs) (halves round up), clamped into
        1..epochs − 1; milestones that then coincide are merged, so they stay strictly increasing (a 1-epoch run
        keeps none). The warm-up w becomes round(w · epochs / self.epochs), at least 1 when the recipe warms up
        at all, and at most epochs − 1 (0 for a 1-epoch run), so that some epochs follow it. The CRD recipe's
        150/180/210 of 240 become 15/18/21 of 24.
        """
        if epochs is None or epochs == self.epochs:
            return self
        check_range("epochs", epochs, 1, 100_000)
        milestones = tuple(sorted({rescale_epochs(m, self.epochs, epochs) for m in self.milestones})) \
            if epochs > 1 else ()
        warmup = rescale_epochs(self.warmup_epochs, self.epochs, epochs)
        return dataclasses.replace(self, epochs=epochs, milestones=milestones, warmup_epochs=warmup)

    def to_dict(self) -> dict:
        """The fields, those of ADDED_AT_DEFAULT left out at their default (the dict the run id and zoo key hash)."""
        return without_added_defaults(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Recipe:
        d = dict(d)
        d["milestones"] = tuple(d.get("milestones", ()))
        return cls(**d)


def crd_schedule(name: str, *, augment: str, cifar_stem: bool) -> Recipe:
    """The CRD paper's CIFAR-100 schedule (RepDistiller): 240 epochs, SGD momentum 0.9, lr 0.05 × 0.1 after
    epochs 150/180/210, weight decay 5e-4, batch 64. Datasets that follow its shape differ only in name,
    augmentation and stem."""
    return Recipe(
        name=name, epochs=240, batch_size=64, lr=0.05, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
        schedule="multistep", milestones=(150, 180, 210), gamma=0.1, augment=augment, eval_batch_size=256,
        cifar_stem=cifar_stem,
    )


# ImageNet-1k (ILSVRC2012) recipes, named after the code they come from; both train with RandomResizedCrop(224)
# + flip and evaluate at resize 256 → centre crop 224 (the `imagenet` dataset's eval transform).
# mdistiller (megvii-research/mdistiller, configs/imagenet/r34_r18/kd.yaml, SOLVER): SGD 0.9, batch 512, lr 0.2
# ×0.1 after epochs 30/60/90 of 100, weight decay 1e-4 — the DKD / ReviewKD ImageNet tables' schedule.
MDISTILLER_IMAGENET = Recipe(
    name="mdistiller-imagenet", epochs=100, batch_size=512, lr=0.2, optimizer="sgd", momentum=0.9,
    weight_decay=1e-4, schedule="multistep", milestones=(30, 60, 90), gamma=0.1, augment="rrc-flip",
    eval_batch_size=256,
)
# torchdistill (yoshitomo-matsubara/torchdistill, configs/official/ilsvrc2012/yoshitomo-matsubara/rrpr2020/
# kd-resnet18_from_resnet34.yaml, train:): SGD 0.9, batch 256 (its train_data_loader), lr 0.1 ×0.1 after epochs
# 30/60/90 (MultiStepLR) of 100, weight decay 1e-4; its README's numbers are from 1 GPU or from 3 with -adjust_lr.
TORCHDISTILL_IMAGENET = Recipe(
    name="torchdistill-imagenet", epochs=100, batch_size=256, lr=0.1, optimizer="sgd", momentum=0.9,
    weight_decay=1e-4, schedule="multistep", milestones=(30, 60, 90), gamma=0.1, augment="rrc-flip",
    eval_batch_size=256,
)
IMAGENET_RECIPES = {r.name: r for r in (MDISTILLER_IMAGENET, TORCHDISTILL_IMAGENET)}
