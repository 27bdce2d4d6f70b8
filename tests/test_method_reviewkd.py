"""ReviewKD: HCL and the attention-based fusion against mdistiller's own code (numbers in a fixture), the formula's
properties, the ABF chain's shapes and pairing, the warm-up and per-pair weight resolved into the config, one run
through the CLI on digits, and the one-line refusals of bad settings and of a teacher without pre-ReLU maps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from method_cli import assert_refused_in_one_line, run_epoch_on_digits

from kdbench.core.errors import UserError
from kdbench.methods.reviewkd import ABF, ReviewKDParams, hcl_loss
from kdbench.models import create_model
from kdbench.report.published import load_published
from kdbench.train.method import Batch, MethodContext, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_losses" / "reviewkd.json").read_text())


def tensor(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_hcl_matches_mdistiller():
    case = FIXTURE["hcl_loss"]
    got = hcl_loss([tensor(s) for s in case["student"]], [tensor(t) for t in case["teacher"]])
    assert got.item() == pytest.approx(case["loss"], rel=1e-5)


@pytest.mark.parametrize("case", FIXTURE["abf"], ids=lambda c: "fuse" if c["fuse"] else "deepest")
def test_attention_based_fusion_matches_mdistiller(case):
    abf = ABF(case["in_channel"], case["mid_channel"], case["out_channel"], case["fuse"]).train()
    missing, unexpected = abf.load_state_dict({k: tensor(v) for k, v in case["parameters"].items()}, strict=False)
    assert not unexpected and all("running" in k or "num_batches" in k for k in missing)  # the same parameters
    y = tensor(case["y"]) if case["y"] is not None else None
    out, residual = abf(tensor(case["x"]), y, (case["out_shape"], case["out_shape"]))
    torch.testing.assert_close(out, tensor(case["out"]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(residual, tensor(case["residual"]), rtol=1e-4, atol=1e-5)


def test_hcl_is_zero_for_equal_maps_and_weights_its_pyramid_by_halves():
    f = torch.randn(2, 3, 8, 8)
    assert hcl_loss([f], [f]).item() == 0.0
    s, t = torch.randn(2, 3, 2, 2), torch.randn(2, 3, 2, 2)
    # A 2×2 map: the full-size MSE and the 1×1 pooled one (4 and 2 are not smaller than 2), weights 1 and ½.
    by_hand = (F.mse_loss(s, t) + 0.5 * F.mse_loss(s.mean((2, 3)), t.mean((2, 3)))) / 1.5
    assert hcl_loss([s], [t]).item() == pytest.approx(by_hand.item(), rel=1e-6)
    a, b = torch.randn(2, 5, 1, 1), torch.randn(2, 5, 1, 1)  # the embedding level: plain MSE
    assert hcl_loss([a, s], [b, t]).item() == pytest.approx(F.mse_loss(a, b).item() + by_hand.item(), rel=1e-6)


def _ctx(side: int, epochs: int = 1) -> MethodContext:
    return MethodContext(10, 3, side, 8, torch.zeros(8, dtype=torch.long), epochs, 0)


def test_review_chain_maps_each_student_level_to_its_teacher_level():
    # test_resnet (4 stages) under cifar_resnet8 (3 stages): the last 3 student stages, the embedding after them.
    side = 16
    t = create_model("cifar_resnet8", num_classes=10, image_size=side)
    s = create_model("test_resnet", num_classes=10, image_size=side)
    d = get_method("reviewkd").cls(s, t, ReviewKDParams(warmup=0), _ctx(side)).train()
    assert (d.s_stages, d.t_stages) == ([2, 3, 4], [1, 2, 3])
    assert d.out_sizes == [(16, 16), (8, 8), (4, 4), (1, 1)]
    assert [abf.att_conv is None for abf in d.abfs] == [True, False, False, False]  # the deepest fuses nothing
    logits, losses = d.forward_train(Batch(torch.randn(4, 3, side, side), torch.arange(4), torch.arange(4)))
    assert set(losses) == {"ce", "review"} and logits.shape == (4, 10)
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in d.abfs.parameters())


def test_warmup_and_the_pairs_weight_are_resolved_into_the_config():
    spec = get_method("reviewkd")
    p = spec.cls.resolve_params(spec.params, teacher="cifar_resnet32x4", student="cifar_resnet8x4", epochs=240)
    assert (p.w_review, p.warmup) == (5.0, 20)  # configs/cifar100/reviewkd.yaml; cfg.py's 20 of 240 epochs
    p = spec.cls.resolve_params(spec.params, teacher="cifar_wrn_40_2", student="cifar_wrn_16_2", epochs=24)
    assert (p.w_review, p.warmup) == (1.0, 2)
    kept = spec.cls.resolve_params(ReviewKDParams(w_review=0.5, warmup=7), teacher="cifar_resnet32x4",
                                   student="cifar_resnet8x4", epochs=240)
    assert (kept.w_review, kept.warmup) == (0.5, 7)
    t = create_model("cifar_resnet8", num_classes=10, image_size=8)
    d = spec.cls(create_model("cifar_resnet8", num_classes=10, image_size=8), t, ReviewKDParams(warmup=4), _ctx(8))
    factors = []
    for epoch in (1, 2, 4, 5):
        d.on_epoch_start(epoch)
        factors.append(d._warmup)
    assert factors == [0.25, 0.5, 1.0, 1.0]


def test_a_teacher_without_pre_relu_maps_is_refused_in_one_line():
    t = create_model("mobilenetv3_small_050", num_classes=10, image_size=32)
    s = create_model("cifar_resnet8", num_classes=10, image_size=32)
    with pytest.raises(UserError, match="MobileNetV3 has no pre-activation stage outputs") as refused:
        get_method("reviewkd").cls(s, t, ReviewKDParams(), _ctx(32))
    assert "\n" not in str(refused.value)


def test_cli_run_on_digits_logs_the_review_term(dirs, in_process):
    record, epoch = run_epoch_on_digits(in_process, dirs["results"], "reviewkd")
    assert set(epoch["losses"]) == {"ce", "review", "total"}
    assert record["student_info"]["method_extra_params"] > 0  # the ABFs train with the student
    # 20 of 240 epochs rescaled to 1 epoch: no warm-up; the default weight for a pair without a published one.
    assert record["config"]["method_params"]["warmup"] == record["method_info"]["warmup"] == 0
    assert record["config"]["method_params"]["w_review"] == 1.0


@pytest.mark.parametrize(("setting", "message"), [
    ("reviewkd.w_ce=-1", "reviewkd.w_ce=-1 is out of range; allowed: [0, inf)"),
    ("reviewkd.w_review=-1", "reviewkd.w_review=-1 is out of range; allowed: [0, inf)"),
    ("reviewkd.warmup=-2", "reviewkd.warmup=-2 is out of range; allowed: [0, inf)"),
    ("reviewkd.max_mid_channels=0", "reviewkd.max_mid_channels=0 is out of range; allowed: [1, 4096]"),
])
def test_bad_settings_are_one_line_errors(setting, message, dirs, in_process):
    assert_refused_in_one_line(in_process, "reviewkd", setting, message)


def test_published_rows_sit_beside_ours_under_the_method_name():
    df = load_published("reviewkd")
    row = df[(df["teacher"] == "cifar_resnet32x4") & (df["student"] == "cifar_resnet8x4")].iloc[0]
    assert (row["method"], row["top1"], row["epoch"]) == ("reviewkd", 75.63, "unstated")
    assert set(df["method"]) == {"reviewkd", "ce"}  # ce: the ImageNet README's Baseline column (the student alone)


def test_a_student_without_pre_relu_maps_is_refused_with_student_preact():
    t = create_model("cifar_resnet8", num_classes=10, image_size=32)
    s = create_model("mobilenetv3_small_050", num_classes=10, image_size=32)
    get_method("reviewkd").cls(s, t, ReviewKDParams(), _ctx(32))  # its post-ReLU stage outputs are enough
    with pytest.raises(UserError, match="reviewkd.student_preact=true reads the student's pre-ReLU stage maps"):
        get_method("reviewkd").cls(s, t, ReviewKDParams(student_preact=True), _ctx(32))
