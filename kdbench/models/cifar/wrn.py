"""Wide ResNets (Zagoruyko & Komodakis, 2016) for CIFAR, as the CRD codebase builds them: WRN-d-k.

A 3×3 conv with 16 filters, three groups (`block1`…`block3`, each holding `layer`) of n = (d − 4) / 6
pre-activation basic blocks (BN-ReLU-3×3 conv, BN-ReLU-3×3 conv) with 16k/32k/64k filters on 32/16/8 px maps,
then BN-ReLU (`bn1`), global average pooling and one Linear (`fc`). A block whose width changes takes its
shortcut from the activated input through a 1×1 conv (`convShortcut`); no dropout (the codebase trains at 0).

Feature points: `conv1`, then the three groups' outputs (pre-activation networks: these are sums, not yet
normalised). Pre-activation points as RepDistiller's `preact=True`: each group's output after the BN that opens
the next group (`block2.layer.0.bn1`, `block3.layer.0.bn1`, then the final `bn1`) — normalised, before ReLU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature


def _conv3x3(in_chs: int, out_chs: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False)


class WideBasicBlock(nn.Module):
    """BN-ReLU-conv3×3, BN-ReLU-conv3×3, + shortcut (identity, or 1×1 conv of the activated input)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_chs)
        self.relu1 = nn.ReLU()
        self.conv1 = _conv3x3(in_chs, out_chs, stride)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.relu2 = nn.ReLU()
        self.conv2 = _conv3x3(out_chs, out_chs)
        self.equal_in_out = in_chs == out_chs
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(in_chs, out_chs, 1, stride=stride, bias=False)  # noqa: N815 (original key)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        return (x if self.equal_in_out else self.convShortcut(activated)) + out


class WideGroup(nn.Module):
    """n blocks of one width; the first may stride. (A module of its own: the original's `blockK.layer` keys.)"""

    def __init__(self, n: int, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[WideBasicBlock(in_chs if i == 0 else out_chs, out_chs, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(CifarNet):
    def __init__(
        self, depth: int, widen_factor: int, num_classes: int = 100, in_chans: int = 3, preact: bool = False
    ) -> None:
        super().__init__()
        assert (depth - 4) % 6 == 0, "a Wide ResNet has depth 6n + 4"
        n = (depth - 4) // 6
        widths = (16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor)
        self.num_layers = depth
        self.num_classes = num_classes
        self.conv1 = _conv3x3(in_chans, widths[0])
        self.block1 = WideGroup(n, widths[0], widths[1], 1)
        self.block2 = WideGroup(n, widths[1], widths[2], 2)
        self.block3 = WideGroup(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU()
        self.num_features = widths[3]
        self.fc = self._new_head(num_classes)
        post = [feature("conv1", widths[0], 1), feature("block1", widths[1], 1), feature("block2", widths[2], 2),
                feature("block3", widths[3], 4)]
        pre = [post[0], feature("block2.layer.0.bn1", widths[1], 1), feature("block3.layer.0.bn1", widths[2], 2),
               feature("bn1", widths[3], 4)]
        self._set_features(post, pre, preact)
        for m in self.modules():  # He et al. initialisation (fan-out normal), as the original
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.relu(self.bn1(x))


default_cfgs = cifar_cfgs(["cifar_wrn_16_1", "cifar_wrn_16_2", "cifar_wrn_40_1", "cifar_wrn_40_2"],
                          first_conv="conv1", classifier="fc")


def _wrn(variant: str, pretrained: bool, depth: int, widen_factor: int, **kwargs: Any) -> WideResNet:
    return build(WideResNet, variant, pretrained, 4, depth=depth, widen_factor=widen_factor, **kwargs)


@register_model
def cifar_wrn_16_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _wrn("cifar_wrn_16_1", pretrained, 16, 1, **kwargs)


@register_model
def cifar_wrn_16_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _wrn("cifar_wrn_16_2", pretrained, 16, 2, **kwargs)


@register_model
def cifar_wrn_40_1(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _wrn("cifar_wrn_40_1", pretrained, 40, 1, **kwargs)


@register_model
def cifar_wrn_40_2(pretrained: bool = False, **kwargs: Any) -> WideResNet:
    return _wrn("cifar_wrn_40_2", pretrained, 40, 2, **kwargs)
