"""The teacher zoo trains once, caches with a sha256 card, rejects corrupted files, and survives concurrency."""

from __future__ import annotations

import json
import multiprocessing as mp
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from kdbench.core.progress import Reporter
from kdbench.core.storage import sha256_file
from kdbench.execute.api import run
from kdbench.execute.create_teacher import create_teacher
from kdbench.teachers.zoo import TeacherZoo

TINY = {"epochs": 1, "sets": ["data.image_size=8"], "device": "cpu"}
# The zoo is what is tested, not the architecture: the CRD codebase's ResNet-8 (78 k parameters) trains an epoch in a
# tenth of ResNet-18's time. Runs that distil from it use it as student too.
ARCH = "cifar_resnet8"


class Collect(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def test_a_teacher_is_trained_once_then_loaded_with_a_verified_checksum(tmp_path):
    model, card = create_teacher(ARCH, zoo_dir=tmp_path, **TINY)
    assert card["cached"] is False and card["epochs"] == 1 and 0 <= card["top1"] <= 100
    entry = Path(card["path"])
    assert card["sha256"] == sha256_file(entry / "model.safetensors")
    on_disk = json.loads((entry / "card.json").read_text())
    assert on_disk["environment"]["versions"]["timm"] and on_disk["train_s"] > 0
    again, card2 = create_teacher(ARCH, zoo_dir=tmp_path, **TINY)
    assert card2["cached"] is True and card2["sha256"] == card["sha256"]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert [c["arch"] for c in TeacherZoo(tmp_path).cards()] == [ARCH]


def test_a_checksum_mismatch_rejects_the_file_and_retrains(tmp_path):
    _, card = create_teacher(ARCH, zoo_dir=tmp_path, **TINY)
    weights = Path(card["path"]) / "model.safetensors"
    save_file({"tampered": torch.zeros(3)}, str(weights))
    log = Collect()
    _, card2 = create_teacher(ARCH, zoo_dir=tmp_path, reporter=log, **TINY)
    assert card2["cached"] is False
    assert any("checksum mismatch" in line and "rejected" in line for line in log.lines)
    assert (weights.parent / "model.safetensors.rejected").exists()
    assert sha256_file(weights) == card2["sha256"]


def test_different_recipes_or_seeds_are_different_zoo_entries(tmp_path):
    _, a = create_teacher(ARCH, zoo_dir=tmp_path, **TINY)
    _, b = create_teacher(ARCH, zoo_dir=tmp_path, seed=1, **TINY)
    assert a["path"] != b["path"] and len(TeacherZoo(tmp_path).cards()) == 2


def _train_in_process(zoo: str, queue) -> None:
    _, card = create_teacher(ARCH, zoo_dir=zoo, **TINY)
    queue.put((card["cached"], card["sha256"]))


def test_concurrent_runs_needing_the_same_teacher_train_it_once(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_train_in_process, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert sorted(cached for cached, _ in results) == [False, True]  # one trained, the other waited and loaded
    assert results[0][1] == results[1][1]
    assert not list(tmp_path.rglob("*.tmp"))


def test_runs_share_the_zoo_teacher_and_record_its_metrics(tmp_path):
    shared = {"teacher": ARCH, "student": ARCH, "teacher_epochs": 1, "zoo_dir": tmp_path / "zoo",
              "results_dir": tmp_path}
    first = run("kd", **shared, **TINY)
    second = run("kd", seed=1, **shared, **TINY)
    assert first["teacher_metrics"]["cached"] is False and second["teacher_metrics"]["cached"] is True
    assert first["teacher_metrics"]["sha256"] == second["teacher_metrics"]["sha256"]
    teacher, _ = create_teacher(ARCH, zoo_dir=tmp_path / "zoo", **TINY)  # the zoo's own copy, loaded
    assert first["teacher_metrics"]["params"] == sum(p.numel() for p in teacher.parameters())


def test_a_users_own_teacher_checkpoint_is_loaded_and_hashed_into_the_run(tmp_path):
    model, card = create_teacher(ARCH, zoo_dir=tmp_path / "zoo", **TINY)
    ckpt = tmp_path / "mine.pt"
    torch.save({"state_dict": model.state_dict()}, ckpt)
    r = run("kd", teacher=ARCH, student=ARCH, teacher_ckpt=str(ckpt), results_dir=tmp_path, **TINY)
    assert r["status"] == "completed"
    assert r["config"]["teacher_ckpt_sha256"] == sha256_file(ckpt)
    assert r["teacher_metrics"]["user_checkpoint"] is True
    assert r["teacher_metrics"]["top1"] == pytest.approx(card["top1"])
