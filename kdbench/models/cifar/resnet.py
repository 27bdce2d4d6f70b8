"""CIFAR ResNets of the CRD codebase: the 6n+2 ResNets of He et al. (2016, §4.2) and the 32-px ResNet-50.

- `cifar_resnet{8,14,20,32,44,56,110}`: a 3×3 conv with 16 filters, then three stages of n basic blocks
  (two 3×3 convs each) on 32/16/8 px maps with 16/32/64 filters, global average pooling, one Linear (`fc`);
  depth = 6n + 2. Where a stage changes stride or width the shortcut is a 1×1 conv + BN (`downsample`), else
  the identity. `cifar_resnet8x4` / `cifar_resnet32x4` are the 4× wider versions (32 stem, 64/128/256 stages)
  that CRD uses as its strongest teacher/student pair.
- `cifar_resnet50`: the bottleneck ResNet-50 (stages 3/4/6/3 of 1×1-3×3-1×1 blocks, 64…512 × 4 channels) with
  the small-image stem (one 3×3 stride-1 conv, no max-pool): 32/16/8/4 px stages, shortcuts named `shortcut`,
  classifier `linear`, as RepDistiller's `ResNet50` (whose state-dict keys these are).

Feature points (timm `feature_info`): `relu` (the stem's activation), then `layer1`…`layer3` (`layer4` for
ResNet-50). Pre-activation points (`preact=True` or `preact_feature_info`): each stage's last block `preact`,
the residual sum before its final ReLU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature


def _conv_bn(in_chs: int, out_chs: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2, bias=False)
    return conv, nn.BatchNorm2d(out_chs)


def _projection(in_chs: int, out_chs: int, stride: int) -> nn.Module:
    """The shortcut: identity when shapes agree, else a strided 1×1 conv + BN (He et al.'s option B)."""
    if stride == 1 and in_chs == out_chs:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(in_chs, out_chs, 1, stride))


class BasicBlock(nn.Module):
    """3×3 conv-BN-ReLU, 3×3 conv-BN, + shortcut, ReLU. `preact` marks the sum before the last ReLU."""

    expansion = 1

    def __init__(self, in_chs: int, planes: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_chs, planes, 3, stride)
        self.relu = nn.ReLU()
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3)
        # The original codebase names the shortcut `downsample` (6n+2 ResNets) or `shortcut` (ResNet-50).
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, _projection(in_chs, planes, stride))
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(self.preact(out + getattr(self, self.shortcut_name)(x)))


class Bottleneck(nn.Module):
    """1×1 conv-BN-ReLU, 3×3 (strided) conv-BN-ReLU, 1×1 conv-BN to 4× planes, + shortcut, ReLU."""

    expansion = 4

    def __init__(self, in_chs: int, planes: int, stride: int, shortcut_name: str) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_chs, planes, 1)
        self.conv2, self.bn2 = _conv_bn(planes, planes, 3, stride)
        self.conv3, self.bn3 = _conv_bn(planes, planes * 4, 1)
        self.relu = nn.ReLU()
        self.shortcut_name = shortcut_name
        setattr(self, shortcut_name, _projection(in_chs, planes * 4, stride))
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(self.preact(out + getattr(self, self.shortcut_name)(x)))


class CifarResNet(CifarNet):
    """A small-image ResNet: 3×3 stride-1 stem, stages `layer1…` (the first unstrided, then stride 2 each)."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        stem_width: int,
        widths: tuple[int, ...],
        depths: tuple[int, ...],
        num_layers: int,
        shortcut_name: str = "downsample",
        head_path: str = "fc",
        num_classes: int = 100,
        in_chans: int = 3,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.head_path = head_path
        self.num_layers = num_layers  # depth as the papers count it (e.g. 8 for resnet8x4)
        self.num_classes = num_classes
        self.conv1, self.bn1 = _conv_bn(in_chans, stem_width, 3)
        self.relu = nn.ReLU()
        post, pre = [feature("relu", stem_width, 1)], [feature("relu", stem_width, 1)]
        in_chs, reduction = stem_width, 1
        for i, (planes, n) in enumerate(zip(widths, depths, strict=True), start=1):
            stride = 1 if i == 1 else 2
            reduction *= stride
            blocks = []
            for j in range(n):
                blocks.append(block(in_chs, planes, stride if j == 0 else 1, shortcut_name))
                in_chs = planes * block.expansion
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            post.append(feature(f"layer{i}", in_chs, reduction))
            pre.append(feature(f"layer{i}.{n - 1}.preact", in_chs, reduction))
        self.num_stages = len(widths)
        self.num_features = in_chs
        setattr(self, head_path, self._new_head(num_classes))
        self._set_features(post, pre, preact)
        for m in self.modules():  # He et al. initialisation, as the original
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return x


def _resnet(
    variant: str, pretrained: bool, depth: int, widths: tuple[int, int, int, int], **kwargs: Any
) -> CifarResNet:
    assert (depth - 2) % 6 == 0, "a basic-block CIFAR ResNet has depth 6n + 2"
    n = (depth - 2) // 6
    return build(CifarResNet, variant, pretrained, 4, block=BasicBlock, stem_width=widths[0], widths=widths[1:],
                 depths=(n, n, n), num_layers=depth, **kwargs)


_NARROW, _WIDE = (16, 16, 32, 64), (32, 64, 128, 256)

default_cfgs = {
    **cifar_cfgs([f"cifar_resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)] + ["cifar_resnet8x4", "cifar_resnet32x4"],
                 first_conv="conv1", classifier="fc"),
    **cifar_cfgs(["cifar_resnet50"], first_conv="conv1", classifier="linear"),
}


@register_model
def cifar_resnet8(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet8", pretrained, 8, _NARROW, **kwargs)


@register_model
def cifar_resnet14(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet14", pretrained, 14, _NARROW, **kwargs)


@register_model
def cifar_resnet20(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet20", pretrained, 20, _NARROW, **kwargs)


@register_model
def cifar_resnet32(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet32", pretrained, 32, _NARROW, **kwargs)


@register_model
def cifar_resnet44(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet44", pretrained, 44, _NARROW, **kwargs)


@register_model
def cifar_resnet56(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet56", pretrained, 56, _NARROW, **kwargs)


@register_model
def cifar_resnet110(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet110", pretrained, 110, _NARROW, **kwargs)


@register_model
def cifar_resnet8x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet8x4", pretrained, 8, _WIDE, **kwargs)


@register_model
def cifar_resnet32x4(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return _resnet("cifar_resnet32x4", pretrained, 32, _WIDE, **kwargs)


@register_model
def cifar_resnet50(pretrained: bool = False, **kwargs: Any) -> CifarResNet:
    return build(CifarResNet, "cifar_resnet50", pretrained, 5, block=Bottleneck, stem_width=64,
                 widths=(64, 128, 256, 512), depths=(3, 4, 6, 3), num_layers=50, shortcut_name="shortcut",
                 head_path="linear", **kwargs)
