"""DOT's optimizer step (kdbench.train.dot) against its reference's numbers, and the properties of its rule.

The fixture tests/fixtures/reference_losses/dot.json holds the parameters after each of 3 steps of mdistiller's
`DistillationOrientedTrainer` (megvii-research/mdistiller, mdistiller/engine/dot.py; its "source" says which commit
and how it was called), run once outside this repository on the fixed parameters and gradients stored beside
them: a parameter with both gradients, one with the task gradient alone, one with the distillation gradient alone.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from kdbench.train.dot import DistillationOrientedSGD, split_losses

FIXTURE = json.loads((Path(__file__).parent / "fixtures" / "reference_losses" / "dot.json").read_text())
INPUTS = FIXTURE["inputs"]


def _run_kdbench(dot_delta: float, nesterov: bool = False) -> tuple[list[dict], DistillationOrientedSGD, dict]:
    """Our optimizer on the fixture's parameters and gradients, in the engine's order of calls."""
    params = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in INPUTS["params"].items()}
    opt = DistillationOrientedSGD(list(params.values()), lr=INPUTS["lr"], momentum=INPUTS["momentum"],
                                  dot_delta=dot_delta, weight_decay=INPUTS["weight_decay"], nesterov=nesterov)
    after = []
    for step in range(INPUTS["steps"]):
        _steps(opt, params, [step])
        after.append({k: p.detach().clone() for k, p in params.items()})
    return after, opt, params


def _steps(opt: DistillationOrientedSGD, params: dict, steps: list[int]) -> None:
    for step in steps:
        opt.zero_grad(set_to_none=True)
        for k, grad in INPUTS["kd_grads"][step].items():
            params[k].grad = torch.tensor(grad)
        opt.stash_kd_grads()
        opt.zero_grad(set_to_none=True)
        for k, grad in INPUTS["task_grads"][step].items():
            params[k].grad = torch.tensor(grad)
        opt.step()


def _matches_reference(after: list[dict]) -> bool:
    expected = FIXTURE["outputs"]["params_after_step"]
    return all(torch.allclose(got[k], torch.tensor(want[k]), rtol=1e-6, atol=1e-6)
               for got, want in zip(after, expected, strict=True) for k in want)


def test_the_step_reproduces_mdistillers_dot_on_every_kind_of_parameter():
    after, opt, params = _run_kdbench(INPUTS["delta"])
    assert _matches_reference(after)
    # And the two buffers it keeps, under the reference's state names (what a checkpoint holds).
    for name, buffers in FIXTURE["outputs"]["state"].items():
        state = opt.state[params[name]]
        assert set(state) == set(buffers), name
        for key, want in buffers.items():
            torch.testing.assert_close(state[key], torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_the_fixture_tells_the_two_momenta_apart():
    """Swapped momenta (task β + Δ, distillation β − Δ) or none (Δ = 0) give other numbers than the reference's."""
    assert not _matches_reference(_run_kdbench(-INPUTS["delta"])[0])
    assert not _matches_reference(_run_kdbench(0.0)[0])


@pytest.mark.parametrize("nesterov", [False, True])
def test_with_no_delta_it_is_torch_sgd_on_the_summed_gradient(nesterov):
    """Momentum is linear: with Δ = 0 the two buffers of a parameter that gets both gradients sum to SGD's one
    buffer of the summed gradient (weight decay added once), Nesterov's form included."""
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(4, 3))
    theirs.data.copy_(ours.data)
    dot = DistillationOrientedSGD([ours], lr=0.1, momentum=0.9, dot_delta=0.0, weight_decay=0.01, nesterov=nesterov)
    sgd = torch.optim.SGD([theirs], lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov)
    for _ in range(4):
        g_task, g_kd = torch.randn(4, 3), torch.randn(4, 3)
        ours.grad = g_kd.clone()
        dot.stash_kd_grads()
        ours.grad = g_task.clone()
        dot.step()
        theirs.grad = g_task + g_kd
        sgd.step()
        torch.testing.assert_close(ours.data, theirs.data, rtol=1e-5, atol=1e-6)


def test_a_restored_state_dict_continues_with_the_same_bits():
    """Both buffers are in the optimizer's state dict: an optimizer rebuilt from it (a resumed run) takes the
    next step exactly as the one that kept going."""
    _, opt, params = _run_kdbench(INPUTS["delta"])  # 3 steps taken
    saved = {k: p.detach().clone() for k, p in params.items()}
    state = copy.deepcopy(opt.state_dict())  # as from a file: load_state_dict would share the tensors
    again = {k: torch.nn.Parameter(v.clone()) for k, v in saved.items()}
    restored = DistillationOrientedSGD(list(again.values()), lr=INPUTS["lr"], momentum=INPUTS["momentum"],
                                       dot_delta=INPUTS["delta"], weight_decay=INPUTS["weight_decay"])
    restored.load_state_dict(state)
    _steps(opt, params, [0])
    _steps(restored, again, [0])
    assert all(torch.equal(params[k], again[k]) for k in params)


def test_the_task_term_is_ce_and_the_rest_is_distillation():
    ce, kd, hint = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(4.0)
    task, distil = split_losses({"ce": ce, "kd": kd, "hint": hint})
    assert task is ce and float(distil) == 6.0
    # A step with one half (FitNet's hint pre-stage) has no other.
    assert split_losses({"hint": hint}) == (None, hint) and split_losses({"ce": ce}) == (ce, None)


def test_a_parameter_with_one_gradient_moves_as_sgd_with_the_recipes_momentum():
    """A step with only distillation terms (a pre-stage) or only `ce`: the reference's one-gradient rule, β."""
    torch.manual_seed(1)
    for half in ("kd", "task"):
        ours, theirs = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
        theirs.data.copy_(ours.data)
        dot = DistillationOrientedSGD([ours], lr=0.1, momentum=0.9, dot_delta=0.075, weight_decay=0.0)
        sgd = torch.optim.SGD([theirs], lr=0.1, momentum=0.9)
        for _ in range(3):
            grad = torch.randn(5)
            ours.grad = grad.clone()
            if half == "kd":
                dot.stash_kd_grads()
                ours.grad = None
            dot.step()
            theirs.grad = grad
            sgd.step()
            torch.testing.assert_close(ours.data, theirs.data)
