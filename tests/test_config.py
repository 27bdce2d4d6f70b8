"""Run ids are content hashes of the resolved config; `--set` is typed, validated and scoped."""

from __future__ import annotations

import pytest

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.spec.config import RunConfig, content_hash
from kdbench.spec.scoped_sets import parse_set_options


def config(**kw) -> RunConfig:
    return resolve_config(RunOptions(**{"method": "kd", "teacher": "resnet18", **kw}))


def test_run_id_is_stable_and_hex():
    a, b = config(), config()
    assert a.run_id == b.run_id
    assert len(a.run_id) == 16 and int(a.run_id, 16) >= 0


@pytest.mark.parametrize(
    "change",
    [{"seed": 1}, {"sets": ["kd.temperature=2"]}, {"epochs": 3}, {"student": "resnet34"}, {"teacher": "resnet34"},
     {"sets": ["data.image_size=8"]}, {"teacher_epochs": 2}, {"teacher_seed": 1}],
)
def test_every_result_changing_option_changes_the_run_id(change):
    assert config(**change).run_id != config().run_id


def test_config_round_trips_through_json():
    c = config(sets=["kd.temperature=2", "recipe.milestones=3,5"])
    again = RunConfig.from_dict(c.to_dict())
    assert again == c and again.run_id == c.run_id
    assert again.recipe.milestones == (3, 5)


def test_ce_ignores_the_teacher_so_a_grid_over_teachers_deduplicates():
    a = resolve_config(RunOptions(method="ce", teacher="resnet18"))
    b = resolve_config(RunOptions(method="ce", teacher="resnet152"))
    assert a.teacher is None and a.run_id == b.run_id


def test_set_values_are_converted_to_the_declared_types():
    c = config(sets=["kd.temperature=2", "kd.w_kd=1", "recipe.nesterov=false", "recipe.augment=none"])
    assert c.method_params["temperature"] == 2.0 and isinstance(c.method_params["temperature"], float)
    assert c.recipe.nesterov is False and c.recipe.augment == "none"


def test_parse_set_options_groups_by_scope():
    assert parse_set_options(["kd.temperature=2", "student.k=0"]) == {"kd": {"temperature": "2"}, "student": {"k": "0"}}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["kd.temprature=2"], "Valid: kd.logit_std, kd.temperature, kd.w_ce, kd.w_kd"),
        (["kd.temperature=-1"], "allowed: (0, 100]"),
        (["kd.temperature=hot"], "expected float"),
        (["nope.x=1"], "Valid scopes"),
        (["temperature"], "SCOPE.KEY=VALUE"),
        (["data.image_size=2"], "allowed: [8, 224]"),
        (["recipe.optimizer=lion"], "Valid: sgd, adamw"),
    ],
)
def test_bad_set_options_say_what_is_valid(sets, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace("[", r"\[").replace("]", r"\]")):
        config(sets=sets)


def test_unknown_names_list_the_closest_valid_ones():
    with pytest.raises(UserError, match="Did you mean kd"):
        resolve_config(RunOptions(method="kdd", teacher="resnet18"))
    with pytest.raises(UserError, match="Did you mean resnet152"):
        config(teacher="resnet153")
    with pytest.raises(UserError, match="unknown dataset 'digit'. Did you mean digits"):
        config(dataset="digit")


def test_distillation_without_a_teacher_is_refused():
    with pytest.raises(UserError, match="pass --teacher"):
        resolve_config(RunOptions(method="kd"))


def test_content_hash_ignores_key_order():
    assert content_hash({"a": 1, "b": [1, 2]}) == content_hash({"b": [1, 2], "a": 1})


def test_light_students_get_the_published_lower_lr_unless_lr_is_given():
    base = config().recipe.lr
    assert resolve_config(RunOptions(method="ce", student="mobilenetv2_100")).recipe.lr == pytest.approx(base * 0.2)
    assert resolve_config(RunOptions(method="cnn2gnn", teacher="resnet18")).recipe.lr == pytest.approx(base * 0.2)
    assert resolve_config(RunOptions(method="ce", student="gnn2", lr=0.05)).recipe.lr == 0.05
