"""The small-image stem: 3×3 stride-1, no max-pool, feature_info reductions kept true for FeatureTap."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from timm.models.vgg import VGG

from kdbench.core.errors import UserError
from kdbench.models.features import FeatureTap
from kdbench.models.stem import apply_cifar_stem
from kdbench.models.zoo import create_model


def _measured_reductions(model: nn.Module, side: int = 32) -> list[int]:
    tap = FeatureTap(model, stages=range(len(model.feature_info)))
    model.eval()
    with torch.no_grad():
        f = tap(torch.randn(1, 3, side, side))
    tap.remove()
    return [side // f.stages[i].shape[-1] for i in range(len(model.feature_info))]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("resnet18", [1, 1, 2, 4, 8]),  # RepDistiller's CIFAR ResNet: stages at 32/32/16/8/4 px
        ("resnet10t", [1, 1, 2, 4, 8]),  # deep (tiered) stem: its first conv at stride 1
        ("mobilenetv3_small_050", [1, 2, 4, 8, 16]),
    ],
)
def test_stem_keeps_resolution_and_feature_info_matches_the_maps(name, expected):
    model = create_model(name, num_classes=100, cifar_stem=True)
    reductions = [f["reduction"] for f in model.feature_info]
    assert reductions == expected
    assert _measured_reductions(model) == reductions


def test_vgg_is_left_as_it_is():
    # timm's VGG already opens with 3×3 stride-1 convs; a narrow one stands in for vgg11..19 (same class).
    model = VGG(cfg=[8, "M", 16, "M", 16, "M", 16, "M", 16, "M"], num_classes=10)
    before = [dict(f) for f in model.feature_info]
    assert apply_cifar_stem(model, "vgg-narrow") is model and model.feature_info == before
    assert _measured_reductions(model) == [1, 2, 4, 8, 16, 32]


def test_resnet_stem_is_a_3x3_stride_1_conv_without_max_pool():
    model = create_model("resnet18", num_classes=10, cifar_stem=True)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    plain = create_model("resnet18", num_classes=10)
    assert plain.conv1.stride == (2, 2) and [f["reduction"] for f in plain.feature_info] == [2, 4, 8, 16, 32]


def test_stemmed_model_trains_and_taps_the_embedding():
    model = create_model("resnet18", num_classes=10, cifar_stem=True)
    tap = FeatureTap(model, stages=[4], embedding=True)
    f = tap(torch.randn(1, 3, 32, 32))
    assert f.stages[4].shape == (1, 512, 4, 4) and f.embedding.shape == (1, 512)
    f.logits.sum().backward()
    assert model.conv1.weight.grad is not None


def test_unknown_family_is_a_user_error_that_says_how_to_opt_out():
    with pytest.raises(UserError, match=r"no small-image stem for 'regnetx_002'.*recipe.cifar_stem=false"):
        create_model("regnetx_002", num_classes=10, cifar_stem=True)
