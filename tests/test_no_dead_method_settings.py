"""No dead settings, method half: every field of every registered method's parameters changes a short real run.

For each method (named variants such as `crd+kd` included) and each field of its parameter dataclass, the field
is changed, one at a time, in a 1-epoch run of the real runner (tiny timm `test_resnet` student and teacher on
8-px digits, the teacher trained once for 1 epoch into this module's zoo; `cnn2gnn` keeps its `gnn2` student);
the run's per-epoch numbers (losses, lr, train/test top-1, eval loss) must differ from those of the same run with
the field at its default. A field that only acts in some configuration (FitNet's second stage, a KD term whose
weight defaults to 0, CNN2GNN's anchor graph, DKD's published β for a CIFAR pair) gets that configuration in its
context, for both runs; it is never skipped. Method fields have no "does not affect results" mark: the run id
hashes every one of them, so every field must be listed here.

The recipe's fields are covered by tests/test_no_dead_settings.py.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from kdbench.execute.api import run
from kdbench.train.method import get_method, list_methods

TEACHER, STUDENT = "test_resnet", "test_resnet"
BASE = {"dataset": "digits", "epochs": 1, "teacher_epochs": 1, "device": "cpu", "infer_batch_size": 8}
BASE_SETS = ["data.image_size=8", "recipe.batch_size=256", "recipe.eval_batch_size=512",
             "teacher_recipe.batch_size=256"]
STUDENT_FOR = {"cnn2gnn": "gnn2"}  # CNN2GNN's graph fields only reach its own GNN student
# Settings every run of a method has, to keep it cheap: the contrastive methods draw 64 negatives per sample
# instead of (capped) all other-class samples, which cuts their epoch from ~4 s to well under 1 s.
# RKD's angle loss compares all B³ triples of a batch: batches of 64 make its epoch ~10x cheaper than of 256.
METHOD_SETS = {**{name: [f"{name}.nce_k=64"] for name in ("crd", "crd+kd", "hkd", "hkd+kd")},
               "rkd": ["recipe.batch_size=64"]}


@dataclass(frozen=True)
class Change:
    """`value`: the field's changed value; `context`: `--set` items for both runs (the configuration in which the
    field acts); `pair`: (teacher, student) for both runs when the field acts only for some pairs."""

    value: str
    context: tuple[str, ...] = ()
    pair: tuple[str, str] | None = None


def _contrastive(name: str) -> dict[str, Change]:
    """CRD / HKD fields shared by the plain method and its `+kd` variant; the KD temperature only acts with a
    KD weight > 0, which the plain method's default (0) lacks."""
    kd_on = () if name.endswith("+kd") else (f"{name}.w_kd=1",)
    return {"w_ce": Change("0.5"), "w_kd": Change("0.5" if name.endswith("+kd") else "1"),
            "temperature": Change("2", kd_on), "feat_dim": Change("32"), "nce_k": Change("32"),
            "nce_t": Change("0.2"), "nce_m": Change("0.8"), "logit_std": Change("true", kd_on)}


def _crd(name: str) -> dict[str, Change]:
    return {**_contrastive(name), "w_crd": Change("0.4")}


def _hkd(name: str) -> dict[str, Change]:
    return {**_contrastive(name), "w_hkd": Change("1"), "k": Change("4"), "nce_m": Change("0.5"),
            "smooth_m": Change("0.5"), "individual": Change("false"), "negatives": Change("own")}


# FitNet's paper schedule: 1 epoch of hints, then KD; its w_kd / temperature act only in the second stage.
_FITNET_TWO_STAGES = ("fitnet.stages=2", "fitnet.hint_epochs=1", "recipe.epochs=3")

_TWO_EPOCHS = ("recipe.epochs=2",)
_RESNET8 = ("cifar_resnet8", "cifar_resnet8")


def _pre_stage(fields: dict[str, Change], pair: tuple[str, str] | None = None) -> dict[str, Change]:
    """A pre-stage method's (kdbench.methods._prestage) own `fields` plus its CE weight and pre-stage length."""
    return {**fields, "w_ce": Change("0.5", _TWO_EPOCHS, pair), "init_epochs": Change("2", ("recipe.epochs=3",), pair)}


CHANGES: dict[str, dict[str, Change]] = {
    "ce": {"w_ce": Change("0.5")},
    "kd": {"temperature": Change("2"), "w_ce": Change("0.5"), "w_kd": Change("0.5"), "logit_std": Change("true")},
    # At 8 px the default (shallow) pairing keeps only stage 1:1 (2×2); the stems' 4×4 maps are another term.
    "at": {"w_ce": Change("0.5"), "w_at": Change("100"), "pairs": Change("0:0")},
    "pkt": {"w_ce": Change("0.5"), "w_pkt": Change("1000")},
    "sp": {"w_ce": Change("0.5"), "w_sp": Change("100")},
    "cc": {"w_ce": Change("0.5"), "w_cc": Change("1"), "feat_dim": Change("32"), "kernel": Change("rbf"),
           "gamma": Change("1", ("cc.kernel=rbf",)), "p_order": Change("1", ("cc.kernel=rbf",))},
    "vid": {"w_ce": Change("0.5"), "w_vid": Change("2"), "init_pred_var": Change("1"), "eps": Change("0.1")},
    "nst": {"w_ce": Change("0.5"), "w_nst": Change("5")},
    "rkd": {"w_ce": Change("0.5"), "w_dist": Change("5"), "w_angle": Change("5")},
    "dkd": {
        "w_ce": Change("0.5"), "w_tckd": Change("2"), "w_nckd": Change("2"), "temperature": Change("2"),
        "warmup": Change("3"),  # the default, 20 of 240 epochs rescaled to this 1-epoch run, is 0 (none)
        # The preset picks β from the DKD paper's table only for its CIFAR pairs (β = 2 here, 8 under `none`).
        "nckd_preset": Change("none", pair=("cifar_resnet56", "cifar_resnet20")),
        "logit_std": Change("true"),
    },
    "fitnet": {
        "hint_stage": Change("1"), "guided_stage": Change("1"), "w_ce": Change("0.5"), "w_feat": Change("10"),
        "regressor_relu": Change("false"),
        # Two stages need a hint phase shorter than the run (the default 30 epochs is refused in 2 epochs).
        "stages": Change("2", ("fitnet.hint_epochs=1", "recipe.epochs=2")),
        "hint_epochs": Change("2", _FITNET_TWO_STAGES),
        "w_kd": Change("0.5", _FITNET_TWO_STAGES),
        "temperature": Change("2", _FITNET_TWO_STAGES),
        "logit_std": Change("true", _FITNET_TWO_STAGES),
    },
    # The pre-stage methods need 2 epochs (epoch 1 the pre-stage, 30 of 240 rescaled); their CE weight acts in the
    # second. init_epochs: the default is 1 of 3 epochs; 2 makes epoch 2 a pre-stage epoch too.
    "ab": _pre_stage({"w_ab": Change("2", _TWO_EPOCHS), "margin": Change("0.5", _TWO_EPOCHS)}),
    "fsp": _pre_stage({"w_fsp": Change("2", _TWO_EPOCHS)}),
    # FT compares the last stages, 1×1 for test_resnet at 8 px (refused): the CRD code's ResNet-8 has 2×2 maps.
    "ft": _pre_stage({name: Change(value, _TWO_EPOCHS, _RESNET8) for name, value in
                      (("w_ft", "20"), ("w_rec", "2"), ("factor_rate", "0.25"))}, _RESNET8),
    # At 8 px test_resnet's deeper stages are 1×1: one singular vector, so k acts only at 16 px.
    "kdsvd": {"w_ce": Change("0.5"), "w_svd": Change("2"), "k": Change("2", ("data.image_size=16",))},
    "crd": _crd("crd"),
    "crd+kd": _crd("crd+kd"),
    "hkd": _hkd("hkd"),
    "hkd+kd": _hkd("hkd+kd"),
    "dist": {"w_ce": Change("0.5"), "w_inter": Change("1"), "w_intra": Change("1"), "temperature": Change("2"),
             "logit_std": Change("true")},
    "ctkd": {
        "w_ce": Change("0.5"), "w_kd": Change("0.5"), "temperature_min": Change("2"), "temperature_span": Change("5"),
        "lambda_max": Change("0.5"),  # a 1-epoch run resolves the ramp to 0 epochs: λ = λ_max from the start
        "lambda_epochs": Change("2"),  # λ(1) = λ_max / 2 (1 would be λ_max again)
        "temperature_mode": Change("instance"), "logit_std": Change("true"),
    },
    "cnn2gnn": {
        "temperature": Change("2"), "w_ce": Change("0.5"), "w_kd": Change("0.5"), "graph": Change("anchor"),
        "k": Change("5"), "hidden": Change("64"), "proj_dim": Change("64"), "dropout": Change("0.1"),
        "pool": Change("4"),
        "anchors": Change("32", ("cnn2gnn.graph=anchor",)),  # the batch graph has no anchors
        # The memory's momentum acts from a sample's second visit on: two epochs of the memory graph.
        "memory_momentum": Change("0.9", ("cnn2gnn.graph=memory", "recipe.epochs=2")),
        "graph_features": Change("teacher"),
        "graph_scope": Change("global"),
        "logit_std": Change("true"),
    },
    "ofa": {"w_ce": Change("0.5"), "w_kd": Change("0.5"), "w_ofa": Change("0.5"), "eps": Change("1.5"),
            "temperature": Change("2"), "stages": Change("2,4")},
    "ofd": {"w_ce": Change("0.5"), "w_feat": Change("0.01"), "connector_kernel": Change("3")},
    "reviewkd": {
        "w_ce": Change("0.5"), "w_review": Change("2"), "max_mid_channels": Change("16"),
        "student_preact": Change("true"),
        "warmup": Change("3"),  # the default, 20 of 240 epochs rescaled to this 1-epoch run, is 0 (none)
    },
}

# (method, field) -> why no configuration shows it changing a run; such a case runs as a strict xfail, so it
# fails the day the field starts to act (then move it back to plain CHANGES).
KNOWN_DEAD: dict[tuple[str, str], str] = {
    ("cnn2gnn", "graph_scope"): "acts only in data-parallel runs (world size > 1): tests/test_distributed.py",
}


class Runs:
    """Short real runs in one results folder and one teacher zoo (the teacher trains once per module); the
    per-epoch numbers of each distinct run are kept, so a baseline shared by several fields runs once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._runs: dict[tuple, tuple[str, list[dict]]] = {}

    def numbers(self, method: str, change: Change, sets: list[str]) -> tuple[str, list[dict]]:
        """The run id and the per-epoch numbers (timings left out) of `method` in `change`'s context plus `sets`."""
        teacher, student = change.pair or (TEACHER, STUDENT_FOR.get(method, STUDENT))
        if not get_method(method).needs_teacher:
            teacher = None
        all_sets = [*BASE_SETS, *METHOD_SETS.get(method, []), *change.context, *sets]
        key = (method, teacher, student, tuple(all_sets))
        if key not in self._runs:
            record = run(method, teacher, student=student, sets=all_sets, results_dir=self.root / "results",
                         zoo_dir=self.root / "zoo", data_root=self.root / "data", **BASE)
            lines = (self.root / "results" / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
            self._runs[key] = record["run_id"], [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")}
                                                 for line in lines]
        return self._runs[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("method_settings"))


def _cases() -> list:
    cases = []
    for method, fields in sorted(CHANGES.items()):
        for field in sorted(fields):
            reason = KNOWN_DEAD.get((method, field))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            cases.append(pytest.param(method, field, id=f"{method}.{field}", marks=marks))
    return cases


def _fields(method: str) -> set[str]:
    return {f.name for f in dataclasses.fields(get_method(method).params)}


def test_every_method_field_is_listed():
    methods = list_methods()
    assert set(CHANGES) <= set(methods), f"CHANGES names unregistered methods: {sorted(set(CHANGES) - set(methods))}"
    missing = {name: sorted(_fields(name) - set(CHANGES.get(name, {}))) for name in methods}
    missing = {name: fields for name, fields in missing.items() if fields}
    assert not missing, f"add a Change to CHANGES for these method fields: {missing}"
    stale = {name: sorted(set(fields) - _fields(name)) for name, fields in CHANGES.items()}
    assert not any(stale.values()), f"CHANGES names fields the methods do not have: {stale}"
    assert set(KNOWN_DEAD) <= {(m, f) for m, fields in CHANGES.items() for f in fields}


@pytest.mark.parametrize(("method", "field"), _cases())
def test_changing_a_method_field_changes_a_short_run(runs: Runs, method: str, field: str):
    change = CHANGES[method][field]
    setting = f"{method}.{field}={change.value}"
    before_id, before = runs.numbers(method, change, [])
    after_id, after = runs.numbers(method, change, [setting])
    assert before_id != after_id, f"{setting} does not reach the run id (context {list(change.context)})"
    assert before != after, f"{setting} (context {list(change.context)}, pair {change.pair}) left every number " \
                            "of the run unchanged"
