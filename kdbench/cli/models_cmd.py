"""`kdbench models describe NAME`: a model's stages (index, module, shape, stride) and embedding width at a
dataset's input size, as the feature methods see them (kdbench.models.taps.IntermediateTap)."""

from __future__ import annotations

import difflib

import typer
from rich.table import Table
from rich.text import Text

from kdbench.cli.app import app
from kdbench.cli.reporter import out
from kdbench.core.errors import UserError, check_range, shortened
from kdbench.data.registry import get_dataset_spec
from kdbench.models.taps import INTERMEDIATES, ModelStages, stage_info
from kdbench.models.zoo import create_model, is_model, list_architectures
from kdbench.spec.config import convert_free_kwargs

models_app = typer.Typer(help="Model architectures: their stages and embedding, as feature methods tap them.",
                         no_args_is_help=True)
app.add_typer(models_app, name="models")

# CIFAR's images are 32 px by definition: its datasets have no image_size parameter to read it from.
_FIXED_SIZES = {"cifar10": 32, "cifar100": 32}
# The scopes a run's `--set` gives model options under; here the scope may be left out.
_MODEL_SCOPES = ("student", "teacher")


def model_options(items: list[str] | None) -> dict[str, object]:
    """`--set KEY=V` (or `student.KEY=V` / `teacher.KEY=V`, as `kdbench run` takes them) → timm kwargs, typed as
    a run types them (kdbench.spec.config.convert_free_kwargs)."""
    raw: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        scope, dot, name = key.strip().partition(".")
        if dot and scope in _MODEL_SCOPES:
            key = name
        key = key.strip()
        if not sep or not key or "." in key:
            raise UserError(f"--set expects a model option KEY=VALUE (e.g. img_size=32, depth=2), got "
                            f"'{shortened(item)}'")
        raw[key] = value.strip()
    return convert_free_kwargs(raw, "model")


def input_size(dataset: str, image_size: int | None) -> int:
    """The side of the dataset's images (its `image_size` parameter's default), or `image_size` when given."""
    spec = get_dataset_spec(dataset)
    if image_size is not None:
        check_range("--image-size", image_size, 1, 4096)
        return image_size
    size = getattr(spec.params, "image_size", None) or _FIXED_SIZES.get(spec.name)
    if size is None:
        raise UserError(f"dataset {spec.name} does not fix an image size: pass --image-size N")
    return int(size)


def describe_model(name: str, dataset: str, image_size: int, options: dict[str, object],
                   cifar_stem: bool | None) -> tuple[ModelStages, bool]:
    """(the stages of `name` built as a run on `dataset` builds it, whether the small-image stem is on). The stem
    follows the dataset recipe's `cifar_stem` where the family has one (`cifar_stem=None`), or as asked."""
    if not is_model(name):
        close = difflib.get_close_matches(name, list_architectures(), n=8, cutoff=0.6)
        hint = f"close names: {', '.join(close)}" if close else "no close name"
        raise UserError(f"unknown model '{shortened(name)}'; {hint} (any timm architecture, e.g. "
                        "timm.list_models('vit_*'), or kdbench's own: cifar_resnet8, gnn2, …)")
    spec = get_dataset_spec(dataset)
    stem = spec.recipe.cifar_stem if cifar_stem is None else cifar_stem

    def build(with_stem: bool):
        return create_model(name, num_classes=10, in_chans=3, image_size=image_size, cifar_stem=with_stem,
                            **options)

    try:
        model = build(stem)
    except UserError:
        if not stem or cifar_stem is not None:
            raise
        stem = False  # the recipe's stem does not exist for this family (a ViT): the model keeps its own
        model = build(stem)
    if getattr(model, "feature_info", None) is None:
        raise UserError(f"{name} has no feature_info: it has no stages to tap (logit methods only)")
    try:
        return stage_info(model, 3, image_size), stem
    except (RuntimeError, AssertionError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        # A patch-embedding model is built for one input size; a CNN too deep for a small image needs a larger one.
        fix = f"build it for that size with --set img_size={image_size}" if hasattr(model, "patch_embed") \
            else "choose a larger --image-size"
        raise UserError(f"{name} does not take a {image_size}×{image_size} input ({shortened(first, 160)}): "
                        f"{fix}") from None


@models_app.command("describe")
def describe_command(
    name: str = typer.Argument(..., help="Architecture: any timm model or kdbench's own (cifar_resnet8, gnn2, …)."),
    dataset: str = typer.Option("cifar100", "--dataset", "-d", help="Whose input size and recipe stem to use."),
    image_size: int = typer.Option(None, "--image-size", help="Input side in pixels \\[default: the dataset's]."),
    sets: list[str] = typer.Option(None, "--set", help="Model option KEY=VALUE, repeatable, as `--set "
                                   "student.KEY=VALUE` gives it in a run: img_size=32, patch_size=4, depth=2."),
    cifar_stem: bool = typer.Option(None, "--cifar-stem/--no-cifar-stem", help="Swap a timm CNN's stem for the "
                                    "small-image one \\[default: the dataset recipe's, where the family has one]."),
) -> None:
    """Print a model's stages as the feature methods tap them: index (what fitnet.hint_stage and at.pairs name),
    module, output shape C×H×W, stride (input side / H) and channels, then its embedding width (the classifier's
    input: what rkd, pkt, crd and hkd use).

    Example: kdbench models describe deit_tiny_patch16_224 --dataset digits --set img_size=16 --set patch_size=4
    """
    size = input_size(dataset, image_size)
    info, stem = describe_model(name, dataset, size, model_options(sets), cifar_stem)
    table = Table(title=Text(f"{name} at {size}×{size} ({dataset}{', small-image stem' if stem else ''})"))
    for col in ("index", "module", "shape", "stride", "channels"):
        table.add_column(col, justify="left" if col == "module" else "right")
    for s in info.stages:
        stride = "—" if s.stride is None else f"{s.stride:g}"
        table.add_row(str(s.index), Text(s.module), "×".join(map(str, s.shape)), stride, str(s.channels))
    out.print(table)
    out.print("stages read by " + ("forward_intermediates (token maps laid out N×C×H×W)" if info.mode == INTERMEDIATES
                                   else "hooks on its feature_info modules (outputs as the modules return them)"),
              highlight=False)
    width = "none (no classifier)" if info.embedding_width is None else str(info.embedding_width)
    out.print(f"embedding width: {width}", highlight=False)
