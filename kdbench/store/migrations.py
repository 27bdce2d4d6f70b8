"""Run records of older schemas brought to the current one, in one step on load, and the shape every reader may
rely on afterwards.

A record states the `schema` it was written with. :data:`MIGRATIONS` is the ordered index (as Lightning's
checkpoint migrations): schema N → a function that makes an N record an N+1 record. :func:`upgrade` applies each
step from the record's schema to :data:`SCHEMA_VERSION`, in memory only (a record on disk is never rewritten by a
read), then checks the blocks a reader uses have the right types, so no loader needs a fallback of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SCHEMA_VERSION = 2


class BadRecord(ValueError):
    """A `result.json` that is not a record this version can read; the message says why, in a few words."""


def _transductive_of(config: Any) -> bool:
    from kdbench.core.errors import UserError
    from kdbench.spec.config import RunConfig
    from kdbench.train.transductive import transductive_config

    try:
        return transductive_config(RunConfig.from_dict(config))
    except (UserError, KeyError, TypeError, ValueError, AttributeError):  # a config (method) this code cannot read
        return False


def _1_to_2(record: dict[str, Any]) -> dict[str, Any]:
    """Schema 1 grew blocks during its life; records written before them lack them. Schema 2 records hold them
    from the start: the identity fields, `config`, `transductive` (judged from the config for older records),
    and `metrics.best_selected_on` (records from before validation splits chose their best epoch on test)."""
    out = dict(record)
    for key in ("method", "teacher", "student", "dataset", "seed", "recipe", "metrics", "teacher_metrics"):
        out.setdefault(key, None)
    out.setdefault("config", {})
    if not isinstance(out.get("transductive"), bool):
        out["transductive"] = _transductive_of(out["config"])
    if isinstance(out["metrics"], dict):
        out["metrics"] = {**out["metrics"]}
        out["metrics"].setdefault("best_selected_on", "test")
    return out


# Schema N → the function that makes an N record an N+1 record; applied in order.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _1_to_2}

# A block a reader uses → the types it may hold (None: absent or null).
_BLOCKS: dict[str, tuple[type, ...]] = {
    "config": (dict,), "metrics": (dict, type(None)), "teacher_metrics": (dict, type(None)),
    **{k: (dict, type(None)) for k in ("timing", "inference", "memory", "student_info", "eval", "data",
                                        "method_info", "code", "teacher_cache", "exports")},
    **{k: (str, type(None)) for k in ("method", "teacher", "student", "dataset", "recipe", "finished_at")},
    "status": (str,), "seed": (int, type(None)), "transductive": (bool,),
}
# Metrics a table computes with: numbers (or null), never text.
_NUMERIC_METRICS = ("top1_last", "top5_last", "top1_best", "top5_best", "best_epoch", "epochs", "val_top1_best",
                    "val_top5_best", "resumed_from_epoch")


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(value), type(value).__name__)


def _expected(types: tuple[type, ...]) -> str:
    return " or ".join({dict: "an object", str: "text", int: "a whole number", bool: "true/false",
                        type(None): "null"}[t] for t in types)


def _check(record: dict[str, Any]) -> None:
    for key, types in _BLOCKS.items():
        value = record.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise BadRecord(f"`{key}` is {_type_name(value)}, not {_expected(types)}")
    for key in _NUMERIC_METRICS:
        value = (record["metrics"] or {}).get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise BadRecord(f"`metrics.{key}` is {_type_name(value)}, not a number")


def upgrade(record: dict[str, Any]) -> dict[str, Any]:
    """`record` (as read from a `result.json`) at :data:`SCHEMA_VERSION`, checked; BadRecord says why not."""
    schema = record.get("schema", 1)  # the first records were written before the field: schema 1's layout
    if isinstance(schema, bool) or not isinstance(schema, int) or schema < 1:
        raise BadRecord(f"`schema` is {schema!r:.40}, not a schema number")
    if schema > SCHEMA_VERSION:
        raise BadRecord(f"written by a newer kdbench (record schema {schema}; this version reads up to "
                        f"{SCHEMA_VERSION}): upgrade kdbench to read it")
    for step in range(schema, SCHEMA_VERSION):
        record = MIGRATIONS[step](record)
    record = {**record, "schema": SCHEMA_VERSION}
    _check(record)
    return record
