"""The one evaluation loop: every method's student is judged here, through `model(images)` alone."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader


@dataclass
class EvalResult:
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    loss: float
    count: int


def _autocast(device: torch.device, enabled: bool):
    dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    *,
    amp: bool = False,
    channels_last: bool = False,
    sum_over_ranks: bool = False,
) -> EvalResult:
    """Top-1/top-5 and mean loss over `loader`; with `sum_over_ranks` the loader is this rank's shard and the
    counts of every rank are summed first (exact over the whole set: kdbench.core.distributed)."""
    was_training = model.training
    model.eval()
    correct1 = correct5 = 0
    loss_sum = 0.0
    count = 0
    try:
        for images, labels, _ in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            # No autocast context at all without AMP, as in training: a disabled one still costs ~3 µs a batch.
            with _autocast(device, True) if amp else contextlib.nullcontext():
                logits = model(images)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            k = min(5, logits.shape[1])
            topk = logits.topk(k, dim=1).indices
            hits = topk.eq(labels[:, None])
            correct1 += hits[:, 0].sum().item()
            correct5 += hits.any(dim=1).sum().item()
            count += labels.numel()
    finally:
        model.train(was_training)
    if sum_over_ranks:
        from kdbench.core.distributed import all_reduce_sum

        totals = all_reduce_sum(torch.tensor([correct1, correct5, loss_sum, count], dtype=torch.float64,
                                             device=device)).tolist()
        correct1, correct5, loss_sum, count = totals[0], totals[1], totals[2], int(totals[3])
    return EvalResult(100.0 * correct1 / count, 100.0 * correct5 / count, loss_sum / count, count)


@torch.no_grad()
def inference_time_per_image(
    model: nn.Module,
    example: torch.Tensor,
    device: torch.device,
    *,
    repeats: int = 3,
    amp: bool = False,
    channels_last: bool = False,
) -> float:
    """Seconds per image for a forward pass at `example`'s batch size (best of `repeats`, after one warm-up).

    The best-of rule suppresses noise from other processes on shared machines.
    """
    was_training = model.training
    model.eval()
    x = example.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    best = float("inf")
    try:
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = time.perf_counter()
            with _autocast(device, amp):
                model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i > 0:
                best = min(best, time.perf_counter() - t0)
    finally:
        model.train(was_training)
    return best / x.shape[0]
