"""VGG networks (Simonyan & Zisserman, 2015) with BatchNorm, for CIFAR, as the CRD codebase builds them.

The convolutional part of VGG-11/13/16/19 (configurations A/B/D/E) and an 8-layer "S" variant, in five
blocks `block0`…`block4` of 3×3 conv (with bias) + BN + ReLU, 64/128/256/512/512 filters; the fully connected
layers are replaced by global average pooling and one Linear (`classifier`, 512 inputs). Each block's last
ReLU is its own module (`relu0`…`relu4`), so a block's output is its pre-activation map. 2×2 max-pools
(`pool0`…`pool2`) follow blocks 0-2; `pool3` follows block 3 only on 64-px inputs, as in the original (its
Tiny-ImageNet setting), so on 32-px CIFAR images blocks 3 and 4 both run at 4×4.

Feature points: `relu0`…`relu4` (activated block outputs). Pre-activation points: `relu0`, then `block1`…
`block4` (RepDistiller's `preact=True`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import register_model

from kdbench.models.cifar._common import CifarNet, build, cifar_cfgs, feature

# Filters per conv layer of each block, for the CIFAR VGGs' configurations (S = the 8-layer one).
CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "S": ((64,), (128,), (256,), (512,), (512,)),
    "A": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "B": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "D": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "E": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}
# Feature map stride after each block on 32-px inputs (pools after blocks 0, 1, 2 only).
_REDUCTIONS = (1, 2, 4, 8, 8)


def _block(widths: tuple[int, ...], in_chs: int) -> nn.Sequential:
    """conv-BN-ReLU per width, without the last ReLU (indices 0, 1, 2, 3, … as the original's keys)."""
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_chs, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        in_chs = w
    return nn.Sequential(*layers[:-1])


class CifarVGG(CifarNet):
    head_path = "classifier"

    def __init__(self, config: str, num_classes: int = 100, in_chans: int = 3, preact: bool = False) -> None:
        super().__init__()
        cfg = CONFIGS[config]
        self.num_classes = num_classes
        in_chs = in_chans
        for i, widths in enumerate(cfg):
            setattr(self, f"block{i}", _block(widths, in_chs))
            setattr(self, f"relu{i}", nn.ReLU())
            if i < 4:
                setattr(self, f"pool{i}", nn.MaxPool2d(2, 2))
            in_chs = widths[-1]
        self.num_features = in_chs
        self.classifier = self._new_head(num_classes)
        post = [feature(f"relu{i}", w[-1], r) for i, (w, r) in enumerate(zip(cfg, _REDUCTIONS, strict=True))]
        pre = [post[0]] + [feature(f"block{i}", cfg[i][-1], _REDUCTIONS[i]) for i in range(1, 5)]
        self._set_features(post, pre, preact)
        for m in self.modules():  # He et al. initialisation (fan-out normal); a small normal for the classifier
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        pool3 = x.shape[2] == 64
        for i in range(5):
            x = getattr(self, f"relu{i}")(getattr(self, f"block{i}")(x))
            if i < 3 or (i == 3 and pool3):
                x = getattr(self, f"pool{i}")(x)
        return x


default_cfgs = cifar_cfgs([f"cifar_vgg{d}" for d in (8, 11, 13, 16, 19)], first_conv="block0.0",
                          classifier="classifier")


@register_model
def cifar_vgg8(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build(CifarVGG, "cifar_vgg8", pretrained, 5, config="S", **kwargs)


@register_model
def cifar_vgg11(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build(CifarVGG, "cifar_vgg11", pretrained, 5, config="A", **kwargs)


@register_model
def cifar_vgg13(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build(CifarVGG, "cifar_vgg13", pretrained, 5, config="B", **kwargs)


@register_model
def cifar_vgg16(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build(CifarVGG, "cifar_vgg16", pretrained, 5, config="D", **kwargs)


@register_model
def cifar_vgg19(pretrained: bool = False, **kwargs: Any) -> CifarVGG:
    return build(CifarVGG, "cifar_vgg19", pretrained, 5, config="E", **kwargs)
