"""`fitnet`: hints for thin deep nets (Romero, Ballas, Kahou, Chassang, Gatta, Bengio, ICLR 2015, "FitNets: Hints
for Thin Deep Nets", arXiv:1412.6550).

A regressor r maps the student's *guided* layer to the shape of the teacher's *hint* layer:

    one stage (default, as RepDistiller/mdistiller/torchdistill, so numbers compare with the CRD tables):
        L = w_ce · CE(z_s, y) + w_feat · MSE(r(F_s), F_t)
    two stages (`stages=2`, the paper's schedule):
        epochs 1 … hint_epochs:  L = w_feat · MSE(r(F_s), F_t)                      (hint pre-training)
        later epochs:            L = w_ce · CE(z_s, y) + w_kd · T² · KL(p_t^T ‖ p_s^T)   (KD)

Hint epochs and `--epochs`: the default hint phase is 30 epochs of a 240-epoch schedule (RepDistiller's
`init_epochs` beside its 240 CIFAR-100 epochs); a run of other length gets it rescaled by the rule the
recipe's milestones follow (:func:`kdbench.spec.recipe.rescale_epochs`: 30 of 240 → 5 of 40, 1 of 10), resolved into
the run config (`fitnet.hint_epochs`, so the run id follows) when `stages=2`. An explicit
`--set fitnet.hint_epochs=N` is taken as stated. With one stage the setting is unused and stays None.

Layers are indices into timm's `feature_info` (for a ResNet 2 = `layer2`, RepDistiller's `hint_layer=2`), read
through kdbench.models.taps.IntermediateTap (every family's stages as N × C × H × W maps). By default each model's
layer is RepDistiller's 2 where it has a ResNet's stage count (4: a CIFAR ResNet's stem + 3 stages; 5: an
ImageNet ResNet's stem + 4) and the stage at the same relative depth elsewhere (a 12-block ViT: block 6; a 2-stage
model: stage 0), so the CNN pairs keep RepDistiller's layers and a ViT or Mixer gets a hint from its middle. The
paper annealed its KD weight in stage 2; here it is fixed (w_kd = 1, T = 4, the CRD+KD values). The stage is
a function of the epoch alone (`on_epoch_start`), so a resumed run takes the same path; the optimizer is the
engine's and is never touched: parameters without a gradient in a stage are simply not updated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.methods._stage_maps import resnet_stage
from kdbench.methods.kd import kd_loss
from kdbench.models.features import num_stages
from kdbench.models.taps import IntermediateTap
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def fitnet_loss(regressed_student_map: torch.Tensor, teacher_map: torch.Tensor) -> torch.Tensor:
    """mean over all elements of (r(F_s) − F_t)²  — the FitNet hint loss (Romero et al. 2015), unweighted.

    The paper writes ½‖·‖²; the reference codebases (and the w_feat = 100 default) use the mean squared error.
    Computed in float32.
    """
    return F.mse_loss(regressed_student_map.float(), teacher_map.float())


class HintRegressor(nn.Module):
    """Maps a (C_s, H_s, W_s) student map to a (C_t, H_t, W_t) teacher map, as RepDistiller's ConvReg:

    - student 2× the teacher's size: 3×3 conv, stride 2;
    - student half the teacher's size: 4×4 transposed conv, stride 2;
    - student between 1× and 2× the teacher's size: a conv whose kernel (1 + H_s − H_t, 1 + W_s − W_t) absorbs
      the difference (1×1 when the sizes match);
    - any other ratio (RepDistiller raises; a kernel-absorbing conv would be huge): adaptive average pooling to
      the teacher's size, then a 1×1 conv;

    then BatchNorm and, as in the references, ReLU (`relu=False` for hint layers that are not post-ReLU).
    """

    def __init__(self, s_shape: tuple[int, int, int], t_shape: tuple[int, int, int], relu: bool = True) -> None:
        super().__init__()
        (s_c, s_h, s_w), (t_c, t_h, t_w) = s_shape, t_shape
        self.pool: nn.Module = nn.Identity()
        if (s_h, s_w) == (2 * t_h, 2 * t_w):
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif (2 * s_h, 2 * s_w) == (t_h, t_w):
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        elif t_h <= s_h < 2 * t_h and t_w <= s_w < 2 * t_w:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        else:
            self.pool = nn.AdaptiveAvgPool2d((t_h, t_w))
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=1)
        self.bn = nn.BatchNorm2d(t_c)
        self.relu = nn.ReLU() if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(self.pool(x))))


@dataclass(frozen=True)
class FitNetParams:
    # Teacher's hint layer (feature_info index); None: RepDistiller's hint_layer=2 (a ResNet's layer2) on a model
    # with a ResNet's stage count, else the stage at layer2's relative depth (methods/_stage_maps.resnet_stage).
    hint_stage: int | None = None
    # Student's guided layer; None: the same index as an explicit hint_stage, else chosen as hint_stage's default.
    guided_stage: int | None = None
    w_ce: float = 1.0
    w_feat: float = 100.0
    regressor_relu: bool = True
    stages: int = 1  # 1: hint loss added to CE from epoch 1 (the references); 2: the paper's two stages
    # Two-stage only: epochs of hint pre-training; None: RepDistiller's init_epochs, 30 of 240 epochs, rescaled to
    # the run's epochs (resolve_params; :func:`resolved_hint_epochs`).
    hint_epochs: int | None = None
    w_kd: float = 1.0  # two-stage only, stage 2
    temperature: float = 4.0  # two-stage only, stage 2
    logit_std: bool = False  # standardize both models' logits in the KD term (Sun et al. 2024)

    def __post_init__(self) -> None:
        check_range("fitnet.w_ce", self.w_ce, 0.0, None)
        check_range("fitnet.w_feat", self.w_feat, 0.0, None)
        check_range("fitnet.stages", self.stages, 1, 2)
        if self.hint_epochs is not None:
            check_range("fitnet.hint_epochs", self.hint_epochs, 1, None)
        check_range("fitnet.w_kd", self.w_kd, 0.0, None)
        check_range("fitnet.temperature", self.temperature, 0.0, 100.0, low_open=True)



# RepDistiller's hint_layer: a ResNet's layer2 (feature_info index 2).
REFERENCE_HINT_STAGE = 2


def fitnet_stages(params: FitNetParams, student: nn.Module, teacher: nn.Module) -> tuple[int, int]:
    """(guided student stage, hint teacher stage) as the run uses them: the explicit settings (the student's
    guided stage defaulting to the hint's index), else RepDistiller's stage 2 where a model has a ResNet's stage
    count and the stage at its relative depth elsewhere (a ViT's blocks, a 2-stage Swin), each model on its own."""
    if params.hint_stage is not None:
        hint = params.hint_stage
        guided = hint if params.guided_stage is None else params.guided_stage
        return guided, hint
    hint = resnet_stage(num_stages(teacher), REFERENCE_HINT_STAGE)
    guided = resnet_stage(num_stages(student), REFERENCE_HINT_STAGE) if params.guided_stage is None \
        else params.guided_stage
    return guided, hint


# RepDistiller's init_epochs and the length of the CIFAR-100 schedule it sits beside.
PUBLISHED_HINT_EPOCHS, PUBLISHED_EPOCHS = 30, 240


def resolved_hint_epochs(params: FitNetParams, epochs: int) -> int:
    """The hint phase of a two-stage run of `epochs` epochs: `fitnet.hint_epochs` when set, else the published
    30 of 240 epochs rescaled to `epochs` (:func:`kdbench.spec.recipe.rescale_epochs`; at most epochs − 1, so a KD
    stage follows; 0 for a 1-epoch run, which has no room for two stages)."""
    if params.hint_epochs is not None:
        return params.hint_epochs
    return rescale_epochs(PUBLISHED_HINT_EPOCHS, PUBLISHED_EPOCHS, epochs)


def _check_stage(key: str, stage: int, model: nn.Module, role: str) -> None:
    n = num_stages(model)
    if not -n <= stage < n:
        raise UserError(f"{key}={stage} is out of range for the {role} {type(model).__name__}; allowed: "
                        f"[{-n}, {n - 1}] (timm feature_info indices)")


@register_method("fitnet", paper="Romero et al. 2015, FitNets: Hints for Thin Deep Nets (ICLR)", params=FitNetParams())
class FitNet(Distiller):
    teacher_outputs = "logits + hint stage (features: cached when they fit the cap)"
    param_group_modules = {"regressor": "regressor"}  # `--set group.regressor.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: FitNetParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        p = params
        self.guided_stage, self.hint_stage = fitnet_stages(p, student, teacher)
        _check_stage("fitnet.hint_stage", self.hint_stage, teacher, "teacher")
        _check_stage("fitnet.guided_stage" if p.guided_stage is not None else "fitnet.hint_stage",
                     self.guided_stage, student, "student")
        self.hint_epochs = resolved_hint_epochs(p, ctx.epochs) if p.stages == 2 else 0
        if p.stages == 2 and ctx.epochs < 2:
            raise UserError(f"fitnet.stages=2 needs a hint stage and a KD stage: at least 2 epochs, got {ctx.epochs}")
        if p.stages == 2 and self.hint_epochs >= ctx.epochs:
            raise UserError(f"fitnet.hint_epochs={self.hint_epochs} leaves no KD stage in {ctx.epochs} epochs; "
                            f"allowed with fitnet.stages=2: [1, {ctx.epochs - 1}]")
        self._s_tap = IntermediateTap(student, stages=[self.guided_stage])
        self._t_tap = IntermediateTap(teacher, stages=[self.hint_stage])
        example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
        s_map = self._s_tap.probe(example).stages[self.guided_stage]
        t_map = self._t_tap.probe(example).stages[self.hint_stage]
        for role, fmap in (("student", s_map), ("teacher", t_map)):
            if fmap.dim() != 4:  # e.g. the GNN student's hidden layer is (B, D): there is no map to regress
                raise UserError(f"fitnet regresses spatial feature maps, but the {role}'s stage output has shape "
                                f"{tuple(fmap.shape)}; use kd, rkd or crd for this pair")
        self.regressor = HintRegressor(tuple(s_map.shape[1:]), tuple(t_map.shape[1:]), relu=p.regressor_relu)
        self._hint_phase = False

    def on_epoch_start(self, epoch: int) -> None:
        self._hint_phase = self.params.stages == 2 and epoch <= self.hint_epochs

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        if p.stages == 2 and not self._hint_phase:  # the paper's second stage: KD, the hint is done
            return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                              "kd": p.w_kd * kd_loss(*standardized_pair(s.logits, t.logits, p.logit_std),
                                                      p.temperature)}
        hint = p.w_feat * fitnet_loss(self.regressor(s.stages[self.guided_stage]), t.stages[self.hint_stage])
        if self._hint_phase:
            return s.logits, {"hint": hint}
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "hint": hint}

    @classmethod
    def resolve_params(cls, params: FitNetParams, *, teacher: str | None, student: str,
                       epochs: int) -> FitNetParams:
        """Two stages: `hint_epochs` rescaled to the run's `epochs` into the config (an explicit value is kept)."""
        if params.stages != 2 or params.hint_epochs is not None or epochs < 2:
            return params  # a 1-epoch two-stage run is refused when the method is built, naming the cause
        return replace(params, hint_epochs=resolved_hint_epochs(params, epochs))

    def describe(self) -> dict[str, object]:
        return {"stage_pair": [self.guided_stage, self.hint_stage],
                "regressor": type(self.regressor.conv).__name__,
                "regressor_kernel": list(getattr(self.regressor.conv, "kernel_size", ())),
                "regressor_pools": not isinstance(self.regressor.pool, nn.Identity)}
