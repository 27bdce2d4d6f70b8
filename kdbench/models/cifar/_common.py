"""What the CIFAR architectures of the CRD codebase share: the timm model interface and the timm registration.

Each network is a plain `nn.Module` subclass of :class:`CifarNet`, which provides timm's classifier interface
(`num_classes`, `get_classifier()`, `reset_classifier()`, `forward_features`, `forward_head(pre_logits=...)`)
around two things a family defines: `forward_features(x)` (the last feature map, after its final activation)
and `head_path` (where the Linear classifier lives, so state-dict keys stay the original's: `fc`, `linear`,
`classifier`, `classifier.0`).

Stage features (what RepDistiller's `forward(x, is_feat=True)` returns) are hook points listed in timm's
`feature_info` format: index 0 is the stem's output, then one entry per stage. `preact_feature_info` lists the
pre-activation points of the same stages (RepDistiller's `preact=True`: the residual sum before its last ReLU);
building a model with `preact=True` makes them its `feature_info`, so FeatureTap and timm's `features_only`
return pre-activation maps. No activation in these models runs in place: a hook's captured tensor is never
overwritten by a later ReLU.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs

# RepDistiller's CIFAR-100 statistics (also kdbench.data.cifar's), for timm's data config of these models.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


def feature(module: str, num_chs: int, reduction: int) -> dict[str, Any]:
    """One timm `feature_info` entry: the hooked module's name, its output channels and its stride."""
    return {"module": module, "num_chs": num_chs, "reduction": reduction}


class CifarNet(nn.Module):
    """Base of the CIFAR networks: global average pooling + one Linear classifier at `head_path`."""

    # Built for 32 px inputs already (3×3 stride-1 or 1×1 stems): kdbench's `cifar_stem` must leave it alone.
    small_image_native = True
    head_path = "fc"
    num_features: int
    num_classes: int
    feature_info: list[dict[str, Any]]
    preact_feature_info: list[dict[str, Any]]

    def _set_features(self, post: list[dict[str, Any]], pre: list[dict[str, Any]], preact: bool) -> None:
        self.preact_feature_info = pre
        self.feature_info = pre if preact else post

    def _new_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def get_classifier(self) -> nn.Module:
        return self.get_submodule(self.head_path)

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        if global_pool not in (None, "avg"):
            raise ValueError(f"{type(self).__name__} pools by global average only, not '{global_pool}'")
        self.num_classes = num_classes
        parent_path, _, name = self.head_path.rpartition(".")
        parent = self.get_submodule(parent_path) if parent_path else self
        setattr(parent, name, self._new_head(num_classes))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))  # the originals' AvgPool over the whole last map (4×4 or 8×8 at 32 px)
        return x if pre_logits else self.get_classifier()(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def cifar_cfgs(names: list[str], first_conv: str, classifier: str) -> dict:
    """timm pretrained configs without weights (a family module's `default_cfgs`, which timm's register_model
    reads): 100 classes at 32 px unless told otherwise, CIFAR-100 statistics, as in the papers."""
    cfg = {
        "url": "", "num_classes": 100, "input_size": (3, 32, 32), "pool_size": None, "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR100_MEAN, "std": CIFAR100_STD, "first_conv": first_conv,
        "classifier": classifier,
    }
    return generate_default_cfgs({name: dict(cfg) for name in names})


def build(cls: type[CifarNet], variant: str, pretrained: bool, num_stages: int, **kwargs: Any) -> CifarNet:
    """Build through timm so `features_only=True`, pretrained cfgs and timm's defaults work as for timm's own
    models. Features come from hooks on the unmodified model (no rewrite: the stage modules keep their names)."""
    feature_cfg = {"feature_cls": "hook", "no_rewrite": True, "out_indices": tuple(range(num_stages))}
    return build_model_with_cfg(cls, variant, pretrained, feature_cfg=feature_cfg, **kwargs)
