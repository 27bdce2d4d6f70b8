"""ShuffleNet V2 1× (Ma et al., 2018) for CIFAR: the CRD codebase's `ShuffleV2`.

A 1×1 conv to 24 channels (`conv1`, `bn1`, ReLU; no stride, no max-pool), three stages (`layer1`…`layer3`)
with 116/232/464 channels, each a down-sampling unit followed by 3/7/3 basic units, then a 1×1 conv to 1024
(`conv2`, `bn2`, `relu2`), global average pooling and one Linear (`linear`). Maps: 16/8/4 px at 32 px input.

- Down-sampling unit (paper Fig. 3d): left branch 3×3 depthwise stride-2 conv-BN, 1×1 conv-BN-ReLU; right
  branch 1×1 conv-BN-ReLU, 3×3 depthwise stride-2 conv-BN, 1×1 conv-BN-ReLU; each branch makes half the output
  channels; concatenate, shuffle (2 groups). (The paper's left branch takes the full input; so does this one.)
- Basic unit (Fig. 3c): split the channels in halves; the second half goes through 1×1 conv-BN-ReLU, 3×3
  depthwise conv-BN, 1×1 conv-BN-ReLU; concatenate with the untouched first half, shuffle.

Feature points: `relu` (the stem's activation), `layer1`…`layer3`. Pre-activation points: each stage's last
unit's `preact`: the concatenation of the untouched half and the branch before its last ReLU, not shuffled
(what RepDistiller's `preact=True` returns).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature
from kdbench.models.cifar.shufflenetv1 import ChannelShuffle


def _conv_bn(
    in_chs: int, out_chs: int, kernel: int, stride: int = 1, depthwise: bool = False
) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    conv = nn.Conv2d(in_chs, out_chs, kernel, stride=stride, padding=kernel // 2,
                     groups=in_chs if depthwise else 1, bias=False)
    return conv, nn.BatchNorm2d(out_chs)


class BasicUnit(nn.Module):
    def __init__(self, channels: int, is_last: bool) -> None:
        super().__init__()
        half = channels // 2
        self.conv1, self.bn1 = _conv_bn(half, half, 1)
        self.conv2, self.bn2 = _conv_bn(half, half, 3, depthwise=True)
        self.conv3, self.bn3 = _conv_bn(half, half, 1)
        self.relu = nn.ReLU()
        self.shuffle = ChannelShuffle(2)
        # Only a stage's last unit exposes its pre-activation map (it costs one extra concatenation).
        self.preact = nn.Identity() if is_last else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kept, x2 = x.chunk(2, dim=1)
        branch = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x2)))))
        branch = self.bn3(self.conv3(branch))
        if self.preact is not None:
            self.preact(torch.cat([kept, branch], 1))
        return self.shuffle(torch.cat([kept, self.relu(branch)], 1))


class DownUnit(nn.Module):
    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        mid = out_chs // 2
        # left branch
        self.conv1, self.bn1 = _conv_bn(in_chs, in_chs, 3, stride=2, depthwise=True)
        self.conv2, self.bn2 = _conv_bn(in_chs, mid, 1)
        # right branch
        self.conv3, self.bn3 = _conv_bn(in_chs, mid, 1)
        self.conv4, self.bn4 = _conv_bn(mid, mid, 3, stride=2, depthwise=True)
        self.conv5, self.bn5 = _conv_bn(mid, mid, 1)
        self.relu = nn.ReLU()
        self.shuffle = ChannelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left = self.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(self.relu(self.bn3(self.conv3(x)))))
        right = self.relu(self.bn5(self.conv5(right)))
        return self.shuffle(torch.cat([left, right], 1))


class CifarShuffleNetV2(CifarNet):
    head_path = "linear"

    def __init__(
        self,
        out_channels: tuple[int, ...] = (116, 232, 464, 1024),
        num_blocks: tuple[int, ...] = (3, 7, 3),
        num_classes: int = 100,
        in_chans: int = 3,
        preact: bool = False,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv1, self.bn1 = _conv_bn(in_chans, 24, 1)
        self.relu = nn.ReLU()
        post, pre = [feature("relu", 24, 1)], [feature("relu", 24, 1)]
        in_chs, reduction = 24, 1
        for s, (width, n) in enumerate(zip(out_channels[:3], num_blocks, strict=True), start=1):
            units: list[nn.Module] = [DownUnit(in_chs, width)]
            units += [BasicUnit(width, is_last=i == n - 1) for i in range(n)]
            setattr(self, f"layer{s}", nn.Sequential(*units))
            in_chs, reduction = width, reduction * 2
            post.append(feature(f"layer{s}", width, reduction))
            pre.append(feature(f"layer{s}.{n}.preact", width, reduction))
        self.conv2, self.bn2 = _conv_bn(in_chs, out_channels[3], 1)
        self.relu2 = nn.ReLU()  # not `relu`: hooks on `relu` must see the stem only
        self.num_features = out_channels[3]
        self.linear = self._new_head(num_classes)
        self._set_features(post, pre, preact)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.relu2(self.bn2(self.conv2(x)))


default_cfgs = cifar_cfgs(["cifar_shufflev2"], first_conv="conv1", classifier="linear")


@register_model
def cifar_shufflev2(pretrained: bool = False, **kwargs: Any) -> CifarShuffleNetV2:
    """ShuffleNet V2 1× (the CRD codebase's `ShuffleV2`)."""
    return build(CifarShuffleNetV2, "cifar_shufflev2", pretrained, 4, **kwargs)
