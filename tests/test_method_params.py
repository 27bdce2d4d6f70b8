"""Every registered method's parameters: the published defaults, frozen, and validated at their range limits
(tests/wiring/defaults.py holds the tables; a new method or parameter fails here until it is listed there)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from wiring.defaults import PUBLISHED, RANGES, UNCHECKED, WEIGHT_RANGE

from kdbench.core.errors import UserError
from kdbench.methods.cnn2gnn import CNN2GNNParams
from kdbench.train.method import get_method, list_methods

TABLES = "tests/wiring/defaults.py"


def _fields(name: str) -> list[dataclasses.Field]:
    params = get_method(name).params
    return list(dataclasses.fields(params)) if dataclasses.is_dataclass(params) else []


@pytest.mark.parametrize("name", list_methods())
def test_defaults_are_the_published_ones(name: str):
    assert name in PUBLISHED, f"method '{name}' has no published defaults in {TABLES}: add its complete dict"
    assert dataclasses.asdict(get_method(name).params) == PUBLISHED[name]


@pytest.mark.parametrize("name", list_methods())
def test_params_are_frozen(name: str):
    params, fields = get_method(name).params, _fields(name)
    for f in fields:
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(params, f.name, getattr(params, f.name))


def _limits(low, high, low_open) -> tuple[list, list]:
    """(accepted, refused) values at the edges of a range; integers step by 1, floats by a small amount."""
    step = 1 if all(isinstance(b, int) for b in (low, high) if b is not None) else 1e-3
    accepted, refused = [], []
    if low is not None:
        (refused if low_open else accepted).append(low)
        refused.append(low - step)
        if low_open:
            accepted.append(low + step)
    if high is not None:
        accepted.append(high)
        refused.append(high + step)
    return accepted, refused


def _cases() -> list[tuple[str, str]]:
    return [(name, f.name) for name in list_methods() for f in _fields(name)
            if (f.type in ("float", "int") or f.name.startswith("w_")) and f.name not in UNCHECKED]


@pytest.mark.parametrize("name,field", _cases())
def test_each_numeric_parameter_is_refused_just_outside_its_range_and_accepted_at_its_edges(name: str, field: str):
    bounds = WEIGHT_RANGE if field.startswith("w_") else RANGES.get(f"{name}.{field}", RANGES.get(field))
    assert bounds is not None, f"{name}.{field}: add its range to RANGES (or to UNCHECKED, with why) in {TABLES}"
    defaults = get_method(name).params
    accepted, refused = _limits(*bounds)
    for value in accepted:
        assert getattr(dataclasses.replace(defaults, **{field: value}), field) == value
    for value in refused:
        with pytest.raises(UserError, match=rf"\.{field}={value:g} is out of range"):
            dataclasses.replace(defaults, **{field: value})


def test_cnn2gnn_needs_more_anchors_than_neighbours_only_in_anchor_mode():
    assert CNN2GNNParams(graph="anchor", k=10, anchors=11).anchors == 11
    with pytest.raises(UserError, match=r"cnn2gnn\.anchors=10 is out of range"):
        CNN2GNNParams(graph="anchor", k=10, anchors=10)
    assert CNN2GNNParams(graph="batch", k=10, anchors=3).anchors == 3
    assert CNN2GNNParams(graph="anchor", k=0, anchors=1).anchors == 1  # no graph: the anchors are unused
    with pytest.raises(UserError, match="unknown cnn2gnn.graph 'ring'"):
        CNN2GNNParams(graph="ring")


def test_cnn2gnn_passes_its_graph_options_to_the_gnn_student_only_and_describes_its_graph():
    from kdbench.models import create_model
    from kdbench.train.method import MethodContext

    params = CNN2GNNParams(graph="anchor", k=3, hidden=8, proj_dim=5, anchors=7, dropout=0.25, pool=4)
    spec = get_method("cnn2gnn")
    options = spec.cls.student_options(params, "gnn2")
    assert options == {"graph": "anchor", "k": 3, "hidden": 8, "proj_dim": 5, "anchors": 7, "dropout": 0.25,
                       "pool": 4, "memory_momentum": 0.5}
    assert spec.cls.student_options(params, "resnet18") == {}
    ctx = MethodContext(num_classes=3, in_chans=1, image_size=8, num_train=10, train_targets=torch.arange(10) % 3,
                        epochs=1, seed=0)
    teacher = create_model("test_resnet", num_classes=3, in_chans=1, image_size=8)
    gnn = spec.cls(create_model("gnn2", num_classes=3, in_chans=1, image_size=8, **options), teacher, params, ctx)
    assert gnn.describe() == {"graph": {"mode": "anchor", "k": 3, "anchors": 7, "anchors_filled": 0},
                              "graph_features": "student", "inference_needs_teacher": False}
    cnn = spec.cls(create_model("test_resnet", num_classes=3, in_chans=1, image_size=8), teacher, params, ctx)
    assert cnn.describe() == {}
