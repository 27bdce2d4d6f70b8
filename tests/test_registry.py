"""Method registry: decorator registration, duplicates refused, close-name suggestions, entry-point plugins."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from kdbench.core.errors import UserError
from kdbench.core.registry import Registry
from kdbench.train.method import Distiller, get_method, list_methods, register_method


def test_builtin_methods_are_registered_with_papers_and_defaults():
    assert {"ce", "kd"} <= set(list_methods())
    kd = get_method("kd")
    assert "Hinton" in kd.paper
    assert kd.defaults() == {"temperature": 4.0, "w_ce": 0.1, "w_kd": 0.9, "logit_std": False}
    assert kd.needs_teacher and not get_method("ce").needs_teacher


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_method("kd", paper="x")(type("Again", (Distiller,), {}))


def test_only_distillers_can_be_registered():
    with pytest.raises(TypeError, match="Distiller subclass"):
        register_method("not-a-method", paper="x")(object)  # type: ignore[arg-type]


def test_unknown_name_suggests_and_lists():
    reg: Registry[int] = Registry("thing")
    reg.add("alpha", 1)
    reg.add("beta", 2)
    with pytest.raises(UserError) as err:
        reg.get("alpah")
    assert "Did you mean alpha" in str(err.value) and "Valid: alpha, beta" in str(err.value)


PLUGIN = '''
"""A third-party method whose loss is NaN: exercises entry points and the `diverged` status together."""
from dataclasses import dataclass
import torch
from kdbench.train.method import Distiller, register_method

@dataclass(frozen=True)
class P:
    w_ce: float = 1.0

@register_method("nan-plugin", paper="test plugin", params=P())
class NaNPlugin(Distiller):
    needs_teacher = False
    def forward_train(self, batch):
        logits = self.student(batch.images)
        return logits, {"ce": logits.sum() * float("nan")}
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    (site / "kdbench_nan_plugin-0.1.dist-info").mkdir(parents=True)
    (site / "kdbench_nan_plugin.py").write_text(textwrap.dedent(PLUGIN))
    dist = site / "kdbench_nan_plugin-0.1.dist-info"
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kdbench-nan-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kdbench.methods]\nnan-plugin = kdbench_nan_plugin\n")
    return site


def test_entry_point_plugin_is_listed_and_a_nan_loss_ends_as_diverged_with_exit_1(plugin_path, dirs):
    env = {**os.environ, "PYTHONPATH": str(plugin_path)}
    cli = [sys.executable, "-m", "kdbench"]
    listed = subprocess.run([*cli, "methods"], env=env, capture_output=True, text=True, timeout=120)
    assert "nan-plugin" in listed.stdout
    res = subprocess.run(
        [*cli, "run", "--method", "nan-plugin", "--student", "resnet18", "--epochs", "1", "--set", "data.image_size=8",
         "--json"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 1, res.stderr
    assert "diverged at epoch 1 step 0" in res.stderr
    assert "Traceback" not in res.stderr
    import json

    record = json.loads(res.stdout)
    assert record["status"] == "diverged"
    assert record["divergence"]["epoch"] == 1 and "ce" in record["divergence"]["losses"]
