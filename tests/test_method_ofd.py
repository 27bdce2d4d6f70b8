"""OFD: the margin, partial L2 and stage weighting against mdistiller's own code (numbers in a fixture), the
formula's properties, the pre-ReLU taps it reads (kdbench.models.preact), one run through the CLI on digits, and
the one-line refusals of bad settings and of models without pre-ReLU maps."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from method_cli import assert_refused_in_one_line, run_epoch_on_digits

from kdbench.core.errors import UserError
from kdbench.methods.ofd import OFDParams, ofd_feat_loss, ofd_loss, ofd_margin
from kdbench.models import create_model
from kdbench.models.features import FeatureTap
from kdbench.models.preact import PreactTap, preact_id
from kdbench.teachers.output_cache import output_names
from kdbench.train.method import MethodContext, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_losses" / "ofd.json").read_text())


def tensor(values: list) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def test_margin_matches_mdistiller():
    case = FIXTURE["margin"]
    got = ofd_margin(tensor(case["bn_weight"]), tensor(case["bn_bias"]))
    torch.testing.assert_close(got, tensor(case["margin"]), rtol=1e-5, atol=1e-6)


def test_partial_l2_matches_mdistiller():
    case, margin = FIXTURE["feat_loss"], FIXTURE["margin"]["margin"]
    got = ofd_feat_loss(tensor(case["source"]), tensor(case["target"]), tensor(margin))
    assert got.item() == pytest.approx(case["loss"], rel=1e-5)


def test_stage_weighting_and_pooling_match_mdistiller():
    case = FIXTURE["ofd_loss"]
    got = ofd_loss([tensor(s) for s in case["student"]], [tensor(t) for t in case["teacher"]],
                   [tensor(m) for m in case["margins"]])
    assert got.item() == pytest.approx(case["loss"], rel=1e-5)


def test_margin_is_the_mean_of_the_negative_part_of_the_bn_gaussian():
    # β = 0: E[x | x < 0] = −|γ|·√(2/π); almost no negative mass: −3|γ|; γ = 0: the constant β when negative.
    got = ofd_margin(torch.tensor([2.0, -2.0, 0.1, 0.0, 0.0]), torch.tensor([0.0, 0.0, 1.0, -0.5, 0.5]))
    expected = [-2 * math.sqrt(2 / math.pi), -2 * math.sqrt(2 / math.pi), -0.3, -0.5, 0.0]
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # A Monte-Carlo check of the closed form on a BN with both signs of response.
    torch.manual_seed(0)
    x = torch.distributions.Normal(0.4, 1.3).sample((400_000,)).double()
    assert ofd_margin(torch.tensor([1.3]), torch.tensor([0.4])).item() == pytest.approx(x[x < 0].mean().item(),
                                                                                         abs=0.01)


def test_partial_l2_is_zero_where_the_student_is_below_a_response_the_relu_drops():
    m = torch.tensor([-1.0])
    t = torch.tensor([-3.0, -0.5, -0.5, 0.7]).view(1, 1, 1, 4)
    s_below = torch.tensor([-2.0, -0.8, -0.5, 0.7]).view(1, 1, 1, 4)  # t ≤ m with s ≤ m; s ≤ t ≤ 0; s = t; s = t
    assert ofd_feat_loss(s_below, t, m).item() == 0.0
    assert ofd_feat_loss(t, t, m).item() == 0.0  # the student equal to the teacher
    s_above = torch.tensor([0.0, 0.5, -0.5, 0.2]).view(1, 1, 1, 4)
    # t ≤ m: target the margin, (0 − (−1))²; m < t ≤ 0, s > t: (0.5 + 0.5)²; t > 0: always (0.2 − 0.7)².
    assert ofd_feat_loss(s_above, t, m).item() == pytest.approx(1.0 + 1.0 + 0.25)


def test_the_deepest_pair_weighs_one_and_each_shallower_half_the_next():
    m = [torch.tensor([-1.0])] * 3
    s = [torch.ones(1, 1, 2, 2)] * 3
    t = [torch.zeros(1, 1, 2, 2)] * 3  # each pair alone: 4 positions × (1 − 0)², target 0 ≤ 0 but > margin
    assert ofd_loss(s, t, m).item() == pytest.approx(4 * (0.25 + 0.5 + 1))


def test_preact_tap_reads_the_sum_before_an_in_place_relu():
    # timm's ResNets run their final ReLU in place: the tap keeps the pre-activation map, whose ReLU is the stage
    # output; kdbench's CIFAR ResNets mark it with a `preact` module.
    torch.manual_seed(0)
    for name in ("test_resnet", "cifar_resnet8"):
        model = create_model(name, num_classes=10, image_size=16).eval()
        for m in model.modules():  # timm zero-initialises the last BN of each block: give it a response
            if isinstance(m, torch.nn.BatchNorm2d):
                torch.nn.init.normal_(m.weight)
                torch.nn.init.normal_(m.bias)
        x = torch.randn(2, 3, 16, 16)
        pre, post = PreactTap(model, stages=[1, 2, 3]), FeatureTap(model, stages=[1, 2, 3])
        f_pre, f_post = pre(x), post(x)
        assert torch.equal(f_pre.logits, model(x))
        for i in (1, 2, 3):
            assert f_pre.stages[preact_id(i)].min() < 0
            torch.testing.assert_close(f_pre.stages[preact_id(i)].relu(), f_post.stages[i])


def test_preact_maps_have_their_own_names_in_the_teacher_output_cache():
    # The cache's namespace is shared by every method of a sweep: a pre-ReLU map must not be served for the
    # post-ReLU map of the same stage (or the reverse).
    model = create_model("cifar_resnet8", num_classes=10, image_size=8)
    assert set(output_names(PreactTap(model, stages=[2]))).isdisjoint(set(output_names(FeatureTap(model, stages=[2])))
                                                                     - {"logits"})


def _ctx(side: int) -> MethodContext:
    return MethodContext(10, 3, side, 8, torch.zeros(8, dtype=torch.long), 1, 0)


@pytest.mark.parametrize(("teacher", "student", "why"), [
    ("cifar_resnet8", "mobilenetv3_small_050", "MobileNetV3 has no pre-activation stage outputs"),
    ("cifar_shufflev1", "cifar_resnet8", "has no BN right before its last activation"),
])
def test_models_without_pre_relu_maps_are_refused_in_one_line(teacher, student, why):
    t = create_model(teacher, num_classes=10, image_size=32)
    s = create_model(student, num_classes=10, image_size=32)
    with pytest.raises(UserError, match=why) as refused:
        get_method("ofd").cls(s, t, OFDParams(), _ctx(32))
    assert "\n" not in str(refused.value) and "use fitnet, at" in str(refused.value)


def test_margins_come_from_the_teachers_bn_when_the_method_is_built():
    t = create_model("cifar_resnet8", num_classes=10, image_size=8)
    bn = t.layer3[-1].bn2
    with torch.no_grad():
        bn.weight.fill_(2.0)
        bn.bias.fill_(0.0)
    d = get_method("ofd").cls(create_model("cifar_resnet8", num_classes=10, image_size=8), t, OFDParams(), _ctx(8))
    assert d.pairs == [(1, 1), (2, 2), (3, 3)]
    torch.testing.assert_close(d.margins[-1], torch.full((64,), -2 * math.sqrt(2 / math.pi)))
    assert "margin0" not in d.state_dict()  # derived from the teacher, never checkpointed


def test_cli_run_on_digits_logs_the_ofd_term(dirs, in_process):
    record, epoch = run_epoch_on_digits(in_process, dirs["results"], "ofd")
    assert set(epoch["losses"]) == {"ce", "ofd", "total"}
    assert record["method_info"]["stage_pairs"] == [[2, 1], [3, 2], [4, 3]]
    assert record["student_info"]["method_extra_params"] > 0  # the connectors train with the student
    assert record["config"]["method_params"] == {"w_ce": 1.0, "w_feat": 0.001, "connector_kernel": 1}


@pytest.mark.parametrize(("setting", "message"), [
    ("ofd.w_ce=-1", "ofd.w_ce=-1 is out of range; allowed: [0, inf)"),
    ("ofd.w_feat=-0.5", "ofd.w_feat=-0.5 is out of range; allowed: [0, inf)"),
    ("ofd.connector_kernel=9", "ofd.connector_kernel=9 is out of range; allowed: [1, 7]"),
    ("ofd.connector_kernel=2", "ofd.connector_kernel=2 must be odd; allowed: 1, 3, 5, 7"),
])
def test_bad_settings_are_one_line_errors(setting, message, dirs, in_process):
    assert_refused_in_one_line(in_process, "ofd", setting, message)


def test_pre_relu_maps_read_from_the_teacher_cache_give_the_numbers_of_recomputed_ones(dirs, in_process):
    # The first run fills a fresh cache with the teacher's pre-ReLU maps (`stage1.preact` ...); a run with another
    # weight reads them, and must compute what the same run without the cache computes.
    cache = ("--cache-dir", str(dirs["results"] / "cache"))
    filled, _ = run_epoch_on_digits(in_process, dirs["results"] / "fill", "ofd", *cache)
    assert filled["teacher_cache"]["features"] == "cached" and filled["teacher_cache"]["hits"] == 0
    assert {p.name.split("-", 1)[1] for p in (dirs["results"] / "cache").glob("*/*.kdtc")} == {
        # The pre-ReLU maps have entries of their own (`.preact`, kdbench.teachers.cache_outputs): they are never
        # served to a method asking for the post-ReLU stage of the same index.
        "logits.kdtc", "stage1.preact.kdtc", "stage2.preact.kdtc", "stage3.preact.kdtc"}
    read, read_epoch = run_epoch_on_digits(in_process, dirs["results"] / "read", "ofd", *cache,
                                           "--set", "ofd.w_feat=0.01")
    assert read["teacher_cache"]["hits"] > 0 and read["teacher_cache"]["misses"] == 0
    _, off_epoch = run_epoch_on_digits(in_process, dirs["results"] / "off", "ofd", "--set", "ofd.w_feat=0.01",
                                       "--teacher-cache", "off")
    for key in ("losses", "train_top1", "top1"):
        assert read_epoch[key] == off_epoch[key]


def test_kdbench_methods_lists_ofd_and_reviewkd_with_paper_and_defaults(in_process):
    result = in_process("methods")
    assert result.returncode == 0
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert "Heo et al. 2019" in rows["ofd"] and "Chen et al. 2021" in rows["reviewkd"]
    flat = " ".join(result.stdout.split())  # the defaults column wraps
    assert "w_feat=0.001" in flat and "max_mid_channels" in flat
