"""ShuffleNet V1 (Zhang et al., 2018) with 3 groups for CIFAR: the CRD codebase's `ShuffleV1`.

A 1×1 conv to 24 channels (`conv1`, `bn1`, ReLU; no stride, no max-pool), three stages (`layer1`…`layer3`) of
4/8/4 ShuffleNet units with 240/480/960 output channels, global average pooling and one Linear (`linear`).
A unit is a 1×1 group conv to a quarter of its output width (not grouped when its input is the 24-channel
stem) + BN + ReLU, a channel shuffle, a 3×3 depthwise conv + BN + ReLU (the paper has no ReLU after the
depthwise conv; this codebase does), a 1×1 group conv + BN. The first unit of each stage strides by 2 and
concatenates a 3×3 average-pooled shortcut (so its branch makes output − input channels); the others add the
identity. A ReLU follows the sum or concatenation. Maps: 16/8/4 px at 32 px input.

Feature points: `relu` (the stem's activation), `layer1`…`layer3`. Pre-activation points: each stage's last
unit's `preact` (the sum before its ReLU).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature


class ChannelShuffle(nn.Module):
    """Interleave the channels of `groups` groups: (N, g·c, H, W) → view (N, g, c) → transpose → flatten."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        return x.view(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ShuffleUnit(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, groups: int, stem_input: bool) -> None:
        super().__init__()
        self.stride = stride
        mid = out_chs // 4
        first_groups = 1 if stem_input else groups  # the 24-channel stem is too narrow to split into groups
        self.conv1 = nn.Conv2d(in_chs, mid, 1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shuffle1 = ChannelShuffle(first_groups)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_chs, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_chs)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else nn.Identity()
        self.relu = nn.ReLU()
        self.preact = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.shuffle1(self.relu(self.bn1(self.conv1(x))))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        res = self.shortcut(x)
        return self.relu(self.preact(torch.cat([out, res], 1) if self.stride == 2 else out + res))


class CifarShuffleNetV1(CifarNet):
    head_path = "linear"

    def __init__(
        self,
        out_planes: tuple[int, ...] = (240, 480, 960),
        num_blocks: tuple[int, ...] = (4, 8, 4),
        groups: int = 3,
        num_classes: int = 100,
        in_chans: int = 3,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1 = nn.Conv2d(in_chans, 24, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        self.relu = nn.ReLU()
        post, pre = [feature("relu", 24, 1)], [feature("relu", 24, 1)]
        in_chs, reduction = 24, 1
        for s, (width, n) in enumerate(zip(out_planes, num_blocks, strict=True), start=1):
            units = []
            for i in range(n):
                # the first unit concatenates its input (pooled) to its branch, which makes the rest
                branch = width - in_chs if i == 0 else width
                units.append(ShuffleUnit(in_chs, branch, 2 if i == 0 else 1, groups, stem_input=in_chs == 24))
                in_chs = width
            setattr(self, f"layer{s}", nn.Sequential(*units))
            reduction *= 2
            post.append(feature(f"layer{s}", width, reduction))
            pre.append(feature(f"layer{s}.{n - 1}.preact", width, reduction))
        self.num_features = in_chs
        self.linear = self._new_head(num_classes)
        self._set_features(post, pre, preact)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))


default_cfgs = cifar_cfgs(["cifar_shufflev1"], first_conv="conv1", classifier="linear")


@register_model
def cifar_shufflev1(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV1:
    """ShuffleNet V1, g = 3, stage widths 240/480/960 (the CRD codebase's `ShuffleV1`)."""
    return build(CifarShuffleNetV1, "cifar_shufflev1", pretrained, 4, **kwargs)
