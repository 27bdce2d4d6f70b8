"""Features come from hooks on timm's feature_info modules and the classifier input, not from model rewrites."""

from __future__ import annotations

import torch

from kdbench.models import FeatureTap, count_weight_layers, create_model


def test_stage_and_embedding_shapes_for_resnet18():
    model = create_model("resnet18", num_classes=10, image_size=32)
    tap = FeatureTap(model, stages=[2], embedding=True)
    f = tap(torch.randn(2, 3, 32, 32))
    assert f.logits.shape == (2, 10)
    assert f.stages[2].shape == (2, 128, 4, 4)  # layer2: 128 channels at 1/8
    assert f.embedding.shape == (2, 512)
    tap.remove()
    assert not model.get_classifier()._forward_pre_hooks


def test_tapped_logits_equal_plain_forward():
    model = create_model("mobilenetv3_small_100", num_classes=5, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(FeatureTap(model, stages=[1, 3], embedding=True)(x).logits, model(x))


def test_depth_counts_match_the_names():
    for name, depth in (("resnet18", 18), ("resnet50", 50), ("resnet152", 152)):
        assert count_weight_layers(create_model(name, num_classes=10)) == depth
