"""The resolved configuration of one run, its content hash (the run id), and `--set` values converted to the types
of the dataclass fields they set (the text is parsed in :mod:`kdbench.spec.scoped_sets`).

What goes into the hash is everything that can change the numbers: method and its hyperparameters, teacher,
student, dataset and its parameters, the teacher's training data, both recipes (their names included: a
recipe's name labels the leaderboard column its runs go to, and the teacher recipe's name `imported` selects
an imported teacher, so one record never stands for two labels), seed, the teacher checkpoint's sha256. Machine paths
(results, zoo and data folders) and the device are left out (as DomainBed's flaw taught), so the same run on
another cluster has the same id. The code that makes the numbers is in it too: `code`, the method's code
fingerprint (:mod:`kdbench.store.fingerprint`), so the same command after a change to the code is a new run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from kdbench.core.errors import UserError, shortened
from kdbench.spec.recipe import Recipe, without_added_defaults

RUN_ID_LENGTH = 16

# Method settings that logit methods gained after their first records, left out of `method_params` (and so of the run
# id and the record) at their default: a run with the switch off keeps its config (and, code aside, run id).
ADDED_METHOD_PARAMS: dict[str, Any] = {"logit_std": False}  # logit standardization (methods/_logit_standardization.py)



def without_added_method_params(params: dict[str, Any]) -> dict[str, Any]:
    """A method's params without the ADDED_METHOD_PARAMS that hold their default (a method reads a missing field as
    its dataclass default)."""
    return {k: v for k, v in params.items() if k not in ADDED_METHOD_PARAMS or v != ADDED_METHOD_PARAMS[k]}


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: the same content always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, tuple | set | frozenset):
        return list(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")


def content_hash(obj: Any, length: int = RUN_ID_LENGTH) -> str:
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()[:length]


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. `run_id` is its content hash."""

    method: str
    student: str
    dataset: str
    seed: int
    recipe: Recipe
    teacher: str | None = None
    teacher_recipe: Recipe | None = None
    teacher_seed: int = 0
    teacher_ckpt_sha256: str | None = None  # set when the user supplies --teacher-ckpt
    method_params: dict[str, Any] = field(default_factory=dict)
    student_params: dict[str, Any] = field(default_factory=dict)
    teacher_params: dict[str, Any] = field(default_factory=dict)
    data_params: dict[str, Any] = field(default_factory=dict)
    # Numerics that change results: AMP and channels_last are part of the identity.
    amp: bool = False
    channels_last: bool = False
    # The method's code fingerprint (kdbench.store.fingerprint.code_fingerprint), set by resolve_config. Empty in
    # configs made before fingerprints existed; left out of the dict (and so of the hash) then, so an old
    # record's config still hashes to its own run id.
    code: str = ""
    # "float16" when the run reads its teacher's outputs rounded to half precision through the teacher-output
    # cache (kdbench.teachers.output_cache; it changes the numbers). Empty for the exact fp32 default and left out of
    # the
    # dict then, so that every other run's id is what it was.
    teacher_cache_dtype: str = ""
    # `--set group.NAME.lr_scale=` / `.weight_decay=`: per parameter group optimizer settings (kdbench.train.optim).
    # Left out of the dict (and the hash) when empty, so the run ids of runs without them stay what they were.
    param_groups: dict[str, dict[str, float]] = field(default_factory=dict)
    # `--teacher run:RUN_ID`: the teacher is that run's student (`teacher` its architecture); the run id stands
    # for the weights, as (architecture, recipe, seed) does for a zoo teacher, so a chain of runs is known before
    # any of them trains (kdbench.sweep.chains). Left out of the dict when None.
    teacher_run: str | None = None
    # Data-parallel processes (kdbench.core.distributed) and SyncBatchNorm across them: a different world size is a
    # different experiment (per-rank BatchNorm statistics, reduction order). Left out of the dict at their
    # one-process defaults, so one-process run ids are those of the code before distributed training.
    world_size: int = 1
    sync_bn: bool = False
    # `--set teacher_data.train_fraction=F`: the zoo teacher trains on the stratified F of each class that
    # `data.train_fraction=F` gives a student (the information-matched control; kdbench.data.subset), not on the
    # full training split. Left out of the dict when empty (a full-data teacher).
    teacher_data: dict[str, Any] = field(default_factory=dict)
    # `--portable` (kdbench.core.cpu_numerics.configure_portable): CPU kernels chosen so that every x86 CPU computes the
    # same bits. Other numbers than the native kernels' on the same CPU, so another run; left out of the dict
    # when off, so every other run's id is what it was.
    portable: bool = False
    # `--compile` (kdbench.train.compile): the student, teacher and method modules through torch.compile. Inductor's
    # kernels sum in another order than ATen's (measured on CPU: tests/test_compile_run.py), so a compiled run is
    # another run; `compile_mode` is torch.compile's mode. Both left out of the dict when off.
    compile: bool = False
    compile_mode: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = json.loads(canonical_json(self))
        # Fields added after the first records, left out at their defaults so older run ids stay what they were.
        defaults = {"code": "", "teacher_cache_dtype": "", "param_groups": {}, "teacher_run": None,
                    "world_size": 1, "sync_bn": False, "teacher_data": {}, "portable": False,
                    "compile": False, "compile_mode": ""}
        for key, default in defaults.items():
            if d[key] == default:
                del d[key]
        for key in ("recipe", "teacher_recipe"):  # and the recipes' own added fields (e.g. DOT's dot_delta)
            if d[key] is not None:
                d[key] = without_added_defaults(d[key])
        d["method_params"] = without_added_method_params(d["method_params"])  # and the methods' added switches
        return d

    def without_code(self) -> RunConfig:
        """The same config as made by any code (for finding the records of older code)."""
        return dataclasses.replace(self, code="")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = dict(d)  # a record from before fingerprints has no "code": the field's default
        d["recipe"] = Recipe.from_dict(d["recipe"])
        if d.get("teacher_recipe") is not None:
            d["teacher_recipe"] = Recipe.from_dict(d["teacher_recipe"])
        return cls(**d)

    @property
    def run_id(self) -> str:
        """The hash of :meth:`to_dict`: every field, the recipes' names included (see the module docstring)."""
        return content_hash(self.to_dict())


# ---------------------------------------------------------------------------------------------------------
# --set values: the text of a SCOPE.KEY=VALUE setting (parsed by kdbench.spec.scoped_sets) as a field's type


def convert_option(value: str, annotation: Any, key: str) -> Any:
    """Convert a CLI string to the type a dataclass field declares (int, float, bool, str, tuples, Optional):
    what apply_overrides does per field, public for a caller that needs a value before the dataclass is rebuilt
    (e.g. the epochs a recipe is rescaled to)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        if value.lower() in ("none", "null"):
            return None
        return convert_option(value, non_none[0], key)
    if origin is tuple:
        inner = args[0] if args else str
        parts = [p for p in value.strip("()[]").split(",") if p.strip()]
        return tuple(convert_option(p.strip(), inner, key) for p in parts)
    try:
        if annotation is bool:
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation is int:
            return int(value)
        if annotation is float:
            return float(value)  # finiteness is checked after the dataclass's own range check (see below)
    except ValueError:
        raise UserError(f"{key}: expected {annotation.__name__}, got '{shortened(value)}'") from None
    return value


def _finite(number: float, key: str) -> float:
    """A --set number must be finite: NaN slips past every range check and ±inf makes a run diverge later."""
    if not math.isfinite(number):
        raise UserError(f"{key}={number:g} is not a finite number; allowed: a finite value")
    return number


def apply_overrides(defaults: Any, overrides: dict[str, str], scope: str) -> Any:
    """A copy of the frozen dataclass `defaults` with string overrides converted to each field's type.

    An unknown key is an error that lists the valid keys; validation in the dataclass's `__post_init__`
    (ranges) runs on the result.
    """
    if not overrides:
        return defaults
    hints = typing.get_type_hints(type(defaults))
    fields = {f.name for f in dataclasses.fields(defaults)}
    converted = {}
    for key, value in overrides.items():
        if key not in fields:
            valid = ", ".join(f"{scope}.{f}" for f in sorted(fields)) or "(none)"
            raise UserError(f"unknown option '{scope}.{key}'. Valid: {valid}")
        converted[key] = convert_option(value, hints[key], f"{scope}.{key}")
    result = dataclasses.replace(defaults, **converted)  # __post_init__ range checks name the allowed range
    for key, value in converted.items():  # a field without a range check still never takes NaN or ±inf
        for number in value if isinstance(value, tuple) else (value,):
            if isinstance(number, float):
                _finite(number, f"{scope}.{key}")
    return result


def convert_free_kwargs(overrides: dict[str, str], scope: str = "") -> dict[str, Any]:
    """Best-effort typing of options without a schema (e.g. timm model kwargs): int, float, bool, else str.

    A number that is NaN or ±inf is refused (`scope` prefixes the key in that message)."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        low = value.lower()
        if low in ("true", "false"):
            out[key] = low == "true"
            continue
        for cast in (int, float):
            try:
                number = cast(value)
            except ValueError:
                continue
            out[key] = _finite(number, f"{scope}.{key}" if scope else key) if cast is float else number
            break
        else:
            out[key] = value
    return out
