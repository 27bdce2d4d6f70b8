"""DKD: TCKD and NCKD against their formulas, the identity KD = TCKD + (1 − p_t^T)·NCKD, α = β = 1 ≠ KD, the
warm-up as a function of the epoch alone, and the published per-pair β resolved into the run config and id."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.methods.dkd import DKDParams, dkd_loss, resolved_warmup, tckd_nckd, warmup_factor
from kdbench.methods.kd import kd_loss
from kdbench.models import create_model
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Batch, MethodContext, get_method

ZS = [[1.0, 2.0, 0.5, -1.0], [0.0, -1.0, 3.0, 1.0], [2.0, 2.0, 2.0, 0.0]]
ZT = [[3.0, 0.0, 1.0, 0.5], [1.0, 1.0, -2.0, 4.0], [0.0, 5.0, 1.0, 1.0]]
Y = [0, 3, 1]


def softmax(z: list[float], t: float) -> list[float]:
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def by_hand(zs: list[float], zt: list[float], y: int, t: float) -> tuple[float, float]:
    ps, pt = softmax(zs, t), softmax(zt, t)
    tckd = kl([pt[y], 1 - pt[y]], [ps[y], 1 - ps[y]])
    hat_s = [v / (1 - ps[y]) for i, v in enumerate(ps) if i != y]
    hat_t = [v / (1 - pt[y]) for i, v in enumerate(pt) if i != y]
    return t * t * tckd, t * t * kl(hat_t, hat_s)


@pytest.mark.parametrize("t", [1.0, 4.0, 0.5])
def test_tckd_and_nckd_match_their_formulas(t):
    tckd, nckd = tckd_nckd(torch.tensor(ZS), torch.tensor(ZT), torch.tensor(Y), t)
    for b in range(3):
        want = by_hand(ZS[b], ZT[b], Y[b], t)
        assert (tckd[b].item(), nckd[b].item()) == (pytest.approx(want[0], rel=1e-5), pytest.approx(want[1], rel=1e-5))


def test_dkd_loss_is_the_batch_mean_of_alpha_tckd_plus_beta_nckd():
    want = sum(1.5 * a + 6.0 * b for a, b in (by_hand(ZS[i], ZT[i], Y[i], 2.0) for i in range(3))) / 3
    got = dkd_loss(torch.tensor(ZS), torch.tensor(ZT), torch.tensor(Y), alpha=1.5, beta=6.0, temperature=2.0)
    assert got.item() == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_decomposes_into_tckd_plus_teacher_weighted_nckd_per_sample(t):
    """T²·KL(p^T ‖ p^S) = TCKD + (1 − p_t^T)·NCKD, with TCKD and NCKD both already scaled by T²."""
    torch.manual_seed(0)
    zs, zt, y = 3 * torch.randn(16, 10), 3 * torch.randn(16, 10), torch.randint(0, 10, (16,))
    tckd, nckd = tckd_nckd(zs, zt, y, t)
    p_target_teacher = torch.softmax(zt / t, dim=1).gather(1, y[:, None]).squeeze(1)
    for b in range(16):
        kd = kd_loss(zs[b:b + 1], zt[b:b + 1], t)  # per sample: a batch of one
        assert kd.item() == pytest.approx((tckd[b] + (1 - p_target_teacher[b]) * nckd[b]).item(), rel=1e-4)


def test_alpha_beta_one_is_not_vanilla_kd():
    torch.manual_seed(1)
    zs, zt, y = torch.randn(8, 10), 4 * torch.randn(8, 10), torch.randint(0, 10, (8,))
    dkd = dkd_loss(zs, zt, y, alpha=1.0, beta=1.0, temperature=4.0)
    kd = kd_loss(zs, zt, 4.0)
    assert dkd.item() > kd.item()  # KD shrinks NCKD by 1 − p_t^T < 1; DKD with β = 1 does not


def test_dkd_loss_is_zero_for_identical_logits_and_stable_for_extreme_ones():
    z, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 3])
    assert dkd_loss(z, z, y, 1.0, 8.0, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    big = torch.tensor([[200.0, -200.0, 0.0], [0.0, 300.0, -100.0]])
    assert torch.isfinite(dkd_loss(big, -big, torch.tensor([0, 1]), 1.0, 8.0, 1.0))


def test_warmup_is_linear_over_the_first_epochs_and_a_function_of_the_epoch_alone():
    assert [warmup_factor(e, 20) for e in (1, 10, 20, 21, 240)] == [0.05, 0.5, 1.0, 1.0, 1.0]
    assert warmup_factor(1, 0) == 1.0
    torch.manual_seed(0)
    ctx = MethodContext(10, 3, 16, 20, torch.arange(20) % 10, epochs=30, seed=0)
    student = create_model("resnet18", num_classes=10, image_size=16)
    teacher = create_model("resnet18", num_classes=10, image_size=16)
    params = DKDParams(w_nckd=8.0, warmup=20)  # mdistiller's 20 epochs, as stated (not rescaled to the 30 here)
    d = get_method("dkd").cls(student, teacher, params, ctx).train()
    batch = Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    full = dkd_loss(d.student(batch.images), d.teacher_logits(batch.images), batch.labels, 1.0, 8.0, 4.0)
    for epoch, factor in ((1, 0.05), (7, 0.35), (25, 1.0)):
        d.on_epoch_start(epoch)
        assert d.forward_train(batch)[1]["dkd"].item() == pytest.approx(factor * full.item(), rel=1e-5)
    # A resumed run (a fresh distiller told the epoch it restarts at) uses the same factor.
    resumed = get_method("dkd").cls(d.student, teacher, params, ctx).train()
    resumed.on_epoch_start(7)
    assert resumed.forward_train(batch)[1]["dkd"].item() == pytest.approx(0.35 * full.item(), rel=1e-5)


def _resolved(teacher: str, student: str, *sets: str) -> tuple[dict, str]:
    config = resolve_config(RunOptions(method="dkd", teacher=teacher, student=student, sets=list(sets)))
    return config.method_params, config.run_id


def test_published_beta_is_resolved_per_pair_into_the_config_and_run_id(monkeypatch):
    import kdbench.methods.dkd as dkd_module

    # The CIFAR zoo names come from another module; register this pair under names the zoo here knows.
    monkeypatch.setitem(dkd_module.PUBLISHED_BETA, ("resnet34", "resnet18"), 2.0)
    params, run_id = _resolved("resnet34", "resnet18")
    assert (params["w_nckd"], params["nckd_preset"]) == (2.0, "published")
    other, other_id = _resolved("resnet50", "resnet18")  # not in the table: the paper's default
    assert other["w_nckd"] == 8.0
    explicit, explicit_id = _resolved("resnet34", "resnet18", "dkd.w_nckd=2")
    assert explicit["w_nckd"] == 2.0 and explicit_id == run_id  # same β, same run
    wins, wins_id = _resolved("resnet34", "resnet18", "dkd.w_nckd=5")
    assert wins["w_nckd"] == 5.0 and wins_id != run_id  # an explicit β wins over the table
    none, none_id = _resolved("resnet34", "resnet18", "dkd.nckd_preset=none")
    assert none["w_nckd"] == 8.0 and none_id not in (run_id, other_id)


def test_the_published_warmup_is_rescaled_to_the_runs_epochs_like_the_recipes_milestones():
    # mdistiller's 20 of 240 epochs follow --epochs by kdbench.spec.recipe.rescale_epochs, into the config and run id.
    warmups = {}
    for epochs in (240, 24, 40, 10, 2, 1):
        config = resolve_config(RunOptions(method="dkd", teacher="resnet34", student="resnet18", epochs=epochs))
        warmups[epochs] = config.method_params["warmup"]
    assert warmups == {240: 20, 24: 2, 40: 3, 10: 1, 2: 1, 1: 0}
    assert [rescale_epochs(m, 240, 24) for m in (150, 180, 210, 20)] == [15, 18, 21, 2]  # the CRD recipe's rule
    assert resolve_config(RunOptions(method="dkd", teacher="resnet34", student="resnet18",
                                     sets=["recipe.epochs=40"])).method_params["warmup"] == 3  # --set epochs too
    stated = resolve_config(RunOptions(method="dkd", teacher="resnet34", student="resnet18", epochs=40,
                                       sets=["dkd.warmup=20"]))
    assert stated.method_params["warmup"] == 20  # an explicit warm-up is taken as stated
    rescaled = resolve_config(RunOptions(method="dkd", teacher="resnet34", student="resnet18", epochs=40))
    assert stated.run_id != rescaled.run_id
    # A distiller built from unresolved defaults (no config: a test, a library user) rescales the same way.
    ctx = MethodContext(10, 3, 16, 20, torch.arange(20) % 10, epochs=40, seed=0)
    d = get_method("dkd").cls(create_model("resnet18", num_classes=10, image_size=16),
                              create_model("resnet18", num_classes=10, image_size=16), DKDParams(), ctx)
    assert d.warmup == 3 and resolved_warmup(DKDParams(warmup=0), 40) == 0


def test_published_table_holds_the_papers_pairs():
    from kdbench.methods.dkd import PUBLISHED_BETA, published_beta

    assert published_beta("cifar_resnet56", "cifar_resnet20") == 2.0
    assert published_beta("cifar_resnet110", "cifar_resnet32") == 2.0
    assert published_beta("cifar_wrn_40_2", "cifar_wrn_16_2") == 6.0
    assert published_beta("cifar_wrn_40_2", "cifar_wrn_40_1") == 6.0
    assert published_beta("cifar_vgg13", "cifar_vgg8") == 6.0
    assert published_beta("cifar_resnet32x4", "cifar_resnet8x4") == 8.0
    assert set(PUBLISHED_BETA.values()) == {2.0, 6.0}


def test_params_are_validated():
    with pytest.raises(UserError, match="unknown dkd.nckd_preset 'paper'"):
        DKDParams(nckd_preset="paper")
    with pytest.raises(UserError, match="dkd.w_nckd"):
        DKDParams(w_nckd=-1.0)


def test_published_beta_table_names_registered_cifar_models() -> None:
    # The per-pair betas are keyed by zoo names: a typo would silently fall back to the default beta.
    import timm

    import kdbench.models  # noqa: F401  (registers the cifar_ models)
    from kdbench.methods.dkd import PUBLISHED_BETA

    names = set(timm.list_models("cifar_*"))
    for teacher, student in PUBLISHED_BETA:
        assert teacher in names and student in names, (teacher, student)
