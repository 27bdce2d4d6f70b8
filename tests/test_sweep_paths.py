"""A sweep's folders (kdbench.spec.paths.Paths) and how its jobs run (kdbench.sweep.grid.JobSettings) reach each
run: stored together in the sweep file, read back by its jobs."""

from __future__ import annotations

from typer.testing import CliRunner

from kdbench.spec.paths import Paths
from kdbench.store.records import RunStore
from kdbench.sweep.saved_sweep import load_saved_sweep

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8",
        "--set", "teacher_recipe.batch_size=256", "--cpus-per-task", "1"]


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_a_sweeps_cache_folder_and_cache_mode_reach_its_runs(dirs, tmp_path):
    cache = tmp_path / "outputs"
    common = ["--teachers", "cifar_resnet8", "--students", "cifar_resnet8", *TINY, "--executor", "debug",
              "--device", "cpu", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"], "--cache-dir", cache]
    off = kdbench_cli("sweep", "--methods", "kd", "--seeds", "0", "--teacher-cache", "off", *common)
    assert off.exit_code == 0, off.output
    sweep = load_saved_sweep(dirs["results"])
    assert sweep["paths"] == {"results_dir": str(dirs["results"].resolve()), "zoo_dir": str(dirs["zoo"].resolve()),
                              "data_root": None, "cache_dir": str(cache.resolve()), "device": "cpu",
                              "teacher_cache": "off", "checkpoint_every_steps": 0}
    assert Paths.from_dict(sweep["paths"]) == Paths(str(dirs["results"].resolve()), str(dirs["zoo"].resolve()),
                                                    None, str(cache.resolve()))
    (rid,) = sweep["submissions"][0]["tasks"]
    assert RunStore(dirs["results"]).load(rid)["teacher_cache"]["mode"] == "off"
    assert not cache.exists()

    on = kdbench_cli("sweep", "--methods", "kd", "--seeds", "1", *common)
    assert on.exit_code == 0, on.output
    (rid,) = load_saved_sweep(dirs["results"])["submissions"][0]["tasks"]
    used = RunStore(dirs["results"]).load(rid)["teacher_cache"]
    assert used["mode"] == "on" and used["dir"].startswith(str(cache.resolve()))
    assert any(p.is_file() for p in cache.rglob("*"))  # the sweep's cache folder, not $KDBENCH_CACHE
