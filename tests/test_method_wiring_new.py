"""Wiring of hkd, hkd+kd, dkd, at and pkt: each method is built as the runner builds it (config resolved from the
command-line options, params rebuilt from the config), run on a fixed batch, and each named loss term is checked
against the public loss functions × weights, with the defaults and with every weight / temperature changed.
Features for the expected values come from timm's own API (`forward_head(pre_logits=True)`) and plain forward
hooks on the stage modules, not from the methods' feature taps."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.method import Batch, MethodContext, get_method
from kdbench.methods.at import at_loss
from kdbench.methods.crd import sample_other_class
from kdbench.methods.dkd import dkd_loss, warmup_factor
from kdbench.methods.hkd import info_nce, knn_graph, smoothed_positive
from kdbench.methods.kd import kd_loss
from kdbench.methods.pkt import pkt_loss
from kdbench.models import create_model
from kdbench.resolve import RunOptions, resolve_config
from kdbench.runner import method_params

SIDE, BATCH, N_TRAIN, EPOCH = 16, 12, 40, 3
CASES = [
    ("hkd", []),
    ("hkd", ["hkd.w_ce=0.5", "hkd.w_hkd=2", "hkd.nce_t=0.2", "hkd.k=3", "hkd.nce_m=0.5", "hkd.smooth_m=0.6",
             "hkd.feat_dim=16", "hkd.nce_k=5", "hkd.negatives=own"]),
    ("hkd+kd", []),
    ("hkd+kd", ["hkd.w_kd=0.3", "hkd.temperature=2", "hkd.individual=false"]),
    ("dkd", []),
    ("dkd", ["dkd.w_ce=0.5", "dkd.w_tckd=2", "dkd.w_nckd=3", "dkd.temperature=2", "dkd.warmup=4"]),
    ("at", []),
    ("at", ["at.w_ce=0.5", "at.w_at=10"]),
    ("pkt", []),
    ("pkt", ["pkt.w_ce=0.5", "pkt.w_pkt=7"]),
]
PAIRS = [("resnet18", "resnet18"), ("resnet50", "resnet18")]  # the second: 2048- vs 512-d, other channel counts


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[0]}->{p[1]}")
def pair(request):
    torch.manual_seed(0)
    teacher, student = request.param
    return (teacher, create_model(teacher, num_classes=10, image_size=SIDE),
            student, create_model(student, num_classes=10, image_size=SIDE))


def build(method: str, sets: list[str], pair):
    teacher_name, teacher, student_name, student_template = pair
    config = resolve_config(RunOptions(method=method, teacher=teacher_name, student=student_name, sets=sets))
    params = method_params(config)  # as the runner rebuilds it
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=SIDE, num_train=N_TRAIN,
                        train_targets=torch.arange(N_TRAIN) % 10, epochs=30, seed=0)
    student = create_model(student_name, num_classes=10, image_size=SIDE)
    student.load_state_dict(student_template.state_dict())
    distiller = get_method(method).cls(student, teacher, params, ctx).train()
    distiller.on_epoch_start(EPOCH)
    return distiller, params


def fixed_batch() -> Batch:
    g = torch.Generator().manual_seed(3)
    index = torch.randperm(N_TRAIN, generator=g)[:BATCH]
    return Batch(torch.randn(BATCH, 3, SIDE, SIDE, generator=g), index % 10, index)


def embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.forward_head(model.forward_features(x), pre_logits=True)


def stage_maps(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """layer1 … layer4 of a timm ResNet: every stage but the stem."""
    maps: list[torch.Tensor] = []
    handles = [getattr(model, f"layer{i}").register_forward_hook(lambda m, i, o: maps.append(o)) for i in range(1, 5)]
    model(x)
    for h in handles:
        h.remove()
    return maps


def expected_losses(method: str, d, p, batch: Batch, seed: int) -> dict[str, torch.Tensor]:
    x, y = batch.images, batch.labels
    zs = d.student(x)
    with torch.no_grad():
        zt = d.teacher(x)
    out = {"ce": p.w_ce * F.cross_entropy(zs, y)}
    if method == "dkd":
        out["dkd"] = warmup_factor(EPOCH, p.warmup) * dkd_loss(zs, zt, y, p.w_tckd, p.w_nckd, p.temperature)
    elif method == "at":
        out["at"] = p.w_at * sum(at_loss(a, b) for a, b in zip(stage_maps(d.student, x), stage_maps(d.teacher, x),
                                                                strict=True))
    elif method == "pkt":
        with torch.no_grad():
            et = embedding(d.teacher, x)
        out["pkt"] = p.w_pkt * pkt_loss(embedding(d.student, x), et)
    else:  # hkd, hkd+kd, with the banks as they were before the step and the same negatives
        h = d.hkd
        torch.manual_seed(seed)
        neg = sample_other_class(h.train_labels, batch.index, h.nce_k)
        with torch.no_grad():
            et = embedding(d.teacher, x)
        v_s, v_t = h.embed_s(embedding(d.student, x)), h.embed_t(et)
        m_s, m_t = h.memory_s, h.memory_t
        pos_s, pos_t = m_t[batch.index], m_s[batch.index]
        neg_s, neg_t = (m_t[neg], m_s[neg]) if p.negatives == "opposite" else (m_s[neg], m_t[neg])
        g_s, g_t = h.gnn_s(v_s, knn_graph(zs, p.k)), h.gnn_t(v_t, knn_graph(zt, p.k))
        if p.individual:
            out["hkd_individual"] = p.w_hkd * (info_nce(v_s, pos_s, neg_s, p.nce_t)
                                               + info_nce(v_t, pos_t, neg_t, p.nce_t))
        out["hkd_holistic"] = p.w_hkd * (info_nce(g_s, smoothed_positive(pos_s, g_t, p.smooth_m), neg_s, p.nce_t)
                                         + info_nce(g_t, smoothed_positive(pos_t, g_s, p.smooth_m), neg_t, p.nce_t))
        if p.w_kd > 0:
            out["kd"] = p.w_kd * kd_loss(zs, zt, p.temperature)
    return out


@pytest.mark.parametrize(("method", "sets"), CASES, ids=[f"{m}-{'set' if s else 'default'}" for m, s in CASES])
def test_each_loss_term_is_the_public_function_times_its_weight(method, sets, pair):
    d, p = build(method, sets, pair)
    for item in sets:  # every option given on the command line reached the params the method runs with
        key, value = item.split("=")
        got = getattr(p, key.split(".")[1])
        assert str(got).lower() == value.lower() if isinstance(got, str | bool) else got == float(value), item
    batch = fixed_batch()
    seed = 7
    expected = expected_losses(method, d, p, batch, seed)  # reads the banks before the step moves them
    torch.manual_seed(seed)
    logits, losses = d.forward_train(batch)
    assert logits.shape == (BATCH, 10)
    assert set(losses) == set(expected)
    for name, value in expected.items():
        assert losses[name].item() == pytest.approx(value.item(), rel=1e-4, abs=1e-6), name
    sum(losses.values()).backward()
    assert all(q.grad is None for q in d.teacher.parameters())
    trainable_without_grad = [n for n, q in d.named_parameters() if q.requires_grad and q.grad is None]
    assert not trainable_without_grad
