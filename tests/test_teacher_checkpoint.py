"""A user's teacher file (`--teacher-ckpt`) is read for its digest once per run; the digest travels along."""

from __future__ import annotations

from pathlib import Path

import pytest
from safetensors.torch import save_file

import kdbench.core.storage
from kdbench.core.errors import UserError
from kdbench.core.storage import sha256_file
from kdbench.execute.api import run
from kdbench.execute.runner import TeacherCheckpoint
from kdbench.models import create_model

TINY = {"student": "gnn2", "epochs": 1, "sets": ["data.image_size=8", "student.hidden=16"], "device": "cpu"}


def _teacher_file(tmp_path: Path) -> Path:
    model = create_model("resnet18", num_classes=10, in_chans=3, image_size=8)
    path = tmp_path / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def test_the_teacher_file_is_hashed_once_per_run(tmp_path, monkeypatch):
    path = _teacher_file(tmp_path)
    hashed: list[Path] = []
    real = kdbench.core.storage.sha256_file

    def counting(p: Path, *args, **kwargs) -> str:  # the real hash, counted
        hashed.append(Path(p))
        return real(p, *args, **kwargs)

    for module in ("kdbench.core.storage", "kdbench.execute.resolve", "kdbench.teachers.zoo",
                   "kdbench.teachers.zoo_files", "kdbench.execute.build", "kdbench.execute.runner"):
        if hasattr(__import__(module, fromlist=["_"]), "sha256_file"):
            monkeypatch.setattr(f"{module}.sha256_file", counting)
    record = run("kd", teacher="resnet18", teacher_ckpt=str(path), results_dir=tmp_path / "results", **TINY)
    assert record["status"] == "completed"
    assert [p for p in hashed if p == path] == [path]
    assert record["config"]["teacher_ckpt_sha256"] == record["teacher_metrics"]["sha256"] == real(path)


def test_a_checkpoint_whose_digest_does_not_match_the_config_is_refused(tmp_path):
    path = _teacher_file(tmp_path)
    from kdbench.execute.resolve import RunOptions, resolve_config
    from kdbench.execute.runner import execute
    from kdbench.spec.paths import Paths

    config = resolve_config(RunOptions(method="kd", teacher="resnet18", teacher_ckpt=str(path), **{
        k: v for k, v in TINY.items() if k in ("student", "epochs", "sets")}))
    stale = TeacherCheckpoint(path, "0" * 64)
    with pytest.raises(UserError, match="pass the same --teacher-ckpt file"):
        execute(config, Paths(results_dir=tmp_path / "results"), teacher_ckpt=stale, device="cpu")
    assert not list((tmp_path / "results").rglob("result.json"))  # refused before any record was written
    assert config.teacher_ckpt_sha256 == sha256_file(path)
