"""OFA (Hao et al. 2023): the target-enhanced loss against the authors' ofa_loss, its properties, the exits per
student stage (sized as the authors' projectors, CNN and token students), and the run a user types."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_families import FAMILIES, SIDE, build

from kdbench.core.errors import UserError
from kdbench.methods.ofa import (
    OFAParams,
    TokenExit,
    cnn_exit,
    ofa_loss,
    reference_stage_indices,
    token_exit,
)
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_losses" / "ofa.json").read_text())


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    x = FIXTURE["inputs"]
    return torch.tensor(x["student_logits"]), torch.tensor(x["teacher_logits"]), torch.tensor(x["labels"])


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"eps{c['eps']}-T{c['temperature']}")
def test_loss_matches_the_authors_ofa_loss(case):
    z_s, z_t, y = _inputs()
    got = ofa_loss(z_s, z_t, y, case["eps"], case["temperature"]).item()
    assert got == pytest.approx(case["loss"], rel=1e-6, abs=1e-6)


def test_at_eps_1_the_loss_is_the_cross_entropy_against_the_teachers_soft_labels():
    z_s, z_t, y = _inputs()
    soft_ce = -(F.softmax(z_t / 2, dim=1) * F.log_softmax(z_s / 2, dim=1)).sum(1).mean()
    assert ofa_loss(z_s, z_t, y, 1.0, 2.0).item() == pytest.approx(soft_ce.item(), rel=1e-6)


def test_eps_above_1_enhances_the_target_where_eps_1_is_still():
    # Student == teacher: at ε = 1 the gradient (p_s − p_t) vanishes; at ε > 1 it pushes every target logit up.
    _, z_t, y = _inputs()
    for eps, still in ((1.0, True), (1.5, False)):
        z_s = z_t.clone().requires_grad_(True)
        ofa_loss(z_s, z_t, y, eps).backward()
        target_grad = z_s.grad.gather(1, y[:, None])
        if still:
            assert z_s.grad.abs().max().item() < 1e-6
        else:
            assert (target_grad < 0).all()


def test_non_target_classes_weigh_the_teachers_probability_to_the_eps():
    # One sample, a uniform student (log p_s = −log C for every class): the loss is log C · Σ_c w_c.
    z_t, y, eps = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([1]), 1.7
    p = F.softmax(z_t, dim=1)[0]
    by_hand = (p[0] ** eps + ((p[1] + 1) ** eps - 1) + p[2] ** eps) * torch.log(torch.tensor(3.0))
    assert ofa_loss(torch.zeros(1, 3), z_t, y, eps).item() == pytest.approx(by_hand.item(), rel=1e-6)


def _exit_sizes(key_start: str) -> dict[str, int]:
    return next(v for k, v in FIXTURE["exit_parameters"].items() if k.startswith(key_start))


def _numel(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_cnn_exits_are_sized_as_the_authors_projectors():
    # ResNet-18 at 224 px under a DeiT-T teacher: stage k's map has 64·2^(k−1) channels, width max(512, 192).
    sizes = _exit_sizes("teacher deit_tiny_patch16_224 -> student resnet18")
    for k in (1, 2, 3, 4):
        assert _numel(cnn_exit(k, 64 * 2 ** (k - 1), 512, 100)) == sizes[str(k)], k


def test_token_exits_are_sized_as_the_authors_projectors():
    # DeiT-T at 224 px: 14 × 14 patches of width 192 at every block; one merge to 7 × 7, then 3, 2, 1, 1 blocks.
    sizes = _exit_sizes("teacher resnet50 -> student deit_tiny_patch16_224")
    for k in (1, 2, 3, 4):
        assert _numel(token_exit(k, (192, 14, 14), 192, 100)) == sizes[str(k)], k
    out = token_exit(1, (192, 14, 14), 192, 100)(torch.randn(2, 192, 14, 14))
    assert out.shape == (2, 100)


def test_a_token_exit_maps_a_stage_of_another_width_when_it_does_not_merge():
    # A Swin stage at a tiny image: 4 × 4 patches (no merge towards 7 × 7), 8 channels, embedding width 16.
    exit_ = token_exit(1, (8, 4, 4), 16, 10)
    assert isinstance(exit_.merges[0], torch.nn.Linear)
    assert exit_(torch.randn(2, 8, 4, 4)).shape == (2, 10)


@pytest.mark.parametrize(
    ("arch", "options", "expected"),
    [
        ("resnet18", {}, {1: 1, 2: 2, 3: 3, 4: 4}),  # layer1..layer4 (0 is the stem)
        ("deit_tiny_patch16_224", {}, {1: 1, 2: 3, 3: 9, 4: 11}),  # blocks 2, 4, 10, 12 of 12
        ("convnext_atto", {}, {1: 0, 2: 1, 3: 2, 4: 3}),
        ("cifar_resnet8", {}, {2: 1, 3: 2, 4: 3}),  # three strides: the last three stages
        ("deit_tiny_patch16_224", {"depth": 2}, {1: 0, 2: 0, 3: 1, 4: 1}),
    ],
)
def test_reference_stages_map_to_the_students_stages(arch, options, expected):
    assert reference_stage_indices(create_model(arch, num_classes=10, **options)) == expected


TINY_VIT = {"img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 16, "num_heads": 2}


def _ofa(student: str, teacher: str, params: OFAParams = OFAParams(), **student_options):
    torch.manual_seed(0)
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=16, num_train=8, train_targets=torch.arange(8) % 10,
                        epochs=1, seed=0)
    s = create_model(student, num_classes=10, image_size=16, **student_options)
    t = create_model(teacher, num_classes=10, image_size=16,
                     **(TINY_VIT if teacher.startswith("deit") else {}))
    return get_method("ofa").cls(s, t, params, ctx)


@pytest.mark.parametrize(
    ("student", "options", "kind", "indices"),
    [
        ("resnet18", {}, "cnn", {"1": 1, "2": 2, "3": 3, "4": 4}),
        ("deit_tiny_patch16_224", TINY_VIT, "token", {"1": 0, "2": 0, "3": 1, "4": 1}),
    ],
)
def test_an_exit_per_student_stage_in_its_own_group_trained_by_the_loss(student, options, kind, indices):
    teacher = "deit_tiny_patch16_224" if student == "resnet18" else "resnet18"
    d = _ofa(student, teacher, **options)
    assert d.describe()["exits"] == indices and d.describe()["exit_kind"] == kind
    assert set(d.exits) == set(indices)
    assert all(isinstance(e, TokenExit) == (kind == "token") for e in d.exits.values())
    groups = {g.name: g for g in d.param_groups()}
    assert {id(p) for p in groups["exits"].params} == {id(p) for p in d.exits.parameters()}
    idx = torch.arange(4)
    logits, losses = d.forward_train(Batch(torch.randn(4, 3, 16, 16), idx % 10, idx))
    assert logits.shape == (4, 10) and set(losses) == {"ce", "kd", "ofa"}
    sum(losses.values()).backward()
    assert all(e.head.weight.grad is not None if kind == "token" else e[-1].weight.grad is not None
               for e in d.exits.values())


def test_stages_pick_the_exits_and_a_student_without_them_is_refused():
    assert set(_ofa("resnet18", "resnet18", OFAParams(stages="2,4")).exits) == {"2", "4"}
    with pytest.raises(UserError, match=r"only the reference stages \[2, 3, 4\]"):
        _ofa("cifar_resnet8", "resnet18", OFAParams(stages="1"))


def test_a_student_without_stage_maps_is_refused_in_one_line():
    # The GNN student's one stage is its (B, 256) hidden layer: nothing for an exit to project.
    with pytest.raises(UserError, match=r"stage 0 has shape \(256,\); use kd, dkd or rkd for this student"):
        _ofa("gnn2", "resnet18")


# Reference stages each family's tiny configuration (tests/model_families.py) has: a 2-block ViT taps block 1 for
# stages 1, 2 and block 2 for 3, 4; a 2-stage Swin and a 3-stride CIFAR ResNet have the last strides only.
FAMILY_EXITS = {
    "cifar_resnet": {"2": 1, "3": 2, "4": 3}, "resnet": {"1": 1, "2": 2, "3": 3, "4": 4},
    "mobilenet": {"1": 1, "2": 2, "3": 3, "4": 4}, "convnext": {"1": 0, "2": 1, "3": 2, "4": 3},
    "vit": {"1": 0, "2": 0, "3": 1, "4": 1}, "swin": {"3": 0, "4": 1}, "mixer": {"1": 1, "2": 2, "3": 6, "4": 7},
}


def _step(teacher: str, student: str) -> dict:
    torch.manual_seed(0)
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=SIDE, num_train=8,
                        train_targets=torch.arange(8) % 10, epochs=1, seed=0)
    d = get_method("ofa").cls(build(student), build(teacher), OFAParams(), ctx)
    idx = torch.arange(4)
    _, losses = d.forward_train(Batch(torch.randn(4, 3, SIDE, SIDE), idx % 10, idx))
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for e in d.exits.values() for p in e.parameters() if p.dim() > 1)
    return d.describe()


@pytest.mark.parametrize("student", list(FAMILIES))
def test_every_student_family_gets_its_exits_under_a_vit_teacher(student):
    described = _step("vit", student)
    assert described["exits"] == FAMILY_EXITS[student]
    assert described["exit_kind"] == ("token" if student in ("vit", "swin", "mixer") else "cnn")


@pytest.mark.parametrize("teacher", list(FAMILIES))
def test_every_teacher_family_teaches_a_cifar_resnet(teacher):
    assert _step(teacher, "cifar_resnet")["exits"] == FAMILY_EXITS["cifar_resnet"]


def test_ofa_deit_tiny_teacher_to_resnet18_runs_end_to_end(dirs, in_process):
    tiny = [f"--set=teacher.{k}={v}" for k, v in TINY_VIT.items()]
    code, stdout, stderr = in_process("run", "--method", "ofa", "--teacher", "deit_tiny_patch16_224", "--student",
                                      "resnet18", "--epochs", "1", "--teacher-epochs", "1", *tiny,
                                      # 6 steps of 256 instead of 22 of 64: the wiring is what is tested
                                      "--set=recipe.batch_size=256", "--set=teacher_recipe.batch_size=256", "--json")
    assert code == 0, stderr
    record = json.loads(stdout)
    assert record["method_info"]["exits"] == {"1": 1, "2": 2, "3": 3, "4": 4}
    assert record["method_info"]["exit_kind"] == "cnn"
    assert record["student_info"]["method_extra_params"] == record["method_info"]["exit_params"] > 0


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("ofa.w_ce=-1", "ofa.w_ce=-1 is out of range; allowed: [0"),
        ("ofa.w_kd=-0.5", "ofa.w_kd=-0.5 is out of range; allowed: [0"),
        ("ofa.w_ofa=-2", "ofa.w_ofa=-2 is out of range; allowed: [0"),
        ("ofa.eps=0", "ofa.eps=0 is out of range; allowed: (0, 10]"),
        ("ofa.temperature=0", "ofa.temperature=0 is out of range; allowed: (0, 100]"),
        ("ofa.stages=1,5", "ofa.stages='1,5' must name distinct stages among 1, 2, 3, 4"),
    ],
)
def test_a_bad_value_is_one_line_exit_2(dirs, in_process, setting, message):
    code, _, stderr = in_process("run", "--method", "ofa", "--teacher", "resnet18", "--epochs", "1",
                                 "--set", setting)
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1
