"""MobileNetV2 (Sandler et al., 2018) at width 0.5 for CIFAR: the CRD codebase's `MobileNetV2` (`mobile_half`).

The paper's layout — a 3×3 stride-2 conv with 32·w filters (`conv1`), seven groups (`blocks.0`…`blocks.6`) of
inverted residual blocks (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2)
(6,320,1,1) with c scaled by w = 0.5, a 1×1 conv to 1280 channels (`conv2`; not scaled below width 1), global
average pooling and one Linear (`classifier.0`). A block is 1×1 expand (×t)-BN-ReLU, 3×3 depthwise-BN-ReLU,
1×1 linear projection-BN, in one `conv` Sequential, with an identity shortcut when stride 1 and widths match.
Unlike the ImageNet network, the second group does not stride: on 32 px inputs the maps are 16/16/8/4/4/2/2 px.

Feature points (RepDistiller's `is_feat`): `conv1`, `blocks.1`, `blocks.2`, `blocks.4`, `blocks.6`. The group
outputs are linear (no ReLU after the projection), so the pre-activation points are the same modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature

# (expansion t, channels c, blocks n, first stride s) per group, as the paper's Table 2 with CIFAR strides.
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
# The groups whose outputs are stage features (after them the resolution halves or the network ends).
_STAGE_GROUPS = (1, 2, 4, 6)


def _conv_bn_relu(in_chs: int, out_chs: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU())


class InvertedResidual(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_chs * expand
        self.use_res_connect = stride == 1 and in_chs == out_chs
        self.conv = nn.Sequential(
            nn.Conv2d(in_chs, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), nn.ReLU(),
            nn.Conv2d(mid, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class CifarMobileNetV2(CifarNet):
    head_path = "classifier.0"

    def __init__(
        self, width_mult: float = 0.5, num_classes: int = 100, in_chans: int = 3, preact: bool = False
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        in_chs = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(in_chans, in_chs, 3, stride=2)
        infos, reduction = [feature("conv1", in_chs, 2)], 2
        self.blocks = nn.ModuleList()
        for g, (t, c, n, s) in enumerate(SETTINGS):
            out_chs = int(c * width_mult)
            group = []
            for i in range(n):
                group.append(InvertedResidual(in_chs, out_chs, s if i == 0 else 1, t))
                in_chs = out_chs
            self.blocks.append(nn.Sequential(*group))
            reduction *= s
            if g in _STAGE_GROUPS:
                infos.append(feature(f"blocks.{g}", out_chs, reduction))
        self.num_features = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_chs, self.num_features, 1)
        self.classifier = nn.Sequential(self._new_head(num_classes))
        self._set_features(infos, infos, preact)
        for m in self.modules():  # He et al. initialisation (fan-out normal); a small normal for the classifier
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        for group in self.blocks:
            x = group(x)
        return self.conv2(x)


default_cfgs = cifar_cfgs(["cifar_mobilenetv2"], first_conv="conv1.0", classifier="classifier.0")


@register_model
def cifar_mobilenetv2(pretrained: bool = False, **kwargs: Any) -> CifarMobileNetV2:
    """The CRD codebase's `MobileNetV2` student: `mobile_half`, i.e. expansion 6 at width 0.5."""
    return build(CifarMobileNetV2, "cifar_mobilenetv2", pretrained, 5, **kwargs)
