"""The small-image CNN stem of the CIFAR KD literature, applied to timm models.

timm builds ImageNet stems: a ResNet's 7×7 stride-2 conv + 3×3 stride-2 max-pool shrink a 32 px CIFAR image to
8 px before the first stage. RepDistiller/CRD's CIFAR networks start with a 3×3 stride-1 conv and no pooling, so
the stages see 32/16/8/4 px. :func:`apply_cifar_stem` makes that change in place on an untrained timm model:

- ResNet family (ResNet, Wide-ResNet, ResNeXt, SE-ResNet, the `d` variants — everything timm builds with its
  `ResNet` class): `conv1` becomes a 3×3 stride-1 conv (a deep stem keeps its convs, its first one at stride 1)
  and `maxpool` becomes Identity;
- MobileNetV3 and the EfficientNet class (EfficientNet, MobileNetV2, MNASNet…): `conv_stem` at stride 1;
- VGG: unchanged (timm's VGG already opens with 3×3 stride-1 convs and keeps its five pools, as CIFAR VGGs do);
- the `cifar_` architectures (kdbench.models.cifar, `small_image_native = True`): unchanged, CIFAR-shaped already.

`feature_info` reductions are updated so `FeatureTap`, timm's feature API and anything sizing modules from them
stay right. Other families raise a UserError rather than silently keeping a stem that discards 15/16 of a
CIFAR image.
"""

from __future__ import annotations

import torch.nn as nn
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import ResNet
from timm.models.vgg import VGG

from kdbench.core.errors import UserError

SUPPORTED = "ResNet/Wide-ResNet/ResNeXt (timm ResNet), MobileNetV3, EfficientNet/MobileNetV2, VGG"


def _stride(module: nn.Module) -> int:
    if isinstance(module, nn.Identity):
        return 1
    stride = getattr(module, "stride", None)
    if stride is None:  # a Sequential pooling block (timm's replace_stem_pool): its first conv sets the stride
        first = next((m for m in module.modules() if isinstance(m, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d)), None)
        stride = getattr(first, "stride", 1)
    return int(stride[0] if isinstance(stride, tuple) else stride)


def _divide_reductions(model: nn.Module, factor_of: dict[str, int], default: int) -> None:
    """Divide each feature_info reduction by the stride no longer applied before that module."""
    model.feature_info = [
        {**f, "reduction": max(1, f["reduction"] // factor_of.get(f["module"], default))}
        for f in model.feature_info
    ]


def _resnet(model: ResNet) -> None:
    conv1 = model.conv1
    if isinstance(conv1, nn.Conv2d):
        conv_stride = _stride(conv1)
        model.conv1 = nn.Conv2d(conv1.in_channels, conv1.out_channels, 3, stride=1, padding=1, bias=False)
    else:  # deep stem (resnet*d, resnet*c): three 3×3 convs, only the first strided
        first = next(m for m in conv1.modules() if isinstance(m, nn.Conv2d))
        conv_stride = _stride(first)
        first.stride = (1, 1)
    pool_stride = _stride(model.maxpool)
    model.maxpool = nn.Identity()
    # Stem outputs (conv1/bn1/act1) lose the conv's stride; everything after the pool loses both.
    stem = {"conv1": conv_stride, "bn1": conv_stride, "act1": conv_stride}
    _divide_reductions(model, stem, conv_stride * pool_stride)


def _conv_stem(model: MobileNetV3 | EfficientNet) -> None:
    factor = _stride(model.conv_stem)
    model.conv_stem.stride = (1, 1)  # works for timm's Conv2dSame too: it pads from the stride at run time
    _divide_reductions(model, {}, factor)


def apply_cifar_stem(model: nn.Module, name: str) -> nn.Module:
    """Give `model` (an untrained timm CNN called `name`) the 3×3 stride-1, no-max-pool stem; returns it.
    Models built for small images already (the `cifar_` architectures) are returned unchanged."""
    if getattr(model, "small_image_native", False):
        return model
    if isinstance(model, ResNet):
        _resnet(model)
    elif isinstance(model, MobileNetV3 | EfficientNet):
        _conv_stem(model)
    elif isinstance(model, VGG):
        pass
    else:
        raise UserError(
            f"recipe.cifar_stem: no small-image stem for '{name}' ({type(model).__name__}); supported: "
            f"{SUPPORTED}. Pass --set recipe.cifar_stem=false (and teacher_recipe.cifar_stem=false) to keep its stem"
        )
    return model
