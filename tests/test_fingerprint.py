"""Code fingerprints: a change to a method's code is a new run (the old record stays, the leaderboard counts only
the new one); a docstring or comment edit is not; `kdbench run --dry-run` touches no data."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdbench.cli.app import _register_commands, app
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.spec.config import RunConfig
from kdbench.store.fingerprint import RESULTS_VERSION, code_fingerprint, normalised_source_hash

PLUGIN = '''
"""A third-party method: the student alone, its cross-entropy scaled by SCALE."""
from dataclasses import dataclass
import torch.nn.functional as F
from kdbench.train.method import Distiller, register_method

SCALE = 1.0

@dataclass(frozen=True)
class P:
    w_ce: float = 1.0

@register_method("fp-plugin", paper="test plugin", params=P())
class FPPlugin(Distiller):
    needs_teacher = False
    def forward_train(self, batch):
        logits = self.student(batch.images)
        return logits, {"ce": self.params.w_ce * SCALE * F.cross_entropy(logits, batch.labels)}
'''


@pytest.fixture
def plugin(tmp_path: Path) -> Path:
    """The plugin module, installed as a `kdbench.methods` entry point on a PYTHONPATH folder."""
    site = tmp_path / "site"
    dist = site / "kdbench_fp_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "kdbench_fp_plugin.py").write_text(textwrap.dedent(PLUGIN))
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: kdbench-fp-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[kdbench.methods]\nfp-plugin = kdbench_fp_plugin\n")
    return site / "kdbench_fp_plugin.py"


def _cli(plugin: Path, dirs: dict[str, Path], *args: str) -> subprocess.CompletedProcess:
    """`kdbench ARGS` in a fresh process (a fresh import of the plugin file, as a user's next command)."""
    env = {**os.environ, "PYTHONPATH": str(plugin.parent), "KDBENCH_RESULTS": str(dirs["results"]),
           "KDBENCH_ZOO": str(dirs["zoo"]), "KDBENCH_DATA": str(dirs["data"])}
    res = subprocess.run([sys.executable, "-m", "kdbench", *args], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return res


RUN = ("run", "--method", "fp-plugin", "--student", "cifar_resnet8", "--epochs", "1", "--set", "data.image_size=8")


def test_normalised_hash_ignores_comments_docstrings_and_layout_but_not_code() -> None:
    base = normalised_source_hash(PLUGIN)
    cosmetic = PLUGIN.replace('"""A third-party method', '"""Another wording of a third-party method') \
        .replace("SCALE = 1.0", "SCALE = (\n    1.0  # a comment\n)").replace("class P:", "class P:\n    '''doc'''\n")
    assert normalised_source_hash(cosmetic) == base
    assert normalised_source_hash(PLUGIN.replace("SCALE = 1.0", "SCALE = 0.5")) != base
    assert normalised_source_hash(PLUGIN.replace("w_ce: float = 1.0", "w_ce: float = 2.0")) != base


def test_fingerprint_follows_the_methods_and_models_layers_only() -> None:
    fp = code_fingerprint("kd")
    assert fp["results_version"] == RESULTS_VERSION and len(fp["fingerprint"]) == 12
    # zoo teachers train through ce; kd's optional logit standardization is a shared methods module
    assert set(fp["sources"]) == {"kdbench.methods.kd", "kdbench.methods._logit_standardization", "kdbench.methods.ce"}
    # CRD builds on kd's loss and taps features (models layer); the Distiller base class, errors and the
    # distributed helpers it imports are the harness (RESULTS_VERSION), not followed.
    crd = set(code_fingerprint("crd")["sources"])
    assert {"kdbench.methods.crd", "kdbench.methods.kd", "kdbench.models.features"} <= crd
    assert not {m for m in crd if m.split(".")[1] not in ("methods", "models")}
    assert "kdbench.models.graph" in code_fingerprint("cnn2gnn")["sources"]  # its sparse graph learner
    assert set(code_fingerprint("ce")["sources"]) == {"kdbench.methods.ce"}


LOSSES = "import torch\n\ndef scaled(x):\n    return 2.0 * x\n"
METHOD = "from {where} import scaled\nfrom kdbench.core.errors import UserError\n\ndef loss(x):\n    return scaled(x)\n"


def _plugin_fingerprint(root: Path, losses_at: str, losses: str = LOSSES, errors_at: str = "kdbench.core.errors"):
    """The fingerprint of a plugin package `fpkg` whose method module imports its loss from `losses_at`."""
    from kdbench.store.fingerprint import combine, module_sources

    pkg = root / "fpkg"
    target = pkg.joinpath(*losses_at.split(".")[1:]).with_suffix(".py")
    target.parent.mkdir(parents=True, exist_ok=True)
    for folder in (pkg, *target.relative_to(pkg).parents):
        (pkg / folder / "__init__.py").touch()
    target.write_text(losses)
    method = pkg / "method.py"
    method.write_text(METHOD.format(where=losses_at).replace("kdbench.core.errors", errors_at))
    def forget() -> None:  # each call is a fresh checkout: no `fpkg` of an earlier one in this process
        for name in [m for m in sys.modules if m == "fpkg" or m.startswith("fpkg.")]:
            del sys.modules[name]
        importlib.invalidate_caches()

    forget()
    sys.path.insert(0, str(root))
    try:
        sources = module_sources("fpkg.method", method)
    finally:
        sys.path.remove(str(root))
        forget()
    return combine(sources), sources


def test_a_move_is_not_a_code_change_but_an_edit_is(tmp_path: Path) -> None:
    base, sources = _plugin_fingerprint(tmp_path / "a", "fpkg.losses")
    assert set(sources) == {"fpkg.method", "fpkg.losses"}  # the plugin's own package is followed
    # The loss module moved and renamed (the import follows it), a kdbench module moved: the same code.
    moved, moved_sources = _plugin_fingerprint(tmp_path / "b", "fpkg.sub.kernels", errors_at="kdbench.errors")
    assert set(moved_sources) == {"fpkg.method", "fpkg.sub.kernels"} and moved == base
    # One number of the loss changed: another fingerprint.
    edited, _ = _plugin_fingerprint(tmp_path / "c", "fpkg.losses", LOSSES.replace("2.0", "3.0"))
    assert edited != base


def test_run_id_holds_the_code_and_old_configs_keep_their_ids() -> None:
    config = resolve_config(RunOptions(method="ce", epochs=1))
    assert config.code == code_fingerprint("ce")["fingerprint"]
    old = config.to_dict()
    del old["code"]  # a record from before fingerprints
    old_config = RunConfig.from_dict(old)
    assert old_config.code == "" and old_config.to_dict() == old and old_config.run_id != config.run_id
    assert RunConfig.from_dict(config.to_dict()).run_id == config.run_id


def test_changed_code_trains_again_and_the_leaderboard_counts_only_current_code(plugin: Path, dirs) -> None:
    first = json.loads(_cli(plugin, dirs, *RUN, "--json").stdout)
    assert first["status"] == "completed" and first["code"]["fingerprint"] == first["config"]["code"]
    assert "kdbench_fp_plugin" in first["code"]["sources"]

    # A docstring and comment edit: same fingerprint, the record is reused.
    plugin.write_text(plugin.read_text().replace('"""A third-party method', '"""# A reworded third-party method')
                      .replace("SCALE = 1.0", "SCALE = 1.0  # the loss's scale"))
    plan = json.loads(_cli(plugin, dirs, *RUN, "--dry-run", "--json").stdout)
    assert plan["run_id"] == first["run_id"] and plan["would_reuse"] is True

    plugin.write_text(plugin.read_text().replace("SCALE = 1.0", "SCALE = 0.5"))  # the loss changes
    res = _cli(plugin, dirs, *RUN, "--json")
    second = json.loads(res.stdout)
    assert second["run_id"] != first["run_id"] and not second.get("cached")
    assert f"code changed since run {first['run_id']}; training again under {second['run_id']}" in res.stderr
    assert second["code"]["fingerprint"] != first["code"]["fingerprint"]
    assert (dirs["results"] / "runs" / first["run_id"] / "result.json").exists()  # the old record stays

    board = _cli(plugin, dirs, "leaderboard", "--table", "runs", "--format", "markdown").stdout
    assert second["run_id"] in board and first["run_id"] not in board
    assert "left out: 1 record(s) made by older code (fp-plugin)" in board
    every = _cli(plugin, dirs, "leaderboard", "--all-code", "--format", "csv").stdout
    rows = {line.split(",")[0]: line for line in every.splitlines()[1:]}
    old_row = f"fp-plugin @{first['code']['fingerprint'][:6]}"
    assert set(rows) == {"fp-plugin", old_row}
    assert second["run_id"] in rows["fp-plugin"] and first["run_id"] in rows[old_row]


def test_dry_run_touches_no_data_and_says_whether_a_record_would_be_reused(dirs) -> None:
    _register_commands()
    runner = CliRunner()
    res = runner.invoke(app, ["run", "--method", "ce", "--dataset", "cifar100", "--epochs", "24", "--dry-run",
                              "--json"])
    assert res.exit_code == 0, res.output
    plan = json.loads(res.stdout)
    assert {"run_id", "config", "code", "record", "stored_status", "would_reuse", "older_code_runs"} <= set(plan)
    assert plan["config"]["dataset"] == "cifar100" and plan["config"]["recipe"]["epochs"] == 24
    assert plan["code"]["fingerprint"] == plan["config"]["code"] and plan["would_reuse"] is False
    assert list(dirs["data"].iterdir()) == [] and list(dirs["results"].iterdir()) == []  # nothing read or written
    table = runner.invoke(app, ["run", "--method", "ce", "--dataset", "cifar100", "--epochs", "24", "--dry-run"])
    assert table.exit_code == 0 and plan["run_id"] in table.stdout and "would reuse" in table.stdout

    small = ["run", "--method", "ce", "--student", "test_resnet", "--epochs", "1", "--set", "data.image_size=8"]
    assert runner.invoke(app, small).exit_code == 0
    after = json.loads(runner.invoke(app, [*small, "--dry-run", "--json"]).stdout)
    assert after["would_reuse"] is True and after["stored_status"] == "completed"
    forced = json.loads(runner.invoke(app, [*small, "--dry-run", "--json", "--force"]).stdout)
    assert forced["would_reuse"] is False
