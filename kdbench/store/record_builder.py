"""The one place a run record is assembled, block by block (what each block holds is read back by the leaderboard,
the plots, a sweep's status and `kdbench eval`; kdbench.store.migrations brings older records to this layout).

The runner calls these as the run goes: :func:`new_record` and :func:`attempt_blocks` before training, then
:func:`teacher_block`, :func:`evaluation_blocks` and :func:`served_block`, and :func:`completed_blocks` with the
engine's numbers (a :class:`FitResult` holds epochs, never record dicts). The attempts block is
kdbench.store.attempts'.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Sequence
from typing import Any

import torch

from kdbench.core import distributed
from kdbench.core.cpu_numerics import cpu_info
from kdbench.core.environment import environment
from kdbench.data.loaders import InMemoryBatches, InMemoryEvalBatches
from kdbench.data.splits import DataSplits
from kdbench.models.zoo import count_parameters, count_weight_layers
from kdbench.spec.config import RunConfig
from kdbench.store.fingerprint import code_fingerprint
from kdbench.store.migrations import SCHEMA_VERSION
from kdbench.train.engine import FitResult
from kdbench.train.transductive import transductive_config

# What a teacher's card says that a run's record keeps of it.
TEACHER_FACTS = ("top1", "top5", "top1_best", "top5_best", "best_epoch", "epochs", "train_s", "sha256", "path",
                 "cached", "user_checkpoint", "recipe", "source", "source_sha256", "train_data", "pretrained",
                 "evaluated")  # a given teacher's test metrics: measured in "this attempt" or an "earlier attempt"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_record(config: RunConfig) -> dict[str, Any]:
    """A run's record before anything is known of it beyond its config."""
    return {
        "schema": SCHEMA_VERSION,
        "run_id": config.run_id,
        "status": "running",
        "method": config.method,
        "teacher": config.teacher,
        "student": config.student,
        "dataset": config.dataset,
        "seed": config.seed,
        "recipe": config.recipe.name,
        "config": config.to_dict(),
        # The code that made the numbers (kdbench.store.fingerprint): the leaderboard averages only current code's runs.
        "code": code_fingerprint(config.method),
        "metrics": None,
        "teacher_metrics": None,
        # Predictions that depend on the other test images of the evaluation batch: marked in every table.
        "transductive": transductive_config(config),
    }


def attempt_blocks(device: torch.device, threads: dict[str, Any], determinism: dict[str, Any],
                   data: DataSplits) -> dict[str, Any]:
    """What an attempt states before it trains: the machine, the threads chosen and the data's sizes."""
    return {
        "environment": {**environment(device), "cpu": cpu_info(), **({"determinism": determinism} if determinism
                                                                     else {})},
        "threads": threads,
        "data": {"num_train": len(data.train), "num_test": len(data.test),
                 **({"num_val": len(data.val)} if data.val is not None else {}),
                 "num_classes": data.num_classes, "image_size": data.image_size, **data.notes},
    }


def teacher_block(card: dict[str, Any], teacher: torch.nn.Module) -> dict[str, Any]:
    """`teacher_metrics`: the teacher's facts from its card, and its size."""
    return {**{k: card[k] for k in TEACHER_FACTS if k in card}, "params": count_parameters(teacher),
            "layers": count_weight_layers(teacher)}


def served_block(loader: Any) -> dict[str, Any]:
    """`data.served`: where a loader's batches are made: an in-memory set on its device (a GPU keeps it there
    unless told not to), or a DataLoader's worker processes reading files."""
    if isinstance(loader, InMemoryBatches | InMemoryEvalBatches):
        return {"from": "memory", "device": str(loader.device)}
    return {"from": "loader", "workers": loader.num_workers}


def evaluation_blocks(config: RunConfig, device: torch.device) -> dict[str, Any]:
    """How the run is evaluated and, when data-parallel, how its processes share the work."""
    out: dict[str, Any] = {"eval": {"batch_size": config.recipe.eval_batch_size, "order": "shuffled",
                                    "order_seed": config.seed}}
    if config.world_size > 1:
        out["distributed"] = {
            "world_size": config.world_size, "backend": distributed.backend_for(device),
            "per_rank_batch": distributed.per_rank_batch(config.recipe.batch_size, config.world_size),
            "sync_bn": config.sync_bn, "eval": "whole batches dealt to ranks, counts summed"}
    return out


def fit_metrics(fit: FitResult) -> dict[str, Any]:
    """`metrics`: last- and best-epoch numbers; the best ones are always TEST accuracies, at the epoch the
    selecting split (`best_selected_on`) chose."""
    best, last = fit.best, fit.last
    out = {"top1_last": last.top1, "top5_last": last.top5, "top1_best": best.top1, "top5_best": best.top5,
           "best_epoch": best.epoch, "epochs": last.epoch, "best_selected_on": fit.selected_on}
    if fit.selected_on == "val":
        out.update(val_top1_best=best.val_top1, val_top5_best=best.val_top5)
    return out


def memory_block(device: torch.device) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def completed_blocks(fit: FitResult, *, student: torch.nn.Module, extra_params: int, inference: dict[str, Any],
                     timing: dict[str, Any], device: torch.device, log: Sequence[str], method_info: dict[str, Any],
                     teacher_cache: dict[str, Any]) -> dict[str, Any]:
    """The blocks of a completed run: its metrics, schedule, model, timing, memory and what the method says of
    itself. `timing` holds this attempt's seconds; `epoch_s_mean` is added here."""
    return {
        "status": "completed",
        "metrics": {**fit_metrics(fit), "resumed_from_epoch": fit.resumed_from},
        "schedule": fit.schedule,
        "param_groups": fit.param_groups,
        **({"resume_refused": fit.resume_refused} if fit.resume_refused else {}),
        "student_info": {"params": count_parameters(student), "layers": count_weight_layers(student),
                         "method_extra_params": extra_params},
        "inference": inference,
        "timing": {**timing, "epoch_s_mean": sum(r.epoch_s for r in fit.history) / len(fit.history)},
        "memory": memory_block(device),
        **({"metric_logs": {name: f"logs/{name}" for name in log}} if log else {}),
        "method_info": method_info,
        "teacher_cache": teacher_cache,
        "finished_at": now(),
    }
