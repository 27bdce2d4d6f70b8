"""Logit standardization (Sun et al. 2024): the shared function against the authors' code (fixture: their
`normalize`, and their kd_loss / dkd_loss with logit_stand=True, reproduced by kdbench's kd_loss / dkd_loss on
standardized logits, so that adding the switch to kd and dkd is one line), its properties, and the switch of the
logit methods (kd, dkd, dist, ctkd, crd+kd, hkd+kd, cnn2gnn, fitnet's KD stage) end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdbench.methods._logit_standardization import standardize_logits, standardized_pair
from kdbench.methods.dkd import dkd_loss
from kdbench.methods.kd import kd_loss
from kdbench.train.method import get_method, list_methods

FIXTURE = json.loads((Path(__file__).parent / "fixtures/reference_losses/logit_std.json").read_text())


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = FIXTURE["inputs"]
    return torch.tensor(i["student_logits"]), torch.tensor(i["teacher_logits"]), torch.tensor(i["labels"])


def test_standardization_reproduces_the_reference_normalize():
    zs, zt, _ = _inputs()
    assert torch.allclose(standardize_logits(zs), torch.tensor(FIXTURE["normalize_student"]), atol=1e-6)
    assert torch.allclose(standardize_logits(zt), torch.tensor(FIXTURE["normalize_teacher"]), atol=1e-6)


@pytest.mark.parametrize("case", FIXTURE["kd"], ids=lambda c: f"T{c['temperature']}")
def test_kd_on_standardized_logits_reproduces_the_references_kd_with_logit_stand(case):
    zs, zt, _ = _inputs()
    s, t = standardized_pair(zs, zt, True)
    assert kd_loss(s, t, case["temperature"]).item() == pytest.approx(case["loss"], rel=1e-5)


@pytest.mark.parametrize("case", FIXTURE["dkd"], ids=lambda c: f"T{c['temperature']}-b{c['beta']}")
def test_dkd_on_standardized_logits_reproduces_the_references_dkd_with_logit_stand(case):
    zs, zt, y = _inputs()
    s, t = standardized_pair(zs, zt, True)
    got = dkd_loss(s, t, y, case["alpha"], case["beta"], case["temperature"])
    assert got.item() == pytest.approx(case["loss"], rel=1e-5)


def test_standardized_rows_have_zero_mean_unit_std_and_ignore_shift_and_scale():
    torch.manual_seed(0)
    z = 5 * torch.randn(4, 10) + 3
    s = standardize_logits(z)
    assert torch.allclose(s.mean(dim=1), torch.zeros(4), atol=1e-5)
    assert torch.allclose(s.std(dim=1), torch.ones(4), atol=1e-5)
    shifted_scaled = 7.0 * z - torch.arange(4.0)[:, None]  # per-row shift, positive scale
    assert torch.allclose(standardize_logits(shifted_scaled), s, atol=1e-4)
    assert torch.equal(standardize_logits(torch.ones(2, 5)), torch.zeros(2, 5))  # a constant row: 0, not NaN
    off = standardized_pair(z, -z, False)
    assert off[0] is z and torch.equal(off[1], -z)


def test_the_shared_module_is_not_a_method():
    assert "_logit_standardization" not in list_methods() and "logit_standardization" not in list_methods()


# Every logit method takes the switch; where its KD term acts only in some configuration, that configuration.
SWITCH_CONTEXT = {
    "kd": [], "dkd": [], "dist": [], "ctkd": [], "cnn2gnn": [],
    "crd+kd": ["crd+kd.nce_k=64"], "hkd+kd": ["hkd+kd.nce_k=64"],
    # FitNet's KD term is its second stage's: epoch 1 the hints, epoch 2 KD (the last line compared).
    "fitnet": ["fitnet.stages=2", "fitnet.hint_epochs=1", "recipe.epochs=2"],
}


@pytest.mark.parametrize("method", sorted(SWITCH_CONTEXT))
def test_the_switch_changes_the_run_and_its_id_through_the_cli(dirs, in_process, method):
    base = ["run", "--method", method, "--teacher", "test_resnet", "--student", "test_resnet", "--epochs", "1",
            "--teacher-epochs", "1", "--set", "data.image_size=8", "--json"]
    for item in SWITCH_CONTEXT[method]:
        base += ["--set", item]
    records = {}
    # Unnamed only for kd (each run costs seconds): the switch left at its default keeps the run id.
    for switch in ("", "false", "true") if method == "kd" else ("false", "true"):
        result = in_process(*base, *(["--set", f"{method}.logit_std={switch}"] if switch else []))
        assert result.returncode == 0, result.stderr
        records[switch] = json.loads(result.stdout)
    assert records["true"]["run_id"] != records["false"]["run_id"]
    assert records["true"]["config"]["method_params"]["logit_std"] is True
    # Off, the switch is left out of the config: the run id (and record) of a run that does not name it.
    assert "logit_std" not in records["false"]["config"]["method_params"]
    if method == "kd":
        assert records["false"]["run_id"] == records[""]["run_id"]

    def losses(record: dict) -> dict:
        path = dirs["results"] / "runs" / record["run_id"] / "metrics.jsonl"
        return json.loads(path.read_text().splitlines()[-1])["losses"]

    assert losses(records["true"]) != losses(records["false"])


# The paper's README numbers for resnet56 → resnet20 (best epoch), one per method it pairs with the switch.
PUBLISHED_LS_56_20 = {"kd": 71.43, "dkd": 72.32, "ctkd": 71.34}


@pytest.mark.parametrize("method", sorted(PUBLISHED_LS_56_20))
def test_published_ls_rows_meet_only_our_runs_with_the_switch_on(dirs, in_process, method):
    """`kdbench leaderboard --published`: the logit-standardization paper's `M+ls` number is compared with our
    `M` runs that have `logit_std` on, the plain `M` numbers with those that have it off (whose records leave the
    switch out: it is labelled at its default)."""
    import dataclasses
    import io

    import pandas as pd
    from test_leaderboard import make_config, write_run

    pair = {"teacher": "cifar_resnet56", "student": "cifar_resnet20", "dataset": "cifar100"}
    spec = get_method(method)
    for seed, (std, top1) in enumerate([(False, 70.0), (True, 72.0), (True, 74.0)]):
        config = make_config("kd", teacher="resnet50", seed=seed)
        params = spec.cls.resolve_params(dataclasses.replace(spec.params, logit_std=std), teacher=pair["teacher"],
                                         student=pair["student"], epochs=config.recipe.epochs)
        write_run(dirs["results"], dataclasses.replace(config, method=method, method_params=dataclasses.asdict(params),
                                                       **pair), top1)
    result = in_process("leaderboard", "--published", "--results-dir", str(dirs["results"]), "--format", "csv")
    assert result.returncode == 0, result.stderr
    board = pd.read_csv(io.StringIO(result.stdout))
    ours = board[(board["student"] == "cifar_resnet20") & (board["teacher"] == "cifar_resnet56")]
    plain, ls = ours[ours["method"] == method], ours[ours["method"] == f"{method}+ls"]
    assert len(ls) == 1, board
    assert set(plain["row"]) == {f"{method} [logit_std=False]"}
    assert ls.iloc[0]["row"] == f"{method} [logit_std=True]"
    # The LS paper reports the best epoch: the two runs with the switch on, top1_best = top1_last + 1.
    assert (ls.iloc[0]["published_top1"], ls.iloc[0]["n"], ls.iloc[0]["mean"]) == \
        (PUBLISHED_LS_56_20[method], 2, pytest.approx(74.0))
