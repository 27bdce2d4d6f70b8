"""IntermediateTap (kdbench.models.taps): one feature tap for any timm model, a drop-in for FeatureTap.

Per family: the logits are model(x) bit for bit (eval and train mode, drawing the same random numbers), every
stage map is N × C × H × W and holds what the hooked module returned (tokens without prefix tokens laid out on
the patch grid, Swin's NHWC permuted), and the embedding is forward_head(pre_logits=True). Relative-depth stage
pairing (pair_stages) and stage_info's strides."""

from __future__ import annotations

import pytest
import torch
from model_families import FAMILIES, SIDE, TIMM_FAMILIES, build

from kdbench.core.errors import UserError
from kdbench.models import FeatureTap, create_model
from kdbench.models.taps import HOOKS, INTERMEDIATES, IntermediateTap, pair_stages, stage_info
from kdbench.teachers.output_cache import output_names, teacher_outputs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def all_stages(model: torch.nn.Module) -> list[int]:
    return list(range(len(model.feature_info)))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_logits_are_the_plain_forward_bit_for_bit(family, training):
    # Stochastic depth and head dropout on (timm families) so a train-mode forward draws random numbers: the tap
    # must draw the same ones in the same order, or a method switched to it would train differently from model(x).
    extra = {"drop_path_rate": 0.1, "drop_rate": 0.2} if family in TIMM_FAMILIES else {}
    torch.manual_seed(0)
    model = build(family, **extra).train(training)
    tap = IntermediateTap(model, stages=all_stages(model), embedding=True)
    assert tap.mode == (INTERMEDIATES if family in TIMM_FAMILIES else HOOKS)
    x = torch.randn(3, 3, SIDE, SIDE)
    with torch.no_grad():
        torch.manual_seed(1)
        plain = model(x)
        after_plain = torch.get_rng_state()
        torch.manual_seed(1)
        tapped = tap(x).logits
    assert torch.equal(tapped, plain)
    assert torch.equal(torch.get_rng_state(), after_plain)


def as_nchw(hooked: torch.Tensor, family: str, hw: tuple[int, int]) -> torch.Tensor:
    """What a family's feature_info module returns, laid out as the tap promises (N × C × H × W)."""
    if family in ("vit", "mixer"):  # (B, prefix + H·W, C) tokens: drop the prefix (ViT's class token)
        tokens = hooked[:, hooked.shape[1] - hw[0] * hw[1]:]
        return tokens.transpose(1, 2).reshape(hooked.shape[0], -1, *hw)
    if family == "swin":  # channels-last
        return hooked.permute(0, 3, 1, 2)
    return hooked


@pytest.mark.parametrize("family", list(FAMILIES))
def test_stage_maps_are_the_hooked_outputs_as_nchw(family):
    torch.manual_seed(0)
    model = build(family).eval()
    stages = all_stages(model)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        mine = IntermediateTap(model, stages=stages)(x).stages
        hooked = FeatureTap(model, stages=stages)(x).stages
    for sid in stages:
        fmap = mine[sid]
        assert fmap.dim() == 4 and fmap.shape[1] == model.feature_info[sid]["num_chs"], (sid, fmap.shape)
        assert torch.equal(fmap, as_nchw(hooked[sid], family, tuple(fmap.shape[2:]))), sid


@pytest.mark.parametrize("family", list(FAMILIES))
def test_embedding_is_the_pre_logits_output(family):
    torch.manual_seed(0)
    model = build(family).eval()
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        f = IntermediateTap(model, stages=[0], embedding=True)(x)
        if family in TIMM_FAMILIES:
            expected = model.forward_head(model.forward_features(x), pre_logits=True)
        else:  # kdbench's CIFAR ResNet: the classifier's input, as FeatureTap reads it
            expected = FeatureTap(model, embedding=True)(x).embedding
    assert torch.equal(f.embedding, expected)
    assert torch.equal(model.get_classifier()(f.embedding), f.logits)


def test_the_gnn_student_is_tapped_by_hooks_its_hidden_layer_as_is():
    model = create_model("gnn2", num_classes=10, image_size=8, hidden=32, k=0).eval()
    tap = IntermediateTap(model, stages=[0], embedding=True)
    f = tap(torch.randn(4, 3, 8, 8))
    assert tap.mode == HOOKS
    assert f.stages[0].shape == (4, 32) and f.embedding.shape == (4, 32)


def test_negative_stage_ids_are_kept_as_asked_and_hooks_removed():
    torch.manual_seed(0)
    model = build("vit").eval()
    tap = IntermediateTap(model, stages=[-1, 0], embedding=True)
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        f = tap(x)
        last = IntermediateTap(model, stages=[1])(x).stages[1]
    assert sorted(f.stages) == [-1, 0] and torch.equal(f.stages[-1], last)
    tap.remove()
    assert not model.get_classifier()._forward_pre_hooks
    with pytest.raises(ValueError, match="stage 2 out of range: VisionTransformer has 2 stages"):
        IntermediateTap(model, stages=[2])


def test_probe_runs_in_eval_mode_and_restores_training():
    model = build("convnext").train()
    f = IntermediateTap(model, stages=[3], embedding=True).probe(torch.zeros(2, 3, SIDE, SIDE))
    assert model.training and f.stages[3].shape == (2, 320, 1, 1) and f.embedding.shape == (2, 320)


def test_the_teacher_output_path_takes_the_tap_as_it_takes_featuretap():
    # Distiller.teacher_features and the teacher-output cache read stage_ids / want_embedding and call the tap.
    teacher = build("swin").eval()
    tap = IntermediateTap(teacher, stages=[1], embedding=True)
    x = torch.randn(2, 3, SIDE, SIDE)
    # IntermediateTap is the cache's full tap, so its entries carry plain names (kdbench.teachers.cache_outputs);
    # a hooks FeatureTap on a forward_intermediates model gets entries of its own (tests/test_teacher_cache_layout.py).
    assert output_names(tap) == ["logits", "stage1", "embedding"]
    got = teacher_outputs(None, teacher, tap, x, torch.arange(2))
    with torch.no_grad():
        direct = tap(x)
    assert got.stages[1].shape == (2, 32, 4, 4) and torch.equal(got.stages[1], direct.stages[1])
    assert torch.equal(got.logits, direct.logits) and torch.equal(got.embedding, direct.embedding)


def test_stage_info_gives_shapes_strides_and_the_embedding_width():
    info = stage_info(build("resnet"), 3, SIDE)
    assert [s.module for s in info.stages] == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert [s.stride for s in info.stages] == [2, 4, 8, 16, 32]
    assert [s.channels for s in info.stages] == [64, 64, 128, 256, 512]
    assert info.stages[2].shape == (128, 4, 4) and info.embedding_width == 512 and info.mode == INTERMEDIATES
    vit = stage_info(build("vit"), 3, SIDE)
    assert [(s.shape, s.stride) for s in vit.stages] == [((32, 4, 4), 8)] * 2 and vit.embedding_width == 32
    gnn = stage_info(create_model("gnn2", num_classes=10, image_size=8, hidden=16, k=0), 3, 8)
    assert gnn.stages[0].shape == (16,) and gnn.stages[0].stride is None and gnn.mode == HOOKS


def test_pair_stages_by_relative_depth():
    assert pair_stages(12, 5, range(5)) == [(0, 1), (1, 4), (2, 6), (3, 9), (4, 11)]  # ViT-12 → ResNet-18
    assert pair_stages(4, 5, range(5)) == [(0, 0), (1, 1), (2, 1), (3, 2), (4, 3)]  # ConvNeXt → ResNet-18
    assert pair_stages(5, 5, [1, 3, -1]) == [(1, 1), (3, 3), (-1, 4)]
    for n_t in range(1, 13):
        for n_s in range(1, 13):
            teacher = [t for _, t in pair_stages(n_t, n_s, range(n_s))]
            assert teacher == sorted(teacher) and teacher[0] >= 0 and teacher[-1] == n_t - 1, (n_t, n_s)
    with pytest.raises(UserError, match=r"student stage 5 is out of range; allowed: \[-5, 4\]"):
        pair_stages(4, 5, [5])
    with pytest.raises(UserError, match="the teacher has 0 stages"):
        pair_stages(0, 5, [1])


def test_a_model_with_two_classifiers_gets_its_pre_logits_embedding():
    # A distilled DeiT: a class and a distillation token, head and head_dist (get_classifier is a pair, no one
    # module to hook): the embedding is forward_head's pre-logits, the stage maps drop both prefix tokens.
    torch.manual_seed(0)
    model = create_model("deit_tiny_distilled_patch16_224", num_classes=10, img_size=SIDE, patch_size=8, depth=2,
                         embed_dim=32, num_heads=2).eval()
    x = torch.randn(2, 3, SIDE, SIDE)
    with torch.no_grad():
        f = IntermediateTap(model, stages=[1], embedding=True)(x)
        only_head = IntermediateTap(model, embedding=True)(x)
        tokens = FeatureTap(model, stages=[1])(x).stages[1]
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
        plain = model(x)
    assert torch.equal(f.logits, plain) and torch.equal(only_head.logits, plain)
    assert torch.equal(f.embedding, expected) and torch.equal(only_head.embedding, expected)
    assert tokens.shape == (2, 2 + 16, 32) and torch.equal(f.stages[1], as_nchw(tokens, "vit", (4, 4)))
    assert stage_info(model, 3, SIDE).embedding_width == 32
