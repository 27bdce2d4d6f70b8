"""Every feature method on teacher/student pairs whose widths, depths and map sizes differ (one training step
each), end to end through `kdbench.run` on digits, and listed by `kdbench methods` with paper and defaults."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest
import torch

import kdbench
from kdbench.cli.app import main
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method, list_methods

LOSSES = {
    "fitnet": {"ce", "hint"},
    "rkd": {"ce", "rkd_dist", "rkd_angle"},
    "crd": {"ce", "crd"},
    "crd+kd": {"ce", "crd", "kd"},
    "hkd": {"ce", "hkd_individual", "hkd_holistic"},
    "hkd+kd": {"ce", "hkd_individual", "hkd_holistic", "kd"},
    "dkd": {"ce", "dkd"},
    "at": {"ce", "at"},
    "pkt": {"ce", "pkt"},
    "sp": {"ce", "sp"},
    "cc": {"ce", "cc"},
    "vid": {"ce", "vid"},
    "nst": {"ce", "nst"},
}
# Methods whose own modules train with the student (regressor, embedding heads, graph convolutions).
WITH_MODULES = {"fitnet", "crd", "crd+kd", "hkd", "hkd+kd", "cc", "vid"}
# (teacher, student, image side): VGG needs ≥ 32 px in timm; the others run at 16 to stay fast.
PAIRS = [
    ("resnet152", "resnet18", 16),
    ("wide_resnet50_2", "mobilenetv3_small_100", 16),
    ("vgg11", "resnet18", 32),
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # On a shared 2-core machine two intra-op threads per process thrash; one is 5-10× faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def pair(request):
    teacher, student, side = request.param
    torch.manual_seed(0)
    return (create_model(teacher, num_classes=10, image_size=side),
            create_model(student, num_classes=10, image_size=side), side)


def test_every_method_here_is_registered():
    assert set(LOSSES) <= set(list_methods())


@pytest.mark.parametrize("method", sorted(LOSSES))
def test_one_training_step_on_mismatched_pairs(pair, method):
    teacher, student, side = pair
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=side, num_train=32,
                        train_targets=torch.arange(32) % 10, epochs=2, seed=0)
    spec = get_method(method)
    # A fresh student per method; the frozen teacher is shared (the methods only hook it).
    d = spec.cls(copy.deepcopy(student), teacher, spec.params, ctx).train()
    d.on_epoch_start(1)
    index = torch.tensor([0, 11, 22, 5])
    logits, losses = d.forward_train(Batch(torch.randn(4, 3, side, side), index % 10, index))
    assert logits.shape == (4, 10)
    assert set(losses) == LOSSES[method]
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    missing = [n for n, p in d.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing  # student and the method's own modules (regressor / embed heads) all learn
    assert all(p.grad is None for p in d.teacher.parameters())
    extra = [n for n, _ in d.named_parameters() if not n.startswith("student.")]
    assert bool(extra) == (method in WITH_MODULES)  # RKD, DKD, AT and PKT add nothing


@pytest.fixture(scope="module")
def shared_zoo(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zoo")  # one zoo for the module: the teacher trains once


@pytest.mark.parametrize("method", ["fitnet", "rkd", "crd", "hkd", "dkd", "at", "pkt"])
def test_end_to_end_run_on_digits_logs_the_methods_losses(method, dirs, shared_zoo):
    # Small models (a tenth of resnet18's time at 8 px): what is checked is the wiring of a whole run, the
    # mismatched widths and depths being the one-step tests' job above.
    record = kdbench.run(method, teacher="cifar_resnet8", student="test_resnet", dataset="digits", epochs=1,
                         teacher_epochs=1, sets=["data.image_size=8"], results_dir=dirs["results"],
                         zoo_dir=shared_zoo, data_root=dirs["data"])
    assert record["status"] == "completed"
    lines = (dirs["results"] / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    assert set(json.loads(lines[0])["losses"]) == LOSSES[method] | {"total"}
    # FitNet's regressor, CRD's embed heads, HKD's heads and graph convolutions train with the student.
    assert (record["student_info"]["method_extra_params"] > 0) == (method in WITH_MODULES)
    if method == "crd":
        info = record["method_info"]
        assert info["n_data"] == record["data"]["num_train"] == 1437
        assert 0 < info["nce_k"] < 1437 and info["nce_k_requested"] == 16384
        assert info["memory_bank_bytes"] == 2 * 1437 * 128 * 4
    if method == "hkd":
        info = record["method_info"]
        assert (info["n_data"], info["k"], info["memory_bank_bytes"]) == (1437, 8, 2 * 1437 * 128 * 4)
        assert 0 < info["nce_k"] < 1437
    if method == "dkd":  # the β the run used is in its config (hence its id) and its record
        assert record["config"]["method_params"]["w_nckd"] == record["method_info"]["w_nckd"] == 8.0


def table_rows(text: str) -> dict[str, str]:
    """Rich table rows by first cell, with the lines a wrapped row continues on joined to it."""
    rows: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        cells = line.split("│")
        if len(cells) < 3:
            continue
        if cells[1].strip():
            current = cells[1].strip()
            rows[current] = ""
        if current is not None:
            rows[current] += " " + " ".join(c.strip() for c in cells[2:])
    return rows


def test_methods_command_lists_paper_and_defaults(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "400")  # one line per row: rich reads the width when it prints
    monkeypatch.setattr(sys, "argv", ["kdbench", "methods"])
    with pytest.raises(SystemExit) as done:
        main()
    assert done.value.code in (0, None)
    out = capsys.readouterr()
    rows = table_rows(out.out + out.err)
    for name, paper, defaults in [
        ("fitnet", "Romero", ["hint_stage=None", "w_ce=1.0", "w_feat=100.0", "stages=1"]),
        ("rkd", "Park", ["w_ce=1.0", "w_dist=25.0", "w_angle=50.0"]),
        ("crd", "Tian", ["w_ce=1.0", "w_crd=0.8", "w_kd=0.0", "feat_dim=128", "nce_k=16384", "nce_t=0.07",
                         "nce_m=0.5"]),
        ("crd+kd", "Tian", ["w_crd=0.8", "w_kd=1.0", "nce_k=16384"]),
        ("hkd", "Zhou", ["w_ce=1.0", "w_hkd=3.0", "w_kd=0.0", "feat_dim=128", "k=8", "nce_k=16384", "nce_t=0.07",
                         "nce_m=0.9"]),
        ("hkd+kd", "Zhou", ["w_hkd=3.0", "w_kd=1.0", "temperature=4.0"]),
        ("dkd", "Zhao", ["w_ce=1.0", "w_tckd=1.0", "w_nckd=None", "temperature=4.0", "warmup=None",
                         "nckd_preset=published"]),
        ("at", "Zagoruyko", ["w_ce=1.0", "w_at=1000.0", "pairs=auto"]),
        ("pkt", "Passalis", ["w_ce=1.0", "w_pkt=30000.0"]),
        ("dist", "Huang", ["w_ce=1.0", "w_inter=2.0", "w_intra=2.0", "temperature=4.0", "logit_std=False"]),
        ("ctkd", "Li", ["w_ce=0.1", "w_kd=0.9", "temperature_min=1.0", "temperature_span=20.0",
                        "temperature_mode=global", "logit_std=False"]),
    ]:
        assert name in rows, f"{name} not listed"
        assert paper in rows[name] and all(d in rows[name] for d in defaults), rows[name]
