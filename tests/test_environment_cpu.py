"""Records name the CPU that computed them (kdbench.core.cpu_numerics.cpu_info), and `--portable` computes the same bits
whatever the CPU: here "another CPU" is simulated by capping MKL's and oneDNN's instruction sets, which changes a
native run's numbers (benchmarks/cpu_portable.py shows it) and must not change a portable one's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from kdbench.cli.app import _register_commands, app
from kdbench.cli.run_config import run_options, run_params, save_run_config
from kdbench.core.cpu_numerics import configure_portable, cpu_identity, cpu_info, cpu_model
from kdbench.core.errors import UserError
from kdbench.execute.build import teacher_key
from kdbench.execute.resolve import resolve_config
from kdbench.execute.runner import execute
from kdbench.spec.paths import Paths
from kdbench.sweep.grid import expand
from kdbench.sweep.sweep_file import grid_from_options, read_sweep_file

CLI = [sys.executable, "-m", "kdbench"]
TINY = ("--method", "ce", "--student", "cifar_resnet8", "--epochs", "1", "--set", "data.image_size=8",
        "--device", "cpu")
EPOCH_FIELDS = ("losses", "lr", "top1", "top5", "eval_loss", "train_top1")
# What an AVX2-only CPU would do in MKL and oneDNN (ATen's level is fixed to DEFAULT by --portable itself).
AVX2_CPU = {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def test_cpu_info_names_the_cpu_and_the_kernels_it_dispatches_to():
    cpu = cpu_info()
    assert cpu["model"].startswith(cpu_model()["name"]) and cpu["model"] != "None"
    assert cpu["capability"] == torch.backends.cpu.get_cpu_capability()
    assert cpu["capability_env"] == os.environ.get("ATEN_CPU_CAPABILITY")
    assert cpu["mkldnn_enabled"] == torch.backends.mkldnn.enabled
    if torch.backends.mkl.is_available():  # MKL in force: its own choice (OFF) unless MKL_CBWR fixed one
        assert cpu["mkl_branch"] == (os.environ.get("MKL_CBWR") or "OFF") and cpu["mkl_auto_branch"] and cpu["mkl"]
    identity = cpu_identity({"cpu": cpu, "device": {"torch_threads": 1}})
    assert identity is not None and identity["model"] == cpu["model"] and identity["torch_build"] == torch.__version__
    # A record from before records named their CPU:
    assert cpu_identity({"versions": {"torch": "2"}, "device": {"torch_threads": 1}}) is None


def test_a_run_record_and_its_zoo_teacher_card_name_the_cpu(dirs):
    record = execute(resolve_config(run_options(_params("--method", "kd", "--teacher", "cifar_resnet8",
                                                        "--student", "cifar_resnet8", "--epochs", "1",
                                                        "--teacher-epochs", "1", "--set", "data.image_size=8",
                                                        "--set", "data.train_fraction=0.2"))),
                     Paths(dirs["results"], dirs["zoo"], dirs["data"]), device="cpu")
    assert record["environment"]["cpu"] == cpu_info() and record["environment"]["determinism"]["portable"] is False
    card = json.loads(next(dirs["zoo"].rglob("card.json")).read_text())
    assert card["environment"]["cpu"] == cpu_info()


def test_portable_refuses_in_a_process_that_has_computed_already():
    torch.ones(2) + 1  # this process's kernels are chosen from here on
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this process runs at ATen's DEFAULT level already")
    before = {k: os.environ.get(k) for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    with pytest.raises(UserError, match="start a fresh process"):
        configure_portable()
    assert torch.backends.mkldnn.enabled and torch.get_num_threads() == 1  # refused before it changed anything
    assert {k: os.environ.get(k) for k in before} == before  # nor the environment later subprocesses inherit


NATIVE_AFTER_PORTABLE = """
import sys
from kdbench import run
from kdbench.core.errors import UserError
common = dict(student="cifar_resnet8", epochs=1, sets=["data.image_size=8"], device="cpu", results_dir=sys.argv[1],
              zoo_dir=sys.argv[2])
first = run("ce", portable=True, **common)
assert first["status"] == "completed", first["status"]
try:
    run("ce", **common)
except UserError as e:
    print("refused:", e)
else:
    print("ran natively with portable kernels")
"""


def test_a_native_run_is_refused_in_a_process_that_ran_a_portable_one(tmp_path: Path):
    """Its numbers would be the portable kernels' under the native run's id (a second run in one session)."""
    done = subprocess.run([sys.executable, "-c", NATIVE_AFTER_PORTABLE, str(tmp_path / "r"), str(tmp_path / "z")],
                          capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: this process ran a --portable run" in done.stdout, done.stdout
    assert len(list((tmp_path / "r" / "runs").iterdir())) == 1  # the native run left no record


def _params(*args: str) -> dict:
    _register_commands()
    ctx = typer.main.get_command(app).commands["run"].make_context("run", list(args))
    return run_params(ctx, ctx.params.get("config"))


def test_portable_is_another_run_id_and_a_saved_config_keeps_it(tmp_path: Path):
    native, portable = (resolve_config(run_options(_params(*TINY, *extra))) for extra in ((), ("--portable",)))
    assert portable.portable and portable.run_id != native.run_id
    assert "portable" not in native.to_dict()  # off: left out, so every existing run id stays what it was
    save_run_config(tmp_path / "p.yaml", _params(*TINY, "--portable"))
    assert "portable: true" in (tmp_path / "p.yaml").read_text()
    assert resolve_config(run_options(_params("--config", str(tmp_path / "p.yaml")))).run_id == portable.run_id


def test_a_sweep_file_with_portable_plans_portable_runs_and_teachers(tmp_path: Path):
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [ce, kd]\nteachers: [cifar_resnet8]\nepochs: 1\nteacher_epochs: 1\nportable: true\n")
    runs = expand(grid_from_options(read_sweep_file(path)))
    assert {r.config.method for r in runs} == {"ce", "kd"} and all(r.config.portable for r in runs)
    kd = next(r.config for r in runs if r.config.method == "kd")
    native_kd = resolve_config(run_options(_params("--method", "kd", "--teacher", "cifar_resnet8", "--epochs", "1",
                                                   "--teacher-epochs", "1")))
    assert teacher_key(kd).portable and teacher_key(kd).digest != teacher_key(native_kd).digest  # own zoo entry


def _portable_run(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[dict, list[dict]]:
    results = tmp_path / name
    done = subprocess.run([*CLI, "run", *TINY, "--portable", "--json", "--results-dir", str(results),
                           "--zoo-dir", str(tmp_path / "zoo")], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **env})
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads(done.stdout)
    lines = (results / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    return record, [{k: e[k] for k in EPOCH_FIELDS} for e in map(json.loads, lines)]


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="--portable fixes MKL's branch: an MKL build")
def test_portable_runs_compute_the_same_bits_on_a_cpu_with_fewer_instructions(tmp_path: Path):
    record, epochs = _portable_run(tmp_path, "here", {})
    other, other_epochs = _portable_run(tmp_path, "avx2", AVX2_CPU)
    assert other["run_id"] == record["run_id"] and other_epochs == epochs
    assert other["metrics"] == record["metrics"]
    assert other["environment"]["cpu"]["onednn_max_isa_env"] == "AVX2"
    cpu = record["environment"]["cpu"]
    assert (cpu["capability"], cpu["mkl_branch"], cpu["mkldnn_enabled"], cpu["nnpack_enabled"]) == \
        ("DEFAULT", "COMPATIBLE", False, False)
    assert record["threads"]["torch_threads"] == 1 and record["environment"]["determinism"]["portable"] is True
    assert cpu_identity(other["environment"]) == cpu_identity(record["environment"])
