"""No dead settings: every recipe field changes a short real run, or is marked as not affecting results.

Each field of :class:`kdbench.spec.recipe.Recipe` is changed, one at a time, in a 1–2 epoch `ce` run of a tiny timm
student on 8-px digits; the run's per-epoch numbers (losses, lr, train/test top-1, eval loss) must differ from
the baseline's. A field that only matters in some configuration gets that configuration in CONTEXT (for both
runs), it is not skipped. A field marked `metadata={"affects_results": False}` (the recipe's name, a label)
changes no number, but it is still in the run id: it names the leaderboard column, and a teacher recipe named
"imported" selects another teacher. (Every field of every method's parameter dataclass is changed the same way in
tests/test_no_dead_method_settings.py.)
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from kdbench.execute.api import run
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.spec.config import RunConfig
from kdbench.spec.recipe import Recipe

BASE = {"student": "test_resnet", "dataset": "digits", "epochs": 2, "device": "cpu", "infer_batch_size": 8}
BASE_SETS = ["data.image_size=8", "recipe.batch_size=256", "recipe.eval_batch_size=256"]

# field -> (the setting that enables it, for both runs; the changed value)
CHANGES: dict[str, tuple[list[str], str]] = {
    "epochs": ([], "recipe.epochs=3"),
    "batch_size": ([], "recipe.batch_size=200"),
    "lr": ([], "recipe.lr=0.2"),
    "optimizer": ([], "recipe.optimizer=adamw"),
    "momentum": ([], "recipe.momentum=0.5"),
    "nesterov": (["recipe.momentum=0.9"], "recipe.nesterov=false"),
    "weight_decay": ([], "recipe.weight_decay=0.05"),
    "schedule": ([], "recipe.schedule=constant"),
    "milestones": (["recipe.schedule=multistep", "recipe.epochs=3", "recipe.milestones=1"], "recipe.milestones=2"),
    "gamma": (["recipe.schedule=multistep", "recipe.milestones=1"], "recipe.gamma=0.5"),
    "warmup_epochs": (["recipe.warmup_epochs=0"], "recipe.warmup_epochs=1"),
    "augment": ([], "recipe.augment=none"),
    # The eval batch is a graph for a graph student (batch mode): its size changes the test numbers.
    "eval_batch_size": (["student.graph=batch"], "recipe.eval_batch_size=100"),
    "label_smoothing": ([], "recipe.label_smoothing=0.5"),
    "cifar_stem": ([], "recipe.cifar_stem=true"),
    "dot_delta": ([], "recipe.dot_delta=0.075"),
}
STUDENT_FOR = {"eval_batch_size": "gnn2"}
# DOT balances `ce` against distillation terms, so its change is tried on kd (the teacher in the pair's own zoo).
METHOD_FOR = {"dot_delta": "kd"}


def _numbers(tmp: Path, field: str, extra: list[str], method: str = "ce") -> list[dict]:
    student = STUDENT_FOR.get(field, BASE["student"])
    sets = [*BASE_SETS, *CHANGES.get(field, ([], ""))[0], *extra]
    method = METHOD_FOR.get(field, method)
    teacher = {"teacher": "test_resnet", "teacher_epochs": 1, "zoo_dir": tmp.parent / "zoo"} if method == "kd" else {}
    record = run(method, **{**BASE, "student": student}, sets=sets, results_dir=tmp, **teacher)
    lines = (tmp / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in lines]


def _affects(f: dataclasses.Field) -> bool:
    return f.metadata.get("affects_results", True)


def test_every_recipe_field_is_listed_or_marked():
    fields = {f.name for f in dataclasses.fields(Recipe) if _affects(f)}
    assert fields == set(CHANGES), f"add a change for {sorted(fields - set(CHANGES))} to CHANGES"


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_changing_a_recipe_field_changes_a_short_run(tmp_path: Path, field: str):
    before = _numbers(tmp_path / "a", field, [])
    after = _numbers(tmp_path / "b", field, [CHANGES[field][1]])
    assert before != after, f"recipe.{field}: {CHANGES[field][1]} left every number of the run unchanged"


def test_the_recipe_name_a_label_that_changes_no_number_is_in_the_run_id():
    marked = [f.name for f in dataclasses.fields(Recipe) if not _affects(f)]
    assert marked == ["name"]
    config = resolve_config(RunOptions("ce", dataset="digits"))
    renamed = dataclasses.replace(config, recipe=dataclasses.replace(config.recipe, name="another-label"))
    # One record never stands for two labels: a run stored under one name is not shown under another.
    assert renamed.run_id != config.run_id
    assert RunConfig.from_dict(config.to_dict()) == config  # the stored config keeps the label
    # The teacher recipe's name selects the teacher: an imported one is another run than a harness-trained one.
    trained = resolve_config(RunOptions("kd", teacher="resnet18", dataset="digits"))
    imported = resolve_config(RunOptions("kd", teacher="resnet18", dataset="digits",
                                         sets=["teacher_recipe.name=imported"]))
    assert imported.run_id != trained.run_id


@pytest.mark.parametrize("method", ["ce", "kd"])
def test_label_smoothing_changes_the_training_loss_of_ce_and_kd(tmp_path: Path, method: str):
    kw = {"teacher": "test_resnet", "teacher_epochs": 1} if method == "kd" else {}
    sets = [*BASE_SETS, "recipe.epochs=1"]
    plain = run(method, **BASE, sets=sets, results_dir=tmp_path, **kw)
    smooth = run(method, **BASE, sets=[*sets, "recipe.label_smoothing=0.5"], results_dir=tmp_path, **kw)
    ce = [json.loads((tmp_path / "runs" / r["run_id"] / "metrics.jsonl").read_text().splitlines()[0])["losses"]["ce"]
          for r in (plain, smooth)]
    assert ce[0] != ce[1]
