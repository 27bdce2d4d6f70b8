"""SP (similarity-preserving KD): the loss against numbers from RepDistiller's own SP.py, the properties of the
paper's formula, a CLI run on digits, and the one-line refusal of an out-of-range weight."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, run_on_digits, tensor

from kdbench.methods.sp import sp_loss


def test_sp_loss_matches_the_reference_code():
    ref = reference("sp")
    got = sp_loss(tensor(ref["inputs"]["f_s"]), tensor(ref["inputs"]["f_t"]))
    assert got.item() == pytest.approx(ref["output"], rel=1e-5)


def test_sp_loss_properties():
    g = torch.Generator().manual_seed(0)
    f = torch.randn(6, 4, 3, 3, generator=g)
    assert sp_loss(f, f.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert sp_loss(2.5 * f, f).item() == pytest.approx(0.0, abs=1e-6)  # each row of G is normalised: scale-free
    other = torch.randn(6, 9, 2, 2, generator=g)  # any width and map size: only the B × B similarities count
    loss = sp_loss(f, other)
    assert 0 < loss.item() <= 4 / 6  # ‖G_t − G_s‖²_F ≤ 4B for unit rows, over B²
    s = f.clone().requires_grad_(True)
    t = other.clone().requires_grad_(True)
    sp_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_sp_runs_from_the_cli_on_the_last_stages(dirs, in_process):
    record, losses = run_on_digits(in_process, dirs["results"], "sp")
    assert record["method_info"] == {"stage_pair": [3, 3]}  # cifar_resnet8: stem + 3 stages, the last one
    assert set(losses) == {"ce", "sp", "total"} and losses["sp"] > 0


def test_a_negative_weight_is_one_line(dirs, in_process):
    done = in_process("run", "--method", "sp", "--teacher", "cifar_resnet8", "--set", "sp.w_sp=-1")
    assert "sp.w_sp=-1 is out of range; allowed: [0, inf)" in one_line_exit_2(done)


def test_a_student_without_spatial_maps_is_taken_flattened():
    # SP compares only B × B similarities, so the GNN student's (B, D) hidden layer is a valid last stage.
    from kdbench.models import create_model
    from kdbench.train.method import Batch, MethodContext, get_method

    ctx = MethodContext(10, 3, 16, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    sp = get_method("sp").cls(create_model("gnn2", num_classes=10, image_size=16),
                              create_model("resnet18", num_classes=10, image_size=16), get_method("sp").params, ctx)
    g = torch.Generator().manual_seed(0)
    _, losses = sp.forward_train(Batch(torch.randn(6, 3, 16, 16, generator=g), torch.arange(6), torch.arange(6)))
    assert losses["sp"].item() > 0
    losses["sp"].backward()
