"""Data-parallel training (kdbench.core.distributed) on CPU with gloo: two processes train one run, deterministically,
and compute what one process computes on the global batch (gradients of ce and kd, CRD's memory bank)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch.utils.data import TensorDataset

from kdbench.core import distributed
from kdbench.core.errors import UserError
from kdbench.data.loaders import FixedOrderSampler, RankBatches, RankSliceSampler, make_train_loader
from kdbench.execute.api import run
from kdbench.methods.crd import CRDLoss
from kdbench.models.zoo import create_model
from kdbench.train.method import Batch, MethodContext, get_method

TINY = {"epochs": 1, "student": "test_resnet", "sets": ["data.image_size=8"], "device": "cpu"}
GLOBAL_BATCH = 8
CLASSES = 4


def test_rank_slices_of_every_global_batch_are_the_single_process_batches():
    n, batch, world = 36, 8, 2  # 4 full batches and a ragged last one of 4: dropped, as in one process
    single = make_train_loader(TensorDataset(torch.arange(n)), batch, seed=3, device=torch.device("cpu"))
    ranks = [RankSliceSampler(n, 3, batch, r, world) for r in range(world)]
    for s in (single.sampler, *ranks):
        s.set_epoch(2)
    batches, parts = [b[0].tolist() for b in single], [list(s) for s in ranks]
    assert len(batches) == n // batch
    for b, whole in enumerate(batches):
        joined = sum((p[b * batch // world:(b + 1) * batch // world] for p in parts), [])
        assert joined == whole
    assert all(len(p) == len(s) == (n // batch) * batch // world for p, s in zip(parts, ranks, strict=True))
    small = [list(RankSliceSampler(7, 3, batch, r, world)) for r in range(world)]  # under one batch: equal slices
    assert [len(p) for p in small] == [3, 3] and len(set(small[0] + small[1])) == 6


def test_evaluation_batches_are_dealt_whole_and_count_every_image_once():
    order = FixedOrderSampler(23, seed=1).order
    dealt = [list(RankBatches(order, 5, r, 2)) for r in range(2)]
    assert dealt[0] == [order[0:5], order[10:15], order[20:23]] and dealt[1] == [order[5:10], order[15:20]]


def test_a_batch_not_divisible_by_the_world_size_is_refused_before_any_process_starts(dirs):
    with pytest.raises(UserError, match="not divisible by the world size 2"):
        run("ce", batch_size=7, nproc=2, **TINY)


def _step_grads(method: str, student: str = "cifar_resnet8", **params: Any) -> dict[str, torch.Tensor]:
    """One training step of `method` on this rank's slice of one fixed global batch; the gradients after DDP's
    all-reduce (the plain gradients in one process). BatchNorm in eval mode (torch's SyncBatchNorm needs GPUs)."""
    torch.manual_seed(0)
    images = torch.randn(GLOBAL_BATCH, 3, 8, 8)
    labels = torch.arange(GLOBAL_BATCH) % CLASSES
    index = torch.arange(GLOBAL_BATCH)
    ctx = MethodContext(num_classes=CLASSES, in_chans=3, image_size=8, num_train=GLOBAL_BATCH, train_targets=labels,
                        epochs=1, seed=0)
    spec = get_method(method)
    teacher = create_model("cifar_resnet8", num_classes=CLASSES) if spec.needs_teacher else None
    method_params = dataclasses.replace(spec.params, **params)
    student_model = create_model(student, num_classes=CLASSES, in_chans=3, image_size=8,
                                 **spec.cls.student_options(method_params, student))
    distiller = spec.cls(student_model, teacher, method_params, ctx)
    for module in distiller.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.eval()
    step = distributed.data_parallel(distiller, torch.device("cpu"))
    rows = distributed.own_rows(GLOBAL_BATCH // distributed.world_size())
    _, losses = step(Batch(images[rows], labels[rows], index[rows]))
    sum(losses.values()).backward()
    return {name: p.grad.clone() for name, p in distiller.named_parameters() if p.grad is not None}


def _crd_after_two_batches(*, device: str) -> dict[str, torch.Tensor]:
    """CRD's banks after two global batches, each rank feeding its slice (its own negatives: the banks do not
    depend on them)."""
    g = torch.Generator().manual_seed(1)
    n, labels = 16, torch.arange(16) % CLASSES
    batches = [(torch.randn(GLOBAL_BATCH, 6, generator=g), torch.randn(GLOBAL_BATCH, 5, generator=g),
                torch.randperm(n, generator=g)[:GLOBAL_BATCH]) for _ in range(2)]
    torch.manual_seed(0)
    crd = CRDLoss(s_dim=6, t_dim=5, feat_dim=4, n_data=n, nce_k=6, nce_t=0.07, nce_m=0.5, train_labels=labels)
    start = crd.memory_s.clone()
    rows = distributed.own_rows(GLOBAL_BATCH // distributed.world_size())
    for s_emb, t_emb, index in batches:
        crd(s_emb[rows], t_emb[rows], index[rows])
    return {"memory_s": crd.memory_s, "memory_t": crd.memory_t, "start": start}


def _equivalence_checks(*, device: str) -> dict[str, dict[str, torch.Tensor]]:
    return {"ce": _step_grads("ce"), "kd": _step_grads("kd"), "crd": _crd_after_two_batches(device=device),
            # The batch graph over the gathered global batch: what one process computes (no dropout: its masks
            # are each rank's own).
            "cnn2gnn": _step_grads("cnn2gnn", "gnn2", graph_scope="global", hidden=16, proj_dim=16, k=3,
                                   dropout=0.0)}


def _fail_on_rank_one(*, device: str) -> None:
    if distributed.rank() == 1:
        raise ValueError("rank one broke")
    distributed.barrier()


@pytest.fixture(scope="module")
def both_worlds() -> tuple[dict, dict]:
    return _equivalence_checks(device="cpu"), distributed.launch_local(2, _equivalence_checks, (), "cpu")


@pytest.mark.parametrize("method", ["ce", "kd", "cnn2gnn"])
def test_one_step_on_two_ranks_gives_the_gradients_of_one_process_on_the_global_batch(both_worlds, method):
    single, double = (world[method] for world in both_worlds)
    assert single.keys() == double.keys() and len(single) >= 6
    for name, grad in single.items():
        torch.testing.assert_close(double[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_gathered_crd_memory_equals_the_single_process_memory(both_worlds):
    single, double = (world["crd"] for world in both_worlds)
    assert not torch.equal(single["memory_s"], single["start"])  # the banks moved
    for key in ("memory_s", "memory_t"):
        torch.testing.assert_close(double[key], single[key], rtol=1e-5, atol=1e-6, msg=key)


def test_a_failed_rank_fails_the_run_naming_the_rank_and_its_error():
    with pytest.raises(UserError, match=r"rank 1 failed: .*rank one broke"):
        distributed.launch_local(2, _fail_on_rank_one, (), "cpu")


def test_a_two_process_run_completes_records_its_world_and_repeats_exactly(tmp_path):
    a = run("ce", results_dir=tmp_path / "a", nproc=2, **TINY)
    b = run("ce", results_dir=tmp_path / "b", nproc=2, **TINY)
    assert a["status"] == "completed" and a["config"]["world_size"] == 2
    assert a["distributed"] == {"world_size": 2, "backend": "gloo", "per_rank_batch": 32, "sync_bn": False,
                                "eval": "whole batches dealt to ranks, counts summed"}
    assert a["run_id"] == b["run_id"] and a["metrics"] == b["metrics"]
    assert a["metrics"]["top1_last"] > 0
