"""Reading a file never runs code: crafted pickles in a results folder, a teacher file or the teacher zoo are
refused (one line, exit 2, or a restart from scratch), never obeyed; the store's files follow the umask."""

from __future__ import annotations

import json
import os
import pickle
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import torch
from submitit.core.utils import JobPaths

from kdbench.core.errors import UserError
from kdbench.core.progress import Reporter
from kdbench.core.safe_load import (
    UnsafeCheckpointError,
    UnusableCheckpointError,
    check_plain,
    load_plain_checkpoint,
    load_plain_weights,
)
from kdbench.core.storage import atomic_torch_save, atomic_write_json, sha256_file
from kdbench.execute.api import run
from kdbench.execute.create_teacher import create_teacher
from kdbench.store.exports import remove_exports
from kdbench.store.records import RunStore
from kdbench.sweep.status import local_job_states
from kdbench.sweep.submit import private_folder
from kdbench.train.checkpoint import load_checkpoint, save_checkpoint

CLI = [sys.executable, "-m", "kdbench"]
# cifar_resnet8 (78 k parameters) rather than the default ResNet-18: what is tested is the file handling, and
# a 2-epoch ResNet-18 made this module take minutes.
TINY = {"epochs": 2, "student": "cifar_resnet8", "sets": ["data.image_size=8"], "device": "cpu"}
TINY_ARGS = ["--method", "ce", "--student", "cifar_resnet8", "--epochs", "2", "--set", "data.image_size=8", "--device",
             "cpu"]
REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this runs a shell command that creates `marker`: what an attacker would put in a checkpoint."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def write_crafted(path: Path, marker: Path, fmt: str = "torch") -> Path:
    """A crafted checkpoint at `path`: a torch zip file (`torch.save`) or a bare pickle holding the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"model": Payload(marker), "optimizer": {}, "scaler": {}, "history": []}
    if fmt == "torch":
        torch.save(state, path)
    else:
        path.write_bytes(pickle.dumps(state))
    return path


def kdbench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          env=os.environ.copy())


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def without_times(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "resumed_from_epoch"}


class Collect(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted 2-epoch run, written under umask 022: the reference numbers and a template folder."""
    results = tmp_path_factory.mktemp("clean")
    old = os.umask(0o022)
    try:
        record = run("ce", results_dir=results, **TINY)
    finally:
        os.umask(old)
    assert record["status"] == "completed"
    return results, record


def copy_of(clean_run: tuple[Path, dict], dest: Path) -> tuple[Path, RunStore, str]:
    results, record = clean_run
    shutil.copytree(results, dest)
    return dest, RunStore(dest), record["run_id"]


# ---------------------------------------------------------------------------------------------------------
# The loader itself


@pytest.mark.parametrize("fmt", ["torch", "pickle"])
def test_the_crafted_file_is_live_and_the_safe_loader_refuses_it(tmp_path, fmt):
    crafted = write_crafted(tmp_path / "checkpoint.pt", tmp_path / "marker", fmt)
    with pytest.raises(UnsafeCheckpointError, match=re.escape(f"not a plain tensor checkpoint: {crafted}")) as ei:
        load_plain_checkpoint(crafted)
    assert "unsupported" in ei.value.reason.lower()  # what the loader refused, kept for whoever investigates
    assert not (tmp_path / "marker").exists()
    assert issubclass(UnsafeCheckpointError, UserError)
    # The payload is real: the unsafe loader kdbench used to call runs it (so the tests below test something).
    if fmt == "torch":
        torch.load(crafted, weights_only=False)
    else:
        pickle.loads(crafted.read_bytes())
    assert (tmp_path / "marker").exists()


def test_a_crafted_safetensors_file_is_refused_and_real_weights_load(tmp_path):
    fake = write_crafted(tmp_path / "model.safetensors", tmp_path / "marker")
    with pytest.raises(UnsafeCheckpointError):
        load_plain_weights(fake)
    real = tmp_path / "real.pt"
    torch.save({"w": torch.ones(2)}, real)
    assert torch.equal(load_plain_weights(real)["w"], torch.ones(2))
    assert not (tmp_path / "marker").exists()


def test_a_checkpoint_is_saved_only_as_plain_data_and_a_misfit_restores_nothing(tmp_path):
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, opt, scaler, [])
    torch.load(path, weights_only=True)  # what the safe loader accepts
    with pytest.raises(TypeError, match="Linear"):
        check_plain({"model": model})

    other = torch.nn.Linear(2, 4)  # a plain checkpoint, but not this model's: refused before anything changes
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    before = {k: v.clone() for k, v in other.state_dict().items()}
    with pytest.raises(UnusableCheckpointError, match="does not hold this run's state"):
        load_checkpoint(path, other, other_opt, scaler)
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())
    assert other_opt.state_dict()["state"] == {}


def test_a_checkpoint_whose_weights_are_relabelled_restores_nothing(tmp_path):
    # Issue #34: float32 bytes labelled int32 pass a shape check, and load_state_dict would cast them to
    # other weights without a word. The checkpoint is refused before anything changes.
    model = torch.nn.Linear(2, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, opt, scaler, [])
    state = torch.load(path, weights_only=True)
    state["model"]["weight"] = state["model"]["weight"].view(torch.int32)
    torch.save(state, path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnusableCheckpointError, match="does not hold this run's state"):
        load_checkpoint(path, model, opt, scaler)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------------------
# A run's checkpoint


def test_eval_refuses_a_crafted_checkpoint_in_one_line(clean_run, tmp_path):
    results, store, run_id = copy_of(clean_run, tmp_path / "results")
    remove_exports(store.run_dir(run_id))  # a run from before student exports: eval reads its checkpoint
    marker = tmp_path / "marker"
    crafted = write_crafted(store.checkpoint_path(run_id), marker)
    res = kdbench("eval", run_id, "--batch-sizes", "4", "--results-dir", results, "--device", "cpu")
    assert res.returncode == 2, res.stderr
    assert lines(res.stderr) == [f"error: not a plain tensor checkpoint: {crafted}"]
    assert "Traceback" not in res.stderr
    assert not marker.exists()


def test_resuming_from_a_crafted_checkpoint_stops_under_strict_and_restarts_from_scratch_otherwise(
        clean_run, tmp_path):
    results, store, run_id = copy_of(clean_run, tmp_path / "results")
    marker = tmp_path / "marker"
    crafted = write_crafted(store.checkpoint_path(run_id), marker)
    record = store.load(run_id)
    record["status"] = "failed"  # as left by an interrupted run: the next `kdbench run` resumes it
    atomic_write_json(store.result_path(run_id), record)

    strict = kdbench("run", *TINY_ARGS, "--results-dir", results, "--strict")
    assert strict.returncode == 2, strict.stderr
    assert "Traceback" not in strict.stderr
    assert [ln for ln in lines(strict.stderr) if "error" in ln] == [
        f"error: not a plain tensor checkpoint: {crafted}"]
    assert not marker.exists()

    res = kdbench("run", *TINY_ARGS, "--results-dir", results, "--json")
    assert res.returncode == 0, res.stderr
    squeezed = "".join(res.stderr.split())  # rich wraps a long log line, even inside the path
    assert "".join(f"warning: not a plain tensor checkpoint: {crafted}; starting this run again".split()) in squeezed
    assert "Traceback" not in res.stderr
    resumed = json.loads(res.stdout)
    assert resumed["metrics"]["resumed_from_epoch"] == 0
    assert resumed["resume_refused"] == f"not a plain tensor checkpoint: {crafted}"
    assert without_times(resumed["metrics"]) == without_times(clean_run[1]["metrics"])  # a true fresh start
    assert not marker.exists()
    assert not crafted.exists()  # replaced by the run's own checkpoint, removed once the run completed
    load_plain_weights(store.run_dir(run_id) / "student.safetensors")


def test_resume_after_kill_9_gives_the_uninterrupted_numbers(clean_run, tmp_path):
    results = tmp_path / "results"
    proc = subprocess.Popen([*CLI, "run", *TINY_ARGS, "--results-dir", str(results)], env=os.environ.copy(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = results / "runs" / clean_run[1]["run_id"] / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        # The engine saves the epoch's checkpoint before it writes the epoch's metrics line.
        while not (metrics.exists() and metrics.read_text().count("\n") >= 1):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before epoch 1 was saved"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    resumed = run("ce", results_dir=results, **TINY)
    assert resumed["metrics"]["resumed_from_epoch"] == 1
    assert without_times(resumed["metrics"]) == without_times(clean_run[1]["metrics"])


# ---------------------------------------------------------------------------------------------------------
# Teacher files


def test_a_crafted_teacher_ckpt_is_refused_in_one_line(tmp_path):
    marker = tmp_path / "marker"
    crafted = write_crafted(tmp_path / "teacher.pt", marker)
    res = kdbench("run", "--method", "kd", "--teacher", "resnet18", "--teacher-ckpt", crafted, "--epochs", "1",
                  "--set", "data.image_size=8", "--device", "cpu", "--results-dir", tmp_path / "results")
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert [ln for ln in lines(res.stderr) if "error" in ln] == [f"error: not a plain tensor checkpoint: {crafted}"]
    assert not marker.exists()


def test_crafted_files_in_the_teacher_zoo_are_rejected_and_the_teacher_retrained(tmp_path):
    tiny = {"epochs": 1, "sets": ["data.image_size=8"], "device": "cpu", "zoo_dir": tmp_path / "zoo"}
    _, card = create_teacher("cifar_resnet8", **tiny)
    entry = Path(card["path"])
    marker = tmp_path / "marker"
    # The cached weights replaced by a pickle, its card forged to match, and a crafted training checkpoint.
    write_crafted(entry / "model.safetensors", marker)
    forged = {**json.loads((entry / "card.json").read_text()), "sha256": sha256_file(entry / "model.safetensors")}
    atomic_write_json(entry / "card.json", forged)
    write_crafted(entry / "work" / "checkpoint.pt", marker)

    log = Collect()
    _, again = create_teacher("cifar_resnet8", reporter=log, **tiny)
    assert not marker.exists()
    assert again["cached"] is False and again["sha256"] == card["sha256"]  # retrained from scratch, same weights
    assert any("not a plain tensor checkpoint" in line and "rejected" in line for line in log.lines)
    assert any(f"warning: not a plain tensor checkpoint: {entry / 'work' / 'checkpoint.pt'}" in line
               for line in log.lines)


# ---------------------------------------------------------------------------------------------------------
# Other readers and writers


def test_submitit_result_files_are_read_without_running_them(tmp_path):
    folder = tmp_path / "submitit"
    done, crafted = "999999991", "999999992"  # pids of no live process
    for job_id, value in ((done, ("success", [{"run_id": "x", "metrics": {"top1_last": 1.0}}])),
                          (crafted, ("success", Payload(tmp_path / "marker")))):
        path = JobPaths(folder, job_id, task_id=0).result_pickle
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cloudpickle.dumps(value))  # what submitit writes
    assert local_job_states(folder, [done, crafted]) == {done: "COMPLETED", crafted: "FAILED"}
    assert not (tmp_path / "marker").exists()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664), (0o000, 0o664)])
def test_store_files_follow_the_umask_and_are_never_world_writable(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        atomic_write_json(tmp_path / "result.json", {"a": 1})
        atomic_torch_save({"w": torch.ones(1)}, tmp_path / "checkpoint.pt")
    finally:
        os.umask(old)
    assert (tmp_path / "result.json").stat().st_mode & 0o777 == mode
    assert (tmp_path / "checkpoint.pt").stat().st_mode & 0o777 == mode


def test_a_real_runs_files_are_0644_under_umask_022(clean_run):
    results, record = clean_run
    run_dir = RunStore(results).run_dir(record["run_id"])
    for name in ("result.json", "metrics.jsonl", "student.safetensors", "student_best.safetensors", "student.json"):
        assert (run_dir / name).stat().st_mode & 0o777 == 0o644, name


def test_no_code_path_unpickles_or_yaml_loads_arbitrary_objects():
    """Every torch file goes through kdbench/core/safe_load.py; no pickle.load, yaml.load, eval( or cloudpickle."""
    unsafe = re.compile(r"torch\.load\(|pickle\.loads?\(|yaml\.load\(|yaml\.unsafe_load|weights_only=False"
                        r"|cloudpickle|(?<![\w.])eval\(|(?<![\w.])exec\(|\bUnpickler\(")
    found = []
    for path in [*REPO.joinpath("kdbench").rglob("*.py"), *REPO.joinpath("methods").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if unsafe.search(line) and path.name != "safe_load.py":
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
    safe = REPO.joinpath("kdbench", "core", "safe_load.py").read_text()
    calls = [line for line in safe.splitlines() if "torch.load(" in line]
    assert calls and all("weights_only=True" in line for line in calls)


def test_submitits_folder_of_job_pickles_is_private(tmp_path):
    folder = tmp_path / "results" / "submitit" / "sweep1"
    old = os.umask(0o022)
    try:
        private_folder(folder)
    finally:
        os.umask(old)
    assert (folder.stat().st_mode & 0o777, folder.parent.stat().st_mode & 0o777) == (0o700, 0o700)


def test_timm_cannot_be_asked_to_read_a_weights_file_itself(tmp_path):
    from kdbench.models.zoo import create_model

    crafted = write_crafted(tmp_path / "w.pth", tmp_path / "marker")
    with pytest.raises(UserError, match="checkpoint_path is not accepted"):
        create_model("resnet18", num_classes=10, checkpoint_path=str(crafted))
    assert not (tmp_path / "marker").exists()


def test_cifar_file_diagnosis_reads_numpy_arrays_and_refuses_anything_else(tmp_path):
    import numpy as np

    from kdbench.core.safe_load import RefusedPickle
    from kdbench.data.cifar import read_pickle

    honest = tmp_path / "data_batch_1"
    honest.write_bytes(pickle.dumps({"data": np.arange(6, dtype=np.uint8).reshape(2, 3), "labels": [1, 2]}))
    assert read_pickle(honest)["data"].tolist() == [[0, 1, 2], [3, 4, 5]]
    marker = tmp_path / "marker"
    crafted = write_crafted(tmp_path / "train", marker, fmt="pickle")
    with pytest.raises(RefusedPickle):
        read_pickle(crafted)
    assert not marker.exists()
