"""From what the user typed to a validated :class:`RunConfig` (names checked, `--set` applied, ranges checked).

`--set SCOPE.KEY=VALUE` scopes:
- `<method>` (e.g. `kd.temperature=2`): the method's hyperparameters, validated against its dataclass;
- `data`: the dataset's parameters (e.g. `data.image_size=32`);
- `recipe` / `teacher_recipe`: any recipe field of the student's / teacher's training;
- `teacher_data`: the zoo teacher's training data (`teacher_data.train_fraction=F`: the stratified F of each class
  that `data.train_fraction=F` gives the student; kdbench.data.subset);
- `student` / `teacher`: keyword options of the architecture (e.g. `student.k=0` for the GNN student).

The teacher half (data parameters, teacher recipe, teacher data, `teacher.*` options) is
:func:`resolve_teacher`, shared by `kdbench run` and `kdbench teachers train` / :func:`kdbench.create_teacher`,
so a teacher a user trains by hand has the very zoo key a run looks up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError, check_range, unknown_name
from kdbench.data.registry import DatasetSpec, get_dataset_spec
from kdbench.data.splits import SUBSET_SEED_KEY
from kdbench.data.subset import (
    TEACHER_SCOPE,
    teacher_data_params,
    train_fraction_of,
    with_subset_seed,
    with_train_fraction,
)
from kdbench.data.validation import split_data_params, with_val_fraction
from kdbench.models.zoo import is_model, list_architectures, student_lr_scale
from kdbench.spec.config import (
    RUN_ID_LENGTH,
    RunConfig,
    apply_overrides,
    convert_free_kwargs,
    convert_option,
    without_added_method_params,
)
from kdbench.spec.recipe import Recipe
from kdbench.spec.scoped_sets import parse_set_options
from kdbench.store.exports import card_of_file
from kdbench.store.fingerprint import code_fingerprint, teacher_code
from kdbench.teachers.pretrained import find_weights, is_pretrained_name
from kdbench.teachers.zoo import IMPORTED_RECIPE, TeacherKey
from kdbench.teachers.zoo_files import user_file_sha256
from kdbench.train.compile import check_compile_mode
from kdbench.train.dot import check_dot_run
from kdbench.train.method import MethodSpec, get_method
from kdbench.train.optim import GROUP_SCOPE, parse_group_sets

# The `--set` scopes that shape a zoo teacher.
TEACHER_SCOPES = ("data", "teacher_recipe", TEACHER_SCOPE, "teacher")
# The scopes every run has, whatever its method.
COMMON_SCOPES = ("recipe", "student", *TEACHER_SCOPES)


def method_scopes(method: str) -> set[str]:
    """The `--set` scopes of a method's hyperparameters: its name and its class's name, so a named variant
    (`crd+kd`) also takes its class's scope (`crd.w_kd=1`)."""
    spec = get_method(method)
    return {spec.name, spec.cls.name, *([GROUP_SCOPE] if spec.cls.param_group_modules else [])}


@dataclass(frozen=True)
class TeacherCheckpoint:
    """A user's teacher file (`--teacher-ckpt`) and its sha256, hashed once: the digest goes into the run id,
    is checked against the config and lands in the record without the file being read again for it."""

    path: Path
    sha256: str

    @classmethod
    def hash(cls, path: str | Path) -> TeacherCheckpoint:
        path = Path(path).expanduser()
        # A link to /dev/zero or a FIFO is refused in one line, never read without end.
        return cls(path, user_file_sha256(path, "--teacher-ckpt"))


@dataclass
class RunOptions:
    method: str
    teacher: str | None = None
    student: str | None = None
    dataset: str = "digits"
    seed: int = 0
    teacher_seed: int = 0
    epochs: int | None = None
    teacher_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    sets: list[str] = field(default_factory=list)
    teacher_ckpt: str | Path | TeacherCheckpoint | None = None
    amp: bool = False
    channels_last: bool = False
    teacher_cache_dtype: str = "float32"  # "float16": the teacher's outputs rounded through the cache (in the id)
    # CPU numbers independent of the CPU (kdbench.core.cpu_numerics.configure_portable; in the run id)
    portable: bool = False
    # torch.compile the run's modules (kdbench.train.compile; other numbers: in the run id) in this mode
    compile: bool = False
    compile_mode: str = "default"
    # The id of the completed (or, in a sweep's chain, planned) run whose student is the teacher; `teacher` is
    # then that student's architecture (see :func:`with_run_teacher` for `teacher="run:RUN_ID"`).
    teacher_run: str | None = None


def with_run_teacher(opts: RunOptions, results_dir: str | Path | None) -> RunOptions:
    """`teacher="run:RUN_ID"` → `teacher_run=RUN_ID` with `teacher` the architecture of that run's student, read
    from its record under `results_dir`; a run that does not exist or is not completed is a one-line UserError.
    Other options unchanged."""
    from dataclasses import replace

    from kdbench.store.exports import RUN_TEACHER_PREFIX, completed_run

    if not (opts.teacher or "").startswith(RUN_TEACHER_PREFIX):
        return opts
    assert opts.teacher is not None
    if opts.teacher_ckpt:
        raise UserError(f"--teacher {opts.teacher} and --teacher-ckpt name two teachers: pass one of them")
    run_id, record = completed_run(opts.teacher, results_dir)
    return replace(opts, teacher=record["student"], teacher_run=run_id)


def _check_model(name: str, role: str) -> None:
    if not is_model(name):
        raise unknown_name(f"{role} architecture", name, list_architectures(), max_listed=30)


def _data_params(ds: DatasetSpec, scoped: dict[str, dict[str, str]]) -> object:
    """The dataset's parameters; `data.val_fraction` is not one of them (see :func:`_val_fraction`)."""
    return apply_overrides(ds.params, split_data_params(scoped.get("data", {}))[0], "data")


def _val_fraction(scoped: dict[str, dict[str, str]]) -> float:
    # The student's validation split only: a teacher trains on the full training split and its zoo key never
    # holds the fraction (one teacher serves runs with and without a validation split).
    return split_data_params(scoped.get("data", {}))[1]


def resolve_teacher(
    arch: str,
    dataset: str = "digits",
    *,
    epochs: int | None = None,
    seed: int = 0,
    sets: list[str] | dict[str, dict[str, str]] | None = None,
) -> TeacherKey:
    """The zoo key of teacher `arch` trained on `dataset` with the dataset's recipe (`epochs` overrides it).

    Of `sets` (`--set` items, or them already split by scope) only the teacher's scopes are read: `data.*`,
    `teacher_recipe.*`, `teacher_data.*` and `teacher.*`; the caller decides whether other scopes are an error.
    The student's `data.train_fraction` never reaches the key (the teacher trains on the full training split);
    `teacher_data.train_fraction=F` does (with `data.val_fraction`, held out before F is drawn, as for a student).
    """
    if is_pretrained_name(arch):
        raise UserError(f"{arch} names timm's pretrained weights: the zoo never trains them; distil from them "
                        f"with `kdbench run --teacher {arch} ...` (or train the architecture: "
                        f"{arch.partition('.')[0]})")
    _check_model(arch, "teacher")
    check_range("teacher_seed", seed, 0, 2**31 - 1)
    ds = get_dataset_spec(dataset)
    scoped = sets if isinstance(sets, dict) else parse_set_options(sets)
    recipe = _recipe_for(ds.recipe, epochs, scoped.get("teacher_recipe", {}), "teacher_recipe")
    check_dot_run(recipe, distils=False, scope="teacher_recipe", trainee="a zoo teacher (CE alone)")
    fraction = train_fraction_of(teacher_data_params(scoped.get(TEACHER_SCOPE, {})))
    return TeacherKey(arch, ds.name, recipe, seed, _asdict(_data_params(ds, scoped)), _teacher_options(scoped),
                      code=zoo_teacher_code(recipe), train_fraction=fraction, val_fraction=_val_fraction(scoped))


def zoo_teacher_code(recipe: Recipe) -> str:
    """The code fingerprint in a zoo teacher's key: the `ce` code that trains it; none for an imported teacher."""
    return "" if recipe.name == IMPORTED_RECIPE else teacher_code()


def _recipe_for(recipe: Recipe, epochs: int | None, overrides: dict[str, str], scope: str) -> Recipe:
    """The dataset's `recipe` for this run: run for `epochs` (`--epochs`, or `--set SCOPE.epochs=`, which
    wins) with its milestones and warm-up rescaled to them (Recipe.with_epochs), then the other `--set SCOPE.*`
    applied as given — an explicit `milestones`/`warmup_epochs` is taken as stated, and refused when outside
    the run's epochs."""
    overrides = dict(overrides)
    if "epochs" in overrides:
        epochs = convert_option(overrides.pop("epochs"), int, f"{scope}.epochs")
    return apply_overrides(recipe.with_epochs(epochs), overrides, scope)


def _teacher_options(scoped: dict[str, dict[str, str]]) -> dict:
    return convert_free_kwargs(scoped.get("teacher", {}), "teacher")


@dataclass(frozen=True)
class _TeacherSide:
    """Who teaches a run and how it was trained: a zoo teacher (its recipe), a checkpoint (its sha256), a run's
    student (teacher_run), or nobody."""

    teacher: str | None = None
    recipe: Recipe | None = None
    ckpt_sha256: str | None = None
    options: dict = field(default_factory=dict)  # --set teacher.* (architecture kwargs); none for a run's student
    data: dict = field(default_factory=dict)  # --set teacher_data.* (a zoo teacher's training data)


def _checked_sets(opts: RunOptions, spec: MethodSpec) -> dict[str, dict[str, str]]:
    """The run's `--set` options by scope, every scope one this method (or every run) has."""
    check_range("seed", opts.seed, 0, 2**31 - 1)
    check_range("teacher_seed", opts.teacher_seed, 0, 2**31 - 1)
    sets = parse_set_options(opts.sets)
    scopes = method_scopes(spec.name)
    unknown = sorted(set(sets) - {*scopes, *COMMON_SCOPES})
    if unknown:
        valid = sorted({*scopes, *COMMON_SCOPES})
        raise UserError(f"unknown --set scope '{unknown[0]}'. Valid scopes: {', '.join(valid)}")
    return sets


# A method's defaults are the CIFAR papers'; where a dataset's papers distil with others, these replace them (under
# the user's `--set`, which wins), as `--set` values would: in the config and the run id. Keyed by (method, dataset).
# Set here, not in methods/: a method's module is hashed into every run id of that method.
DATASET_METHOD_DEFAULTS: dict[tuple[str, str], dict[str, str]] = {
    # ImageNet KD as mdistiller (configs/imagenet/r34_r18/kd.yaml, r50_mv1/kd.yaml) and torchdistill run it:
    # T = 1, CE and KD weighted 0.5 each (the CIFAR defaults are T = 4, 0.1/0.9).
    ("kd", "imagenet"): {"temperature": "1", "w_ce": "0.5", "w_kd": "0.5"},
}


def dataset_method_defaults(method: str, dataset: str) -> dict[str, str]:
    """The `--set` values method `method` starts from on `dataset` (:data:`DATASET_METHOD_DEFAULTS`); {} mostly."""
    return dict(DATASET_METHOD_DEFAULTS.get((method, dataset), {}))


def _method_overrides(spec: MethodSpec, sets: dict[str, dict[str, str]], dataset: str = "") -> Any:
    """The method's hyperparameters with the dataset's defaults for it, then its scopes' `--set` values, applied
    (before resolve_params)."""
    overrides: dict[str, str] = dataset_method_defaults(spec.name, dataset)
    for scope in sorted(method_scopes(spec.name) - {GROUP_SCOPE}):
        overrides.update(sets.get(scope, {}))
    return apply_overrides(spec.params, overrides, spec.name)


def _student_recipe(opts: RunOptions, ds: DatasetSpec, student: str, sets: dict[str, dict[str, str]]) -> Recipe:
    # Light students train at a scaled lr (CRD recipe: 0.01 instead of 0.05 for MobileNetV2/ShuffleNet); the
    # resolved value is what the config records and hashes. An explicit --lr always wins.
    lr = opts.lr if opts.lr is not None else round(ds.recipe.lr * student_lr_scale(student), 12)
    return _recipe_for(ds.recipe.replace(batch_size=opts.batch_size, lr=lr), opts.epochs, sets.get("recipe", {}),
                       "recipe")


def _teacher_side(opts: RunOptions, spec: MethodSpec, ds: DatasetSpec, sets: dict[str, dict[str, str]]) -> _TeacherSide:
    """The teacher of a method that distils (checked: one source, a known architecture), else nobody."""
    options = _teacher_options(sets)
    data = teacher_data_params(sets.get(TEACHER_SCOPE, {}))
    if not spec.needs_teacher:
        return _TeacherSide(options=options, data=data)
    ckpt = None
    if opts.teacher_ckpt:
        ckpt = opts.teacher_ckpt if isinstance(opts.teacher_ckpt, TeacherCheckpoint) \
            else TeacherCheckpoint.hash(opts.teacher_ckpt)
    teacher = opts.teacher or (_exported_architecture(ckpt) if ckpt else None)
    if not teacher:
        raise UserError(f"method '{spec.name}' distils from a teacher: pass --teacher ARCH (e.g. resnet152)")
    if opts.teacher_run is None and is_pretrained_name(teacher):
        return _pretrained_side(teacher, ckpt, options, data)
    _check_model(teacher, "teacher")
    if data and (opts.teacher_run is not None or ckpt is not None):
        raise UserError(f"{TEACHER_SCOPE}.train_fraction chooses what a zoo teacher trains on; a teacher from "
                        "--teacher-ckpt or --teacher run:RUN_ID is trained already: leave it out")
    if opts.teacher_run is not None:  # a run's student: built from its export's card, no recipe of ours
        if ckpt is not None:
            raise UserError("--teacher run:RUN_ID and --teacher-ckpt name two teachers: pass one of them")
        if not (len(opts.teacher_run) == RUN_ID_LENGTH and all(c in "0123456789abcdef" for c in opts.teacher_run)):
            raise UserError(f"--teacher run:{opts.teacher_run}: not a run id ({RUN_ID_LENGTH} hex digits)")
        return _TeacherSide(teacher=teacher, data=data)
    if ckpt is not None:
        exported = _exported_architecture(ckpt)
        if exported is not None and exported != teacher:
            raise UserError(f"--teacher {teacher}: {ckpt.path} holds a {exported} (its card says so)")
        return _TeacherSide(teacher=teacher, ckpt_sha256=ckpt.sha256, options=options, data=data)
    recipe = resolve_teacher(teacher, ds.name, epochs=opts.teacher_epochs, seed=opts.teacher_seed, sets=sets).recipe
    return _TeacherSide(teacher=teacher, recipe=recipe, options=options, data=data)


def _pretrained_side(teacher: str, ckpt: TeacherCheckpoint | None, options: dict, data: dict) -> _TeacherSide:
    """timm's pretrained weights `teacher` (arch.tag), from the user's file or this machine's caches (never the
    network): their sha256 is the config's `teacher_ckpt_sha256`, so the run id follows the weights."""
    if data:
        raise UserError(f"{TEACHER_SCOPE}.train_fraction chooses what a zoo teacher trains on; --teacher {teacher} "
                        "is pretrained already: leave it out")
    weights = find_weights(teacher, ckpt.path if ckpt else None, ckpt.sha256 if ckpt else None)
    return _TeacherSide(teacher=teacher, ckpt_sha256=weights.sha256, options=options, data=data)


def resolve_config(opts: RunOptions) -> RunConfig:
    """The run's full config (its id is the hash of it): the method's, dataset's and teacher's defaults under the
    options, every name and number checked (a UserError names what is wrong and what is valid)."""
    spec = get_method(opts.method)
    ds = get_dataset_spec(opts.dataset)
    sets = _checked_sets(opts, spec)
    method_params = _method_overrides(spec, sets, ds.name)
    data_params = _data_params(ds, sets)
    student = opts.student or spec.default_student
    _check_model(student, "student")
    recipe = _student_recipe(opts, ds, student, sets)
    check_dot_run(recipe, amp=opts.amp, distils=spec.needs_teacher, trainee=f"method '{spec.name}' (no teacher)")
    method_params = spec.cls.resolve_params(method_params, teacher=opts.teacher if spec.needs_teacher else None,
                                            student=student, epochs=recipe.epochs)
    student_params = convert_free_kwargs(sets.get("student", {}), "student")
    side = _teacher_side(opts, spec, ds, sets)
    return RunConfig(
        method=spec.name,
        student=student,
        dataset=ds.name,
        seed=opts.seed,
        recipe=recipe,
        teacher=side.teacher,
        teacher_recipe=side.recipe,
        teacher_seed=opts.teacher_seed if side.recipe is not None or side.ckpt_sha256 else 0,
        teacher_ckpt_sha256=side.ckpt_sha256,
        method_params=without_added_method_params(_asdict(method_params)),  # as a record holds them
        student_params=student_params,
        teacher_params=side.options if side.teacher else {},
        data_params=_student_data_params(_asdict(data_params), sets, side.data if side.recipe is not None else {}),
        amp=opts.amp,
        channels_last=opts.channels_last,
        code=code_fingerprint(spec.name)["fingerprint"],
        teacher_cache_dtype=_teacher_cache_dtype(opts.teacher_cache_dtype, side.teacher),
        teacher_run=opts.teacher_run if side.teacher else None,
        # A zoo teacher's only (a method without a teacher ignores it, as it does teacher_recipe).
        teacher_data=side.data if side.recipe is not None else {},
        param_groups=parse_group_sets(sets.get(GROUP_SCOPE, {}), spec.cls.param_group_modules, spec.name),
        portable=opts.portable,
        compile=opts.compile,
        compile_mode=check_compile_mode(opts.compile_mode) if opts.compile else "",
    )


def _student_data_params(own: dict[str, Any], sets: dict[str, dict[str, str]],
                         teacher_data: dict[str, Any]) -> dict[str, Any]:
    """The run's `data_params`: the dataset's own, then the validation fraction, the training fraction and the
    subset draw's seed, each recorded only away from its default (earlier run ids stay valid)."""
    fraction = train_fraction_of(sets.get("data", {}))
    params = with_subset_seed(with_train_fraction(with_val_fraction(own, _val_fraction(sets)), fraction),
                              sets.get("data", {}), fraction)
    if SUBSET_SEED_KEY in params and teacher_data:
        # The control teacher trains on split_seed's draw (its zoo key holds no subset seed): it would not be
        # the student's subset any more.
        raise UserError(f"data.subset_seed moves the student's subset away from the one {TEACHER_SCOPE}."
                        "train_fraction trains the control teacher on: use one of the two")
    return params


def _teacher_cache_dtype(dtype: str, teacher: str | None) -> str:
    """The config's `teacher_cache_dtype`: "" for the exact default (and for runs without a teacher)."""
    from kdbench.teachers.output_cache import check_options

    check_options("on", dtype)
    return "" if dtype == "float32" or teacher is None else dtype


def _exported_architecture(ckpt: TeacherCheckpoint) -> str | None:
    """The architecture of a run's student export (named by the card beside it), None for any other file."""
    card = card_of_file(ckpt.path, ckpt.sha256)
    return card["architecture"] if card is not None else None


def _asdict(obj: object) -> dict:
    import dataclasses

    return dataclasses.asdict(obj) if dataclasses.is_dataclass(obj) else {}
