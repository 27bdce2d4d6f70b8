"""The teacher-output cache's entries are IntermediateTap's outputs (issue #35 point 2): stage maps N × C × H × W for
every family, so every method (all tap through IntermediateTap) shares them; a tap whose outputs have another
layout never reads or writes those entries (kdbench.teachers.cache_outputs)."""

from __future__ import annotations

import pytest
import torch
from model_families import SIDE, build

from kdbench.models import FeatureTap, create_model
from kdbench.models.preact import PreactTap
from kdbench.models.taps import IntermediateTap
from kdbench.teachers.cache_outputs import as_features, compute_outputs, output_names, stage_count


@pytest.mark.parametrize("family", ["vit", "swin", "resnet", "cifar_resnet"])
def test_the_full_tap_serves_an_intermediate_tap_its_own_maps_bit_for_bit(family):
    torch.manual_seed(0)
    teacher = build(family).eval()
    count = stage_count(teacher)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        outputs = compute_outputs(teacher, None, x, count)  # what a miss stores: every stage and the embedding
        tap = IntermediateTap(teacher, stages=[count - 1, 0], embedding=True)
        own = tap(x)
    served = as_features(outputs, tap, count)
    assert output_names(tap, count) == ["logits", f"stage{count - 1}", "stage0", "embedding"]
    assert torch.equal(served.logits, own.logits) and torch.equal(served.embedding, own.embedding)
    for sid in (count - 1, 0):
        assert served.stages[sid].dim() == 4 and torch.equal(served.stages[sid], own.stages[sid])


def test_a_hooks_tap_shares_the_entries_only_where_its_outputs_are_the_intermediate_taps():
    vit, swin = build("vit"), build("swin")
    # Through hooks a ViT stage is a token sequence and a Swin stage channels-last: never the NCHW entry's name.
    assert output_names(FeatureTap(vit, stages=[1], embedding=True), 2) == ["logits", "FeatureTap-stage1",
                                                                             "FeatureTap-embedding"]
    assert output_names(FeatureTap(swin, stages=[0]), 2) == ["logits", "FeatureTap-stage0"]
    # kdbench's CIFAR networks have no forward_intermediates: IntermediateTap reads them by the same hooks.
    cifar = create_model("cifar_resnet8", num_classes=10, in_chans=3, image_size=SIDE)
    assert output_names(FeatureTap(cifar, stages=[-1], embedding=True), 4) == ["logits", "stage3", "embedding"]
    # Pre-ReLU maps have their own names; the embedding is the shared one.
    assert output_names(PreactTap(cifar, stages=[2], embedding=True), 4) == ["logits", "stage2.preact", "embedding"]
