"""fitnet's hint/guided stages and at's stage pairs by default (issue #35 point 2): RepDistiller's on every pair of
ResNet-like stage counts (its numbers must not change), the same relative depth on the other families."""

from __future__ import annotations

import pytest
import torch
from model_families import FAMILIES, SIDE, build

from kdbench.methods.at import named_pairs
from kdbench.methods.fitnet import FitNetParams, fitnet_stages
from kdbench.models import create_model


def _vit(depth: int) -> torch.nn.Module:
    name, kwargs = FAMILIES["vit"]
    return create_model(name, num_classes=10, in_chans=3, image_size=SIDE, **{**kwargs, "depth": depth})


@pytest.mark.parametrize(("teacher", "student"), [("resnet", "cifar_resnet"), ("cifar_resnet", "resnet"),
                                                  ("convnext", "mobilenet"), ("mobilenet", "cifar_resnet")])
def test_cnn_like_pairs_keep_repdistillers_hint_layer_2_and_shallow_pairs(teacher, student):
    t, s = build(teacher), build(student)
    assert fitnet_stages(FitNetParams(), s, t) == (2, 2)
    n_s, n_t = len(s.feature_info), len(t.feature_info)
    assert named_pairs("auto", n_s, n_t) == [(i, i) for i in range(1, min(n_s, n_t))]


def test_a_vit_takes_the_stage_at_layer2s_relative_depth():
    vit12, vit2, resnet = _vit(12), _vit(2), build("resnet")
    # layer2 ends 3 of a ResNet's 5 stages: block 6 (7 of 12) of a 12-block ViT, block 0 of a 2-block one.
    assert fitnet_stages(FitNetParams(), resnet, vit12) == (2, 6)
    assert fitnet_stages(FitNetParams(), vit2, resnet) == (0, 2)
    # Explicit settings are taken as stated; the guided stage defaults to the hint's index then, as before.
    assert fitnet_stages(FitNetParams(hint_stage=3), resnet, vit12) == (3, 3)
    # at: every stage of the CNN student but its stem, with the ViT block at the same depth; a ViT student from
    # block 0 (it has no stem).
    assert named_pairs("auto", 5, 12) == [(1, 4), (2, 6), (3, 9), (4, 11)]
    assert named_pairs("auto", 2, 5) == [(0, 2), (1, 4)]
    assert named_pairs("shallow", 5, 12) == [(1, 1), (2, 2), (3, 3), (4, 4)]  # still there when asked for
