"""`evaluate()` on hand-made logits: top-1, top-5 and the loss against counts and sums written out by hand; AMP
and channels-last reach the model; inference time is the best timed call after a warm-up, per image.

A tiny module returns a fixed row of logits per sample (the "image" carries the sample's index), so every
number the evaluator reports is known in advance: where each label ranks, ties that cannot change the answer,
fewer classes than 5, an uneven last batch.
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from kdbench.train.evaluate import evaluate, inference_time_per_image

CPU = torch.device("cpu")


class FixedLogits(nn.Module):
    """Returns `table[i]` for the sample whose image is the number i; records the mode it was called in."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.register_buffer("table", torch.tensor(table))
        self.modes: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        return self.table[images.long()]


def _loader(labels: list[int], batch_size: int) -> DataLoader:
    n = len(labels)
    ds = TensorDataset(torch.arange(n, dtype=torch.float32), torch.tensor(labels), torch.arange(n))
    return DataLoader(ds, batch_size=batch_size, shuffle=False)


def _cross_entropy_by_hand(table: list[list[float]], labels: list[int]) -> float:
    total = 0.0
    for row, y in zip(table, labels, strict=True):
        total += math.log(sum(math.exp(v) for v in row)) - row[y]
    return total / len(labels)


def _ranked(label: int, rank: int, classes: int = 7) -> list[float]:
    """Logits 7, 6, …, 1 with the label at `rank` (1 = highest); the other classes fill the rest in order."""
    values = [float(classes - r) for r in range(classes)]
    others = [c for c in range(classes) if c != label]
    row = [0.0] * classes
    row[label] = values[rank - 1]
    for c, v in zip(others, values[: rank - 1] + values[rank:], strict=True):
        row[c] = v
    return row


# (label, rank of the label among 7 classes): 3 at rank 1, 2 at rank 2, 1 at rank 3, 2 at rank 5, 1 at 6 and 7.
RANKS = [(0, 1), (3, 2), (6, 1), (2, 5), (1, 2), (5, 6), (4, 1), (0, 5), (2, 7), (6, 3)]
TABLE = [_ranked(y, r) for y, r in RANKS]
LABELS = [y for y, _ in RANKS]


@pytest.mark.parametrize("batch_size", [4, 3, 1, 10], ids=lambda b: f"batch{b}")
def test_top1_top5_and_loss_match_the_ranks_and_the_formula(batch_size: int):
    # 10 samples in batches of 4 and 3 leave uneven last batches (2 and 1): counts and the loss are per sample.
    result = evaluate(FixedLogits(TABLE), _loader(LABELS, batch_size), CPU)
    assert result.count == 10
    assert result.top1 == pytest.approx(30.0)  # ranks 1: three samples
    assert result.top5 == pytest.approx(80.0)  # ranks 1, 2, 3, 5: eight samples (6 and 7 miss)
    assert result.loss == pytest.approx(_cross_entropy_by_hand(TABLE, LABELS), rel=1e-6)



def test_summed_over_ranks_in_one_process_the_counts_come_back_exactly():
    # `sum_over_ranks` packs the counts into one float64 tensor for the all-reduce and unpacks them: in a single
    # process (no group: the sum is the tensor itself) every figure must come back as it went.
    plain = evaluate(FixedLogits(TABLE), _loader(LABELS, 4), CPU)
    summed = evaluate(FixedLogits(TABLE), _loader(LABELS, 4), CPU, sum_over_ranks=True)
    assert summed == plain and isinstance(summed.count, int)

def test_ties_that_cannot_change_the_answer():
    table = [
        [2.0, 2.0, 2.0, 2.0, 2.0, 1.0, 0.0],  # label 5 below five tied classes: outside the top 5
        [1.0, 1.0, 3.0, 1.0, 1.0, 1.0, 1.0],  # label 2 alone on top, the rest tied: top-1
        [4.0, 4.0, 3.0, 0.0, 0.0, 0.0, 0.0],  # label 2 third behind a tie, ahead of a tie: top-5, not top-1
        [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # label 0 on top of a six-way tie: top-1
    ]
    labels = [5, 2, 2, 0]
    result = evaluate(FixedLogits(table), _loader(labels, 3), CPU)
    assert result.top1 == pytest.approx(50.0)
    assert result.top5 == pytest.approx(75.0)
    assert result.loss == pytest.approx(_cross_entropy_by_hand(table, labels), rel=1e-6)


def test_fewer_classes_than_five_count_every_sample_in_the_top5():
    table = [[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [5.0, -1.0, 3.0]]
    labels = [0, 0, 1]  # ranks 3, 1, 3 among 3 classes
    result = evaluate(FixedLogits(table), _loader(labels, 2), CPU)
    assert result.top1 == pytest.approx(100.0 / 3)
    assert result.top5 == pytest.approx(100.0)
    assert result.loss == pytest.approx(_cross_entropy_by_hand(table, labels), rel=1e-6)


def test_the_model_is_evaluated_in_eval_mode_and_left_in_its_mode():
    model = FixedLogits(TABLE).train()
    evaluate(model, _loader(LABELS, 4), CPU)
    assert model.modes == [False, False, False] and model.training
    model.eval()
    evaluate(model, _loader(LABELS, 4), CPU)
    assert not model.training


class RecordDtype(nn.Module):
    """A linear layer that records the dtype autocast gives its output and the layout of its input."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)
        self.dtypes: list[torch.dtype] = []
        self.channels_last: list[bool] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.channels_last.append(images.is_contiguous(memory_format=torch.channels_last)
                                  and not images.is_contiguous())
        out = self.linear(images.mean(dim=(2, 3)))
        self.dtypes.append(out.dtype)
        return out


def test_amp_on_cpu_runs_bfloat16_and_is_off_by_default():
    images = torch.randn(6, 4, 3, 3)
    ds = TensorDataset(images, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6))
    model = RecordDtype()
    evaluate(model, DataLoader(ds, batch_size=6), CPU)
    inference_time_per_image(model, images, CPU, repeats=1)
    assert model.dtypes == [torch.float32] * 3 and model.channels_last == [False] * 3
    model.dtypes.clear()
    evaluate(model, DataLoader(ds, batch_size=6), CPU, amp=True)
    inference_time_per_image(model, images, CPU, repeats=1, amp=True)
    assert model.dtypes == [torch.bfloat16] * 3
    model.channels_last.clear()
    evaluate(model, DataLoader(ds, batch_size=6), CPU, channels_last=True)
    inference_time_per_image(model, images, CPU, repeats=1, channels_last=True)
    assert model.channels_last == [True] * 3


class Sleeps(nn.Module):
    """Sleeps the next of `seconds` on each call: a forward whose duration is known."""

    def __init__(self, seconds: list[float]) -> None:
        super().__init__()
        self.seconds = list(seconds)
        self.modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        time.sleep(self.seconds.pop(0))
        return x


def test_inference_time_is_the_best_timed_call_after_a_warm_up_per_image():
    # The warm-up (first call) is the fastest and must not count; the best of the 3 timed calls is the first one.
    model = Sleeps([0.01, 0.1, 0.2, 0.3]).train()
    per_image = inference_time_per_image(model, torch.zeros(10, 1), CPU)
    assert model.seconds == [] and model.modes == [False] * 4 and model.training  # 1 + repeats=3 calls
    assert 0.01 <= per_image < 0.019  # 0.1 s / 10 images, plus scheduling noise
