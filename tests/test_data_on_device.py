"""`--data-on-device auto|on|off` (run(data_on_device=...)): where a GPU run keeps an in-memory set. The choice
reaches the loaders (built here for a "cuda" device, which a loader touches only when iterated, so no GPU is
needed to see where it would serve from), a run's record says where its batches came from, the option is refused
with the valid words, and a saved config keeps it. Not in the run id: the numbers are the same either way
(the keyed crops are the same bits on CPU and CUDA: tests/test_keyed_augmentation.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer

from kdbench.cli.app import _register_commands, app
from kdbench.cli.run_config import run_machine, run_options, run_params, save_run_config
from kdbench.execute import api, runner
from kdbench.execute.build import build_loaders, load_data
from kdbench.execute.resolve import resolve_config
from kdbench.store.record_builder import served_block

TINY = ("--method", "ce", "--student", "cifar_resnet8", "--epochs", "1", "--set", "data.image_size=8",
        "--device", "cpu")
GPU = torch.device("cuda")


def _params(*args: str) -> dict:
    _register_commands()
    ctx = typer.main.get_command(app).commands["run"].make_context("run", list(args))
    return run_params(ctx, ctx.params.get("config"))


@pytest.fixture(scope="module")
def digits():
    config = resolve_config(run_options(_params(*TINY)))
    return config, load_data(config, None)


@pytest.mark.parametrize(("on_device", "env", "served"), [
    (True, None, "cuda"), (False, None, "cpu"),
    (None, None, "cuda"),  # auto: a set that fits 4 GiB stays on the GPU
    (None, "0", "cpu"), (True, "0", "cuda"),  # the environment decides only what the option leaves open
])
def test_the_choice_reaches_every_loader_of_a_gpu_run(digits, monkeypatch, on_device, env, served):
    if env is None:
        monkeypatch.delenv("KDBENCH_DATA_ON_DEVICE", raising=False)
    else:
        monkeypatch.setenv("KDBENCH_DATA_ON_DEVICE", env)
    config, data = digits
    loaders = build_loaders(config, data, GPU, on_device=on_device)
    assert served_block(loaders.train) == {"from": "memory", "device": served}
    assert served_block(loaders.test) == {"from": "memory", "device": served}


def test_a_cpu_run_serves_from_the_host_and_records_it(dirs, monkeypatch):
    given = []
    real = runner.build_loaders

    def spy(*args, **kwargs):  # the real loaders, with what they were asked for noted
        given.append(kwargs.get("on_device"))
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "build_loaders", spy)
    record = api.run("ce", student="cifar_resnet8", epochs=1, sets=["data.image_size=8"], device="cpu",
                        results_dir=dirs["results"], zoo_dir=dirs["zoo"], data_root=dirs["data"],
                        data_on_device=False)
    assert given == [False]
    assert record["status"] == "completed" and record["data"]["served"] == {"from": "memory", "device": "cpu"}


@pytest.mark.parametrize(("word", "value"), [("auto", None), ("on", True), ("off", False), ("OFF", False)])
def test_the_words_mean_what_they_say_and_stay_out_of_the_run_id(word, value):
    params = _params(*TINY, "--data-on-device", word)
    assert run_machine(params).data_on_device is value
    assert resolve_config(run_options(params)).run_id == resolve_config(run_options(_params(*TINY))).run_id


def test_another_word_is_refused_with_the_valid_ones(tmp_path: Path):
    done = subprocess.run([sys.executable, "-m", "kdbench", "run", *TINY, "--data-on-device", "gpu",
                           "--results-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "--data-on-device 'gpu': allowed: auto, on, off" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_saved_config_keeps_the_choice(tmp_path: Path):
    save_run_config(tmp_path / "off.yaml", _params(*TINY, "--data-on-device", "off"))
    assert "data_on_device: 'off'" in (tmp_path / "off.yaml").read_text()
    assert run_machine(_params("--config", str(tmp_path / "off.yaml"))).data_on_device is False
    # A file written by hand with YAML's bare off (a boolean) means the same.
    (tmp_path / "bare.yaml").write_text("method: ce\nstudent: cifar_resnet8\ndata_on_device: off\n")
    assert run_machine(_params("--config", str(tmp_path / "bare.yaml"))).data_on_device is False
    save_run_config(tmp_path / "auto.yaml", _params(*TINY))
    assert "data_on_device" not in (tmp_path / "auto.yaml").read_text()
