"""Every feature method on teacher × student families (issue #35 part 2): one training step per cell, built as the
runner builds a distiller, each cell's outcome written here — it runs, or it is refused with the one line below.

Families (tests/model_families.py, all at 32 px): kdbench's CIFAR ResNet, ResNet, MobileNet, ConvNeXt, ViT/DeiT,
Swin, MLP-Mixer, and the GNN student. Cells, per method: every family as teacher of the CNN student
cifar_resnet8, every family as student of the CNN teacher resnet18, and the heterogeneous ViT ↔ CNN pairs;
cnn2gnn with its GNN student under every teacher family. A run cell also checks that the stage maps the method
taps are N × C × H × W, so a method that runs on a layout it misreads is caught (Swin's channels-last maps through
forward hooks were, before the methods tapped through kdbench.models.taps.IntermediateTap).

What is refused is refused for the pair itself: no spatial map (the GNN student), no pre-ReLU point (ab, ofd,
reviewkd outside the ResNet families), channel counts a method compares entry by entry (fsp, kdsvd), too few
stages, or a 1×1 map at 32 px (ft's last stage of resnet18).
"""

from __future__ import annotations

import functools

import pytest
import torch
from model_families import FAMILIES, SIDE

from kdbench.core.errors import UserError
from kdbench.models import FeatureTap, create_model
from kdbench.models.preact import PreactTap
from kdbench.models.taps import IntermediateTap, pair_stages, stage_info
from kdbench.train.method import Batch, MethodContext, get_method

FEATURE_METHODS = ["fitnet", "at", "pkt", "rkd", "crd", "hkd", "sp", "cc", "vid", "nst", "ab", "ft", "fsp", "kdsvd",
                   "ofd", "reviewkd", "ofa"]
CNN_TEACHER, CNN_STUDENT = "resnet", "cifar_resnet"
ALL = [*FAMILIES, "gnn"]
GNN_OPTIONS = {"hidden": 32, "anchors": 16}  # gnn2 small: its width is not what is tested


def cells() -> list[tuple[str, str, str]]:
    out = []
    for method in FEATURE_METHODS:
        pairs = [(t, CNN_STUDENT) for t in FAMILIES] + [(CNN_TEACHER, s) for s in ALL if s != CNN_STUDENT]
        pairs += HETERO
        out += [(method, t, s) for t, s in pairs]
    out += [("cnn2gnn", t, "gnn") for t in FAMILIES]
    return out


RUNS = "runs"
PRE_STAGE = ("ab", "ft", "fsp")


GNN_SHAPE = (32,)  # the GNN student's hidden layer per sample: no spatial map
PREACT = ("{cls} has no pre-activation stage outputs that kdbench can hook; they are available for kdbench's CIFAR "
          "networks and timm's ResNet family")
CLS = {"cifar_resnet": "ResNet", "resnet": "ResNet", "mobilenet": "MobileNetV3", "convnext": "ConvNeXt",
       "vit": "VisionTransformer", "swin": "SwinTransformer", "mixer": "MlpMixer"}


def _no_preact(method: str, cell: tuple[str, str], role: str) -> str:
    family = cell[0] if role == "teacher" else cell[1]
    reason = PREACT.format(cls=CLS[family])
    if method == "ab":
        return (f"ab distils pre-ReLU stage outputs, but the {role} has none: {reason}; use at, fitnet or fsp for "
                "this pair")
    what = "pre-ReLU stage maps" if method == "ofd" else "the teacher's pre-ReLU stage maps"
    return f"{method} distils {what}: {reason}; use fitnet, at, kd, rkd or crd for this pair"


def _channels(method: str, stage: int, s: int, t: int) -> str:
    what, alternatives = {"fsp": ("FSP matrices", "ab, at or fitnet"),
                          "kdsvd": ("RBF relations", "at, fitnet or ab")}[method]
    return (f"{method} needs the same channel count in student and teacher at every stage (its {what} are compared "
            f"entry by entry), but stage {stage} has {s} and {t}; use {alternatives} for this pair")


def _ft_1x1(s: tuple[int, int, int], t: tuple[int, int, int]) -> str:
    return (f"ft compares the last stages' factors at 1×1 (student {s}, teacher {t} at 32 px): a term identically "
            "zero; use larger images (e.g. --set data.image_size=32) or a method without spatial maps (kd, rkd, crd)")


KDSVD_STAGES = "kdsvd relates consecutive stages: it needs at least two stages after the stem in student and teacher"
HETERO = [("vit", "resnet"), ("cifar_resnet", "vit"), ("vit", "mobilenet"), ("convnext", "vit")]
NO_PREACT = ("mobilenet", "convnext", "vit", "swin", "mixer")

# The cells that do not run, with the refusal's text (every other cell runs).
REFUSED: dict[tuple[str, str, str], str] = {
    ("fitnet", "resnet", "gnn"): "fitnet regresses spatial feature maps, but the student's stage output has shape "
                                 "(2, 32); use kd, rkd or crd for this pair",
    ("at", "resnet", "gnn"): f"at compares spatial attention maps, but the student's stage output has shape "
                             f"{GNN_SHAPE} per sample; use kd, dkd, rkd, pkt or crd for this pair",
    **{(m, "resnet", "gnn"): f"{m} compares spatial feature maps stage by stage, but the student's stage output has "
                             f"shape {GNN_SHAPE} per sample; use kd, dkd, rkd, pkt, crd, sp or cc for this pair"
       for m in ("vid", "nst")},
    ("ofd", "resnet", "gnn"): f"ofd distils spatial pre-ReLU maps, but the student's stage output has shape "
                              f"{GNN_SHAPE} per sample; use kd, dkd, rkd, pkt or crd for this pair",
    ("reviewkd", "resnet", "gnn"): f"reviewkd fuses spatial stage maps, but the student's stage output has shape "
                                   f"{GNN_SHAPE} per sample; use kd, dkd, rkd, pkt or crd for this pair",
    ("ofa", "resnet", "gnn"): "ofa projects the student's stage maps, but its stage 0 has shape (32,); use kd, dkd "
                              "or rkd for this student",
    ("ab", "resnet", "gnn"): "ab needs at least two stages in student and teacher (it uses every stage but the stem)",
    ("fsp", "resnet", "gnn"): "fsp needs at least two stages (the stem included) in student and teacher",
    ("ft", "resnet", "gnn"): "ft transfers factors of spatial feature maps, but the student's last stage has shape "
                             f"{GNN_SHAPE} per sample; use kd, rkd or crd for this pair",
    ("kdsvd", "resnet", "gnn"): KDSVD_STAGES,
    # No pre-ReLU point outside kdbench's CIFAR networks and timm's ResNets: ab and ofd on either side, reviewkd
    # on the teacher's (its student side is post-ReLU by default).
    **{("ab", t, "cifar_resnet"): _no_preact("ab", (t, "cifar_resnet"), "teacher") for t in NO_PREACT},
    **{("ab", "resnet", s): _no_preact("ab", ("resnet", s), "student") for s in NO_PREACT},
    **{(m, t, "cifar_resnet"): _no_preact(m, (t, "cifar_resnet"), "teacher") for m in ("ofd", "reviewkd")
       for t in NO_PREACT},
    **{("ofd", "resnet", s): _no_preact("ofd", ("resnet", s), "student") for s in NO_PREACT},
    ("ab", "vit", "resnet"): _no_preact("ab", ("vit", "resnet"), "teacher"),
    ("ab", "cifar_resnet", "vit"): _no_preact("ab", ("cifar_resnet", "vit"), "student"),
    ("ab", "vit", "mobilenet"): _no_preact("ab", ("vit", "mobilenet"), "student"),
    ("ab", "convnext", "vit"): _no_preact("ab", ("convnext", "vit"), "student"),
    **{("ofd", t, s): _no_preact("ofd", (t, s), "student" if s in NO_PREACT else "teacher")  # student's tap first
       for t, s in HETERO},
    **{("reviewkd", t, s): _no_preact("reviewkd", (t, s), "teacher") for t, s in HETERO if t != "cifar_resnet"},
    # fsp and kdsvd compare matrices entry by entry: equal channel counts only (the first stage that differs).
    **{("fsp", t, s): _channels("fsp", stage, cs, ct) for (t, s), (stage, cs, ct) in {
        ("resnet", "cifar_resnet"): (0, 16, 64), ("mobilenet", "cifar_resnet"): (1, 16, 8),
        ("convnext", "cifar_resnet"): (0, 16, 40), ("vit", "cifar_resnet"): (0, 16, 32),
        ("swin", "cifar_resnet"): (1, 16, 32), ("mixer", "cifar_resnet"): (0, 16, 512),
        ("resnet", "mobilenet"): (0, 16, 64), ("resnet", "convnext"): (0, 40, 64), ("resnet", "vit"): (0, 32, 64),
        ("resnet", "swin"): (0, 16, 64), ("resnet", "mixer"): (0, 512, 64), ("vit", "resnet"): (0, 64, 32),
        ("cifar_resnet", "vit"): (0, 32, 16), ("vit", "mobilenet"): (0, 16, 32), ("convnext", "vit"): (0, 32, 40),
    }.items()},
    **{("kdsvd", t, s): _channels("kdsvd", 1, cs, ct) for (t, s), (cs, ct) in {
        ("resnet", "cifar_resnet"): (16, 64), ("mobilenet", "cifar_resnet"): (16, 8),
        ("convnext", "cifar_resnet"): (16, 80), ("mixer", "cifar_resnet"): (16, 512), ("resnet", "mobilenet"): (8, 64),
        ("resnet", "convnext"): (80, 64), ("resnet", "mixer"): (512, 64)}.items()},
    **{("kdsvd", t, s): KDSVD_STAGES for t, s in [("vit", "cifar_resnet"), ("swin", "cifar_resnet"),
                                                  ("resnet", "vit"), ("resnet", "swin"), *HETERO]},
    # ft factors the last stages: resnet18's, MobileNet's and ConvNeXt's are 1×1 at 32 px.
    **{("ft", t, s): _ft_1x1(cs, ct) for (t, s), (cs, ct) in {
        ("resnet", "cifar_resnet"): ((64, 8, 8), (512, 1, 1)), ("mobilenet", "cifar_resnet"): ((64, 8, 8), (288, 1, 1)),
        ("convnext", "cifar_resnet"): ((64, 8, 8), (320, 1, 1)), ("resnet", "resnet"): ((512, 1, 1), (512, 1, 1)),
        ("resnet", "mobilenet"): ((288, 1, 1), (512, 1, 1)), ("resnet", "convnext"): ((320, 1, 1), (512, 1, 1)),
        ("resnet", "vit"): ((32, 4, 4), (512, 1, 1)), ("resnet", "swin"): ((32, 4, 4), (512, 1, 1)),
        ("resnet", "mixer"): ((512, 2, 2), (512, 1, 1)), ("vit", "resnet"): ((512, 1, 1), (32, 4, 4)),
        ("vit", "mobilenet"): ((288, 1, 1), (32, 4, 4)), ("convnext", "vit"): ((32, 4, 4), (320, 1, 1))}.items()},
}
# The step of a cell: epoch 1 (a pre-stage method's pre-stage: ab's and fsp's train the student's feature layers),
# but ft's pre-stage trains the teacher's paraphraser only, so its student learns in epoch 2, the training stage.
STEP_EPOCH = {"ft": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(family: str, method: str, seed: int) -> torch.nn.Module:
    """A model as build_student builds a run's student: the method's student options under the family's."""
    name, kwargs = ("gnn2", GNN_OPTIONS) if family == "gnn" else FAMILIES[family]
    spec = get_method(method)
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_chans=3, image_size=SIDE,
                        **{**spec.cls.student_options(spec.params, name), **kwargs})


def one_step(method: str, teacher_family: str, student_family: str) -> torch.nn.Module:
    """The method around a fresh student and teacher (as kdbench.execute.build.build_distiller), one SGD step."""
    spec = get_method(method)
    # The pre-stage methods need a pre-stage and a training stage: 2 epochs, the step in epoch 1 (the pre-stage).
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=SIDE, num_train=32,
                        train_targets=torch.arange(32) % 10, epochs=2 if method in PRE_STAGE else 1, seed=0)
    teacher = build(teacher_family, "ce", seed=1)  # a trained teacher is frozen: the method never builds it
    d = spec.cls(build(student_family, method, seed=0), teacher, spec.params, ctx).train()
    optimizer = torch.optim.SGD(list(d.trainable_parameters()), lr=0.01)
    before = [p.detach().clone() for p in d.student.parameters()]
    d.on_epoch_start(STEP_EPOCH.get(method, 1))
    index = torch.tensor([0, 11, 22, 5])
    logits, losses = d.forward_train(Batch(torch.randn(4, 3, SIDE, SIDE), index % 10, index))
    assert logits.shape == (4, 10) and all(torch.isfinite(v) for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, d.student.parameters(), strict=True))
    return d


def tapped_maps_are_nchw(d: torch.nn.Module) -> bool:
    """Whether every stage a method taps (IntermediateTap, a FeatureTap, the pre-ReLU PreactTap whose ids are
    "<stage>.preact") comes back N × C × H × W (C the stage's channels)."""
    for tap in vars(d).values():
        if isinstance(tap, FeatureTap | IntermediateTap | PreactTap) and tap.stage_ids:
            stages = tap.probe(torch.zeros(2, 3, SIDE, SIDE)).stages
            for sid, fmap in stages.items():
                if fmap.dim() == 2:  # the GNN's hidden layer (B, D): no map to misread (sp takes it flattened)
                    continue
                info = tap.model.feature_info[int(str(sid).split(".")[0])]
                if fmap.dim() != 4 or fmap.shape[1] != info["num_chs"]:
                    return False
    return True


def _cell_id(cell: tuple[str, str, str]) -> str:
    return f"{cell[0]}:{cell[1]}->{cell[2]}"


def test_every_refused_cell_is_in_the_matrix():
    assert set(REFUSED) <= set(cells())


@pytest.mark.parametrize("cell", cells(), ids=_cell_id)
def test_one_training_step_per_cell(cell):
    method, teacher, student = cell
    expected = REFUSED.get(cell, RUNS)
    try:
        d = one_step(method, teacher, student)
    except UserError as e:
        assert str(e) == expected
        return
    assert expected == RUNS, f"ran, expected the refusal: {expected}"
    assert tapped_maps_are_nchw(d)


# ---------------------------------------------------------------------------------------------------------------
# IntermediateTap alone: every family's stages as N × C × H × W maps, and every pair's stages paired by depth.

@functools.cache
def tapped_shapes(family: str) -> tuple[tuple[int, ...], ...]:
    torch.manual_seed(0)
    return tuple(s.shape for s in stage_info(build(family, "ce", seed=0), 3, SIDE).stages)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_intermediate_tap_gives_nchw_maps_for_every_family(family):
    torch.manual_seed(0)
    model = build(family, "ce", seed=0)
    stages = list(range(len(model.feature_info)))
    f = IntermediateTap(model, stages=stages, embedding=True).probe(torch.zeros(2, 3, SIDE, SIDE))
    for sid in stages:
        info = model.feature_info[sid]
        assert f.stages[sid].shape == (2, info["num_chs"], SIDE // info["reduction"], SIDE // info["reduction"])
    assert f.embedding.dim() == 2 and f.logits.shape == (2, 10)


@pytest.mark.parametrize("teacher", list(FAMILIES))
def test_intermediate_tap_pairs_every_student_stage_with_a_teacher_map(teacher):
    t_shapes = tapped_shapes(teacher)
    for student in FAMILIES:
        s_shapes = tapped_shapes(student)
        pairs = pair_stages(len(t_shapes), len(s_shapes), range(len(s_shapes)))
        assert [s for s, _ in pairs] == list(range(len(s_shapes)))
        assert pairs[-1][1] == len(t_shapes) - 1  # the last stages meet
        for s, t in pairs:
            assert len(s_shapes[s]) == len(t_shapes[t]) == 3, (student, s, teacher, t)
