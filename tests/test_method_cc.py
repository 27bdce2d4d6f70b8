"""CC (correlation congruence): RepDistiller's form against numbers from its own CC.py and the paper's RBF form
against Knowledge-Distillation-Zoo's cc.py, their properties, both linear heads trained in their own parameter
group (none in the RBF form), a CLI run on digits, and the one-line refusal of bad settings."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, run_on_digits, tensor

from kdbench.methods.cc import CCParams, cc_loss, rbf_cc_loss
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method


def test_cc_loss_matches_the_reference_code():
    ref = reference("cc")
    got = cc_loss(tensor(ref["inputs"]["f_s"]), tensor(ref["inputs"]["f_t"]))
    assert got.item() == pytest.approx(ref["output"], rel=1e-5)


def test_rbf_cc_loss_matches_the_reference_code():
    ref = reference("cc")["rbf"]
    s, t = tensor(ref["inputs"]["f_s"]), tensor(ref["inputs"]["f_t"])  # widths 4 and 6: B × B matrices
    for case in ref["outputs"]:
        assert rbf_cc_loss(s, t, case["gamma"], case["P_order"]).item() == pytest.approx(case["output"], rel=1e-5)


def test_rbf_cc_loss_properties():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(6, 5, generator=g)
    assert rbf_cc_loss(e, 4.0 * e, 0.4, 2).item() == pytest.approx(0.0, abs=1e-7)  # unit embeddings: scale-free
    # Order 0 is the constant e^{-2γ}: nothing to match.
    assert rbf_cc_loss(e, torch.randn(6, 3, generator=g), 0.4, 0).item() == 0.0
    s = e.clone().requires_grad_(True)
    t = torch.randn(6, 3, generator=g, requires_grad=True)
    loss = rbf_cc_loss(s, t, 0.4, 2)
    loss.backward()
    assert loss.item() > 0 and s.grad.abs().sum() > 0 and t.grad is None


def test_the_rbf_form_has_no_heads():
    ctx = MethodContext(10, 3, 16, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    s = create_model("cifar_resnet8", num_classes=10, image_size=16)
    t = create_model("resnet18", num_classes=10, image_size=16)
    cc = get_method("cc").cls(s, t, CCParams(kernel="rbf"), ctx)
    assert cc.embed is None and cc.describe() == {"kernel": "rbf"}
    assert [n for n, _ in cc.named_parameters() if not n.startswith("student.")] == []


def test_cc_loss_pairs_consecutive_samples():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 1.0]])
    t = torch.zeros(3, 2)
    # |δ| rows (1, 0), (0, 2), (3, 1): pairs (0, 1) → 0, (1, 2) → 2; mean over the 2 pairs.
    assert cc_loss(s, t).item() == pytest.approx(1.0)
    assert cc_loss(s, s.clone()).item() == 0.0
    one = cc_loss(s[:1].requires_grad_(True), t[:1])
    assert one.item() == 0.0  # a single sample has no pair (the reference's mean over nothing is NaN)


def test_both_heads_get_gradients_and_form_the_embed_group():
    ctx = MethodContext(10, 3, 16, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    s = create_model("cifar_resnet8", num_classes=10, image_size=16)
    t = create_model("cifar_resnet8", num_classes=10, image_size=16)
    cc = get_method("cc").cls(s, t, CCParams(feat_dim=8), ctx).train()
    assert cc.embed.student.out_features == cc.embed.teacher.out_features == 8
    groups = {g.name: g.params for g in cc.param_groups()}
    assert {id(p) for p in groups["embed"]} == {id(p) for p in cc.embed.parameters()}
    g = torch.Generator().manual_seed(0)
    _, losses = cc.forward_train(Batch(torch.randn(4, 3, 16, 16, generator=g), torch.arange(4), torch.arange(4)))
    losses["cc"].backward()
    for head in (cc.embed.student, cc.embed.teacher):
        assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in t.parameters())  # the teacher itself stays frozen


def test_cc_runs_from_the_cli_with_its_embed_group(dirs, in_process):
    record, losses = run_on_digits(in_process, dirs["results"], "cc", "group.embed.lr_scale=2")
    assert set(losses) == {"ce", "cc", "total"} and losses["cc"] > 0
    groups = {g["name"]: g for g in record["param_groups"]}
    assert groups["embed"]["lr"] == 2 * groups["main"]["lr"]
    assert groups["embed"]["params"] == 2 * (64 * 128 + 128)  # cifar_resnet8's 64-wide embeddings → 128, twice


@pytest.mark.parametrize(("setting", "message"), [
    ("cc.w_cc=-0.5", "cc.w_cc=-0.5 is out of range; allowed: [0, inf)"),
    ("cc.feat_dim=0", "cc.feat_dim=0 is out of range; allowed: [1, 65536]"),
    ("cc.kernel=gauss", "unknown cc.kernel 'gauss'; valid: repdistiller, rbf"),
    ("cc.gamma=0", "cc.gamma=0 is out of range; allowed: (0, 100]"),
    ("cc.p_order=21", "cc.p_order=21 is out of range; allowed: [0, 20]"),
])
def test_an_out_of_range_setting_is_one_line(dirs, in_process, setting, message):
    done = in_process("run", "--method", "cc", "--teacher", "cifar_resnet8", "--set", setting)
    assert message in one_line_exit_2(done)
