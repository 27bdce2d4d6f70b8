"""One model factory for teachers and students: any timm architecture, plus kdbench's own (e.g. the GNN student).

Custom architectures register with :func:`register_model`; their builder receives the dataset's
`num_classes`, `in_chans` and `image_size` plus any `--set student.KEY=VALUE` options. Weights are never
fetched: timm's `pretrained=True` would retry a hub for ~46 s offline, so it is refused here; weights come through
the teacher zoo, `--teacher-ckpt`, or a pretrained teacher `--teacher ARCH.TAG` (kdbench.teachers.pretrained,
which finds timm's file offline and hands it to timm itself).
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import timm
import torch.nn as nn

from kdbench.core.errors import UserError, unknown_name
from kdbench.core.registry import Registry

ModelBuilder = Callable[..., nn.Module]

# `cifar` registers its architectures in timm's registry (imported by kdbench.models itself), not in this one.
_NOT_ARCHITECTURES = {"zoo", "features", "stem", "cifar", "crd_checkpoint", "state_dicts"}


def _load_custom_models() -> None:
    # Every other module in kdbench.models defines architectures and registers them on import: found by its file
    # in this folder (the package's __init__ imports this module, so this module never imports the package).
    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in _NOT_ARCHITECTURES and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


CUSTOM_MODELS: Registry[ModelBuilder] = Registry("model", loader=_load_custom_models)

# Learning-rate scale of light students relative to the dataset recipe's lr. The CRD recipe trains MobileNetV2
# and ShuffleNet students at 0.01 instead of 0.05 (RepDistiller); custom students declare theirs when registered.
# timm architectures (timm's own and the CRD codebase's `cifar_` ones registered in timm) declare nothing, so the
# rule is keyed on their names: timm's MobileNetV2s and ShuffleNets, cifar_mobilenetv2 and cifar_shufflev1/v2.
_LR_SCALES: dict[str, float] = {}
LIGHT_STUDENT_LR_SCALE = 0.2  # 0.05 × 0.2 = 0.01
_TIMM_LIGHT_STUDENTS = re.compile(r"^(mobilenetv2|shufflenet|cifar_mobilenetv2$|cifar_shufflev[12]$)")


# Architectures whose prediction for one image depends on the other images of its batch (a graph over the batch),
# as a predicate of the build options: their test numbers are transductive and the tables say so.
_TRANSDUCTIVE: dict[str, Callable[[dict[str, Any]], bool]] = {}


def register_model(
    name: str, *, lr_scale: float = 1.0, transductive: Callable[[dict[str, Any]], bool] | None = None
) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register a non-timm architecture. Its builder is called as
    `builder(num_classes=..., in_chans=..., image_size=..., **options)`. `lr_scale` multiplies the recipe's lr
    when this architecture is the student (unless the user sets `--lr`). `transductive(options)` says whether the
    model built with `options` predicts an image from the other images of its batch."""

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        _LR_SCALES[name] = lr_scale
        if transductive is not None:
            _TRANSDUCTIVE[name] = transductive
        return CUSTOM_MODELS.add(name, builder)

    return decorator


def is_transductive_model(name: str, options: dict[str, Any]) -> bool:
    """Whether architecture `name` built with `options` predicts each image from the other images of its batch."""
    if name not in CUSTOM_MODELS:  # timm's architectures judge every image alone (BatchNorm in eval mode)
        return False
    predicate = _TRANSDUCTIVE.get(name)
    return bool(predicate(options)) if predicate is not None else False


def student_lr_scale(name: str) -> float:
    """The factor the dataset recipe's lr is multiplied by when `name` is the student (see _TIMM_LIGHT_STUDENTS)."""
    if name in CUSTOM_MODELS:
        return _LR_SCALES.get(name, 1.0)
    return LIGHT_STUDENT_LR_SCALE if _TIMM_LIGHT_STUDENTS.match(name) else 1.0


def is_model(name: str) -> bool:
    return name in CUSTOM_MODELS or timm.is_model(name)


def list_architectures() -> list[str]:
    return CUSTOM_MODELS.names() + timm.list_models()


def create_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    image_size: int = 32,
    cifar_stem: bool = False,
    **options: Any,
) -> nn.Module:
    """Build an untrained model named `name` for a dataset's classes, channels and image side.

    `cifar_stem=True` swaps a timm CNN's ImageNet stem for the small-image one (see `kdbench.models.stem`);
    custom architectures and the `cifar_` ones (built for 32 px already) ignore it.
    """
    if options.get("pretrained"):
        raise UserError(
            "pretrained=True is not a model option: name timm's pretrained weights as the teacher, --teacher "
            "ARCH.TAG (e.g. resnet34.tv_in1k, loaded offline), train one with `kdbench teachers train`, or pass "
            "your own weights with --teacher-ckpt PATH"
        )
    options.pop("pretrained", None)
    # timm would read these files itself, outside kdbench's safe loader and the teacher's sha256 bookkeeping.
    file_options = sorted({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay"} & set(options))
    if file_options:
        raise UserError(f"model option {file_options[0]} is not accepted: pass weights with --teacher-ckpt PATH")
    if name in CUSTOM_MODELS:
        return CUSTOM_MODELS.get(name)(
            num_classes=num_classes, in_chans=in_chans, image_size=image_size, **options
        )
    if not timm.is_model(name):
        raise unknown_name("model", name, list_architectures(), max_listed=30)
    try:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **options)
    except TypeError as e:  # an option the architecture does not take
        raise UserError(f"model '{name}' rejected its options {sorted(options)}: {e}") from None
    if cifar_stem:
        from kdbench.models.stem import apply_cifar_stem

        model = apply_cifar_stem(model, name)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_weight_layers(model: nn.Module) -> int:
    """Layers with weights along the depth, as papers count them (convolutions + linear layers; a ResNet-152
    gives 152 counting its projection shortcuts out). Modules may report their own depth via `num_layers`."""
    own = getattr(model, "num_layers", None)
    if isinstance(own, int):
        return own
    n = 0
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d | nn.Linear) and "downsample" not in name:
            n += 1
    return n
