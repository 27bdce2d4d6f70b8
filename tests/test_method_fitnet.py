"""FitNet: the hint loss is the mean squared error, the regressor maps any student map onto the teacher's, and
`stages=2` switches from hint pre-training to KD by epoch alone."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.methods.fitnet import FitNetParams, HintRegressor, fitnet_loss
from kdbench.methods.kd import kd_loss
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method


def test_fitnet_loss_is_the_mean_of_squared_differences():
    s = [[[[1.0, 2.0], [0.0, -1.0]]], [[[3.0, 0.5], [2.0, 2.0]]]]  # (2, 1, 2, 2)
    t = [[[[0.0, 2.0], [1.0, 1.0]]], [[[1.0, 0.5], [-1.0, 0.0]]]]
    flat_s = [v for b in s for c in b for row in c for v in row]
    flat_t = [v for b in t for c in b for row in c for v in row]
    by_hand = sum((a - b) ** 2 for a, b in zip(flat_s, flat_t, strict=True)) / len(flat_s)
    assert fitnet_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(by_hand)  # 19/8


def test_fitnet_loss_is_zero_when_the_regressed_map_equals_the_teachers():
    t = torch.randn(3, 8, 4, 4)
    assert fitnet_loss(t.clone(), t).item() == 0.0
    assert fitnet_loss(t + 0.1, t).item() == pytest.approx(0.01, rel=1e-4)


@pytest.mark.parametrize(
    ("s_shape", "t_shape", "kind", "kernel"),
    [
        ((16, 8, 8), (32, 4, 4), nn.Conv2d, (3, 3)),  # student 2× the teacher's size: 3×3 stride-2 conv
        ((16, 4, 4), (32, 8, 8), nn.ConvTranspose2d, (4, 4)),  # half: 4×4 stride-2 transposed conv
        ((16, 4, 4), (32, 4, 4), nn.Conv2d, (1, 1)),  # same size: 1×1 conv
        ((16, 6, 5), (32, 4, 4), nn.Conv2d, (3, 2)),  # kernel absorbs the difference
        ((16, 16, 16), (32, 4, 4), nn.Conv2d, (1, 1)),  # 4×: pooled, then 1×1
        ((16, 3, 3), (32, 8, 8), nn.Conv2d, (1, 1)),  # other ratio below: pooled (up), then 1×1
    ],
)
def test_regressor_maps_any_student_map_to_the_teacher_shape(s_shape, t_shape, kind, kernel):
    reg = HintRegressor(s_shape, t_shape)
    assert type(reg.conv) is kind and tuple(reg.conv.kernel_size) == kernel
    out = reg(torch.randn(2, *s_shape))
    assert out.shape == (2, *t_shape)
    assert out.min() >= 0  # BN then ReLU, as the references
    assert isinstance(reg.bn, nn.BatchNorm2d)
    assert HintRegressor(s_shape, t_shape, relu=False)(torch.randn(2, *s_shape)).min() < 0


def _ctx(epochs: int = 3) -> MethodContext:
    return MethodContext(num_classes=10, in_chans=3, image_size=16, num_train=20, train_targets=torch.arange(20) % 10,
                         epochs=epochs, seed=0)


def _fitnet(params: FitNetParams, epochs: int = 3):
    torch.manual_seed(0)
    student = create_model("resnet18", num_classes=10, image_size=16)
    teacher = create_model("resnet18", num_classes=10, image_size=16)
    return get_method("fitnet").cls(student, teacher, params, _ctx(epochs))


def _batch() -> Batch:
    idx = torch.arange(4)
    return Batch(torch.randn(4, 3, 16, 16), idx % 10, idx)


def test_regressor_is_sized_by_probing_the_chosen_stages():
    # resnet18 at 16 px: stage 1 = 64@4×4, stage 2 = 128@2×2 → student twice the teacher's size.
    d = _fitnet(FitNetParams(hint_stage=2, guided_stage=1))
    assert type(d.regressor.conv) is nn.Conv2d and d.regressor.conv.stride == (2, 2)
    assert (d.regressor.conv.in_channels, d.regressor.conv.out_channels) == (64, 128)
    d = _fitnet(FitNetParams(hint_stage=1, guided_stage=2))
    assert type(d.regressor.conv) is nn.ConvTranspose2d


def test_one_stage_adds_the_weighted_hint_to_ce():
    d = _fitnet(FitNetParams(w_feat=100.0)).train()
    d.on_epoch_start(1)
    logits, losses = d.forward_train(_batch())
    assert set(losses) == {"ce", "hint"} and logits.shape == (4, 10)
    sum(losses.values()).backward()
    assert d.regressor.conv.weight.grad is not None and d.student.fc.weight.grad is not None


def test_two_stages_pretrain_the_hint_then_switch_to_kd():
    d = _fitnet(FitNetParams(stages=2, hint_epochs=2, w_kd=1.0, temperature=4.0)).train()
    batch = _batch()
    for epoch in (1, 2):
        d.on_epoch_start(epoch)
        logits, losses = d.forward_train(batch)
        assert set(losses) == {"hint"}
    losses["hint"].backward()
    # Hint pre-training trains the student up to its guided layer (and the regressor) only.
    assert d.student.layer2[0].conv1.weight.grad is not None and d.student.fc.weight.grad is None
    d.zero_grad()
    d.on_epoch_start(3)
    logits, losses = d.forward_train(batch)
    assert set(losses) == {"ce", "kd"}
    expected = kd_loss(logits, d.teacher_logits(batch.images), 4.0)
    assert losses["kd"].item() == pytest.approx(expected.item(), rel=1e-5)
    losses["kd"].backward()
    assert d.regressor.conv.weight.grad is None  # the regressor is done after stage 1


def test_two_stages_need_a_kd_stage_and_stages_must_exist():
    with pytest.raises(UserError, match=r"fitnet.hint_epochs=3 .*allowed with fitnet.stages=2: \[1, 2\]"):
        _fitnet(FitNetParams(stages=2, hint_epochs=3), epochs=3)
    with pytest.raises(UserError, match=r"fitnet.guided_stage=7 is out of range .*\[-5, 4\]"):
        _fitnet(FitNetParams(guided_stage=7))
    with pytest.raises(UserError, match=r"fitnet.stages=3 is out of range"):
        FitNetParams(stages=3)


def test_the_published_hint_epochs_are_rescaled_to_the_runs_epochs_in_two_stages_only():
    # RepDistiller's 30 of 240 epochs follow --epochs by the recipe's rule (kdbench.spec.recipe.rescale_epochs).
    def hint(epochs: int, *sets: str):
        config = resolve_config(RunOptions(method="fitnet", teacher="resnet18", epochs=epochs, sets=list(sets)))
        return config.method_params["hint_epochs"], config.run_id

    two = "fitnet.stages=2"
    assert [hint(e, two)[0] for e in (240, 40, 24, 10, 2)] == [30, 5, 3, 1, 1]
    assert hint(40, two, "fitnet.hint_epochs=30")[0] == 30  # an explicit value is taken as stated
    assert hint(40, two)[1] != hint(40, two, "fitnet.hint_epochs=30")[1]
    assert hint(40)[0] is None  # one stage: the setting is unused and stays unset
    d = _fitnet(FitNetParams(stages=2), epochs=40)  # unresolved defaults (no config): the same rule
    assert d.hint_epochs == 5
    d.on_epoch_start(5)
    assert set(d.forward_train(_batch())[1]) == {"hint"}
    d.on_epoch_start(6)
    assert set(d.forward_train(_batch())[1]) == {"ce", "kd"}
    with pytest.raises(UserError, match=r"fitnet.stages=2 needs a hint stage and a KD stage: at least 2 epochs"):
        _fitnet(FitNetParams(stages=2), epochs=1)


def test_every_hyperparameter_is_settable_from_the_command_line():
    opts = RunOptions(method="fitnet", teacher="resnet18", sets=[
        "fitnet.hint_stage=3", "fitnet.guided_stage=2", "fitnet.stages=2", "fitnet.hint_epochs=4",
        "fitnet.w_feat=50", "fitnet.regressor_relu=false"])
    params = resolve_config(opts).method_params
    assert params == {**params, "hint_stage": 3, "guided_stage": 2, "stages": 2, "hint_epochs": 4, "w_feat": 50.0,
                      "regressor_relu": False}
    defaults = get_method("fitnet").defaults()
    assert (defaults["hint_stage"], defaults["w_ce"], defaults["w_feat"], defaults["stages"]) == (None, 1.0, 100.0, 1)


def test_fitnet_refuses_a_student_without_spatial_maps_in_one_line():
    spec = get_method("fitnet")
    ctx = MethodContext(10, 3, 16, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    teacher = create_model("resnet18", num_classes=10, image_size=16)
    student = create_model("gnn2", num_classes=10, image_size=16)
    with pytest.raises(UserError, match="spatial feature maps"):
        spec.cls(student, teacher, FitNetParams(hint_stage=0), ctx)


# (student map H, W) → (teacher map H, W): which regressor the shapes choose, at the edges of each rule.
REGRESSOR_RULES = [
    ((8, 8), (4, 4), "stride-2 conv"),
    ((2, 2), (4, 4), "transposed conv"),
    ((4, 4), (4, 4), "valid conv 1x1"),  # equal sizes: the lower edge of the valid-conv rule
    ((7, 5), (4, 4), "valid conv 4x2"),  # just under twice the teacher's size
    ((8, 4), (4, 4), "pool"),  # twice in height only: not the stride rule, past the valid-conv rule
    ((4, 8), (4, 4), "pool"),
    ((3, 4), (4, 4), "pool"),  # smaller in one side only
    ((4, 3), (4, 4), "pool"),
    ((11, 11), (4, 4), "pool"),  # more than twice: pooled
]


@pytest.mark.parametrize(("s_hw", "t_hw", "rule"), REGRESSOR_RULES)
def test_the_regressor_follows_the_shape_rules_at_their_edges(s_hw, t_hw, rule) -> None:
    from kdbench.methods.fitnet import HintRegressor

    reg = HintRegressor((3, *s_hw), (5, *t_hw))
    assert reg(torch.randn(2, 3, *s_hw)).shape == (2, 5, *t_hw)
    pooled = not isinstance(reg.pool, nn.Identity)
    kind = ("pool" if pooled else "transposed conv" if isinstance(reg.conv, nn.ConvTranspose2d)
            else "stride-2 conv" if reg.conv.stride == (2, 2)
            else "valid conv {}x{}".format(*reg.conv.kernel_size))
    assert kind == rule


def test_hint_stage_indices_are_checked_against_the_models_stages() -> None:
    from kdbench.core.errors import UserError
    from kdbench.methods.fitnet import _check_stage
    from kdbench.models import create_model

    model = create_model("resnet18", num_classes=10, image_size=16)  # 5 feature_info stages
    for stage in (-5, 4):
        _check_stage("fitnet.hint_stage", stage, model, "teacher")
    for stage in (-6, 5):
        with pytest.raises(UserError, match=rf"fitnet.hint_stage={stage} is out of range"):
            _check_stage("fitnet.hint_stage", stage, model, "teacher")
