"""Tiny configurations of the model families the feature tap and the pair matrix cover (issue #35), shared by
tests/test_taps.py and tests/test_pair_matrix.py. Every one takes a 32 px image: convnext_atto needs it (its
stride-32 last stage), and mixer_s16_224 fixes its patch size, depth and width (timm passes them before the
caller's kwargs), so only img_size shrinks it: 2 × 2 patches of 16 px."""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from kdbench.models import create_model

SIDE = 32
# family → (architecture, timm kwargs)
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "cifar_resnet": ("cifar_resnet8", {}),
    "resnet": ("resnet18", {}),
    "mobilenet": ("mobilenetv3_small_050", {}),
    "convnext": ("convnext_atto", {}),
    "vit": ("deit_tiny_patch16_224", {"img_size": SIDE, "patch_size": 8, "depth": 2, "embed_dim": 32,
                                      "num_heads": 2}),
    "swin": ("swin_tiny_patch4_window7_224", {"img_size": SIDE, "patch_size": 4, "window_size": 4,
                                              "depths": (1, 1), "num_heads": (1, 2), "embed_dim": 16}),
    "mixer": ("mixer_s16_224", {"img_size": SIDE}),
}
# The families built by timm with forward_intermediates (cifar_resnet8 is kdbench's own: hooks).
TIMM_FAMILIES = [f for f in FAMILIES if f != "cifar_resnet"]


def build(family: str, *, num_classes: int = 10, **extra: Any) -> nn.Module:
    name, kwargs = FAMILIES[family]
    return create_model(name, num_classes=num_classes, in_chans=3, image_size=SIDE, **kwargs, **extra)
