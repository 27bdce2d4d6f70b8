"""Data-parallel training of one run across processes, with PyTorch's own machinery (torch.distributed,
DistributedDataParallel, torch.distributed's elastic launcher locally, submitit's JobEnvironment on SLURM).

Every query and collective here answers trivially when no process group is up (`world_size()` 1, `rank()` 0,
gathers return their input), so methods call them without knowing whether they run distributed, and a
one-process run takes exactly its old path.

How a world of W processes stays equivalent to one process with the same global batch B:
- data: rank r trains on slice r of every global batch of the single-process permutation
  (kdbench.data.loaders.RankSliceSampler); DDP averages the W per-rank mean gradients, i.e. the mean over B;
- methods with a memory (CRD) gather indices and embeddings, so every rank updates its copy from the whole batch;
- evaluation: whole evaluation batches are dealt to ranks, counts summed (`all_reduce_sum`), nothing padded.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from kdbench.core.errors import UserError

# Seconds a collective (a barrier included) may wait before the run fails instead of hanging: a rank that died
# without its launcher noticing. Rank 0 trains a missing zoo teacher while the others wait at a barrier, so the
# default is generous; KDBENCH_DIST_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 3600


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0, the one process that writes records, checkpoints, exports and zoo entries."""
    return rank() == 0


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def timeout_s() -> int:
    raw = os.environ.get("KDBENCH_DIST_TIMEOUT_S", "")
    return int(raw) if raw.strip().isdigit() else DEFAULT_TIMEOUT_S


def per_rank_batch(global_batch: int, world: int) -> int:
    """The batch each rank trains on: the recipe's (global) batch divided by the world size."""
    if global_batch % world:
        raise UserError(f"batch size {global_batch} is not divisible by the world size {world}: pick a batch "
                        f"size that is a multiple of {world} (the recipe's batch is the global one)")
    return global_batch // world


def init(device: torch.device, *, rank_: int, world: int, init_method: str = "env://") -> None:
    """Join the run's process group (gloo on CPU, NCCL on CUDA) with a timeout on every collective."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend_for(device), init_method=init_method, rank=rank_, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s()))


def shutdown() -> None:
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the body first (e.g. trains and stores a zoo teacher), the others wait, then run it (and
    find the result stored)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a new tensor; `t` itself when not distributed)."""
    if not is_distributed():
        return t
    out = t.clone()
    dist.all_reduce(out)
    return out


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(t) / world_size() if is_distributed() else t


def all_gather_cat(t: torch.Tensor, *, grad: bool = False) -> torch.Tensor:
    """Every rank's `t` (same shape on every rank) concatenated along dim 0 in rank order. With `grad`, the
    gradient flows back to each rank's own piece (torch.distributed.nn's autograd-aware all_gather)."""
    if not is_distributed():
        return t
    if grad:
        from torch.distributed.nn.functional import all_gather as all_gather_autograd

        return torch.cat(all_gather_autograd(t.contiguous()), dim=0)
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, dim=0)


def own_rows(n: int) -> slice:
    """This rank's rows of a tensor gathered by `all_gather_cat` from pieces of `n` rows each."""
    return slice(rank() * n, (rank() + 1) * n)


@torch.no_grad()
def broadcast_buffers(module: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) to every rank, so that all ranks evaluate and save one
    model: DDP runs with broadcast_buffers=False (a CRD memory bank would otherwise cross the wire every step)."""
    if is_distributed():
        for buf in module.buffers():
            dist.broadcast(buf, 0)


class _TrainStep(nn.Module):
    """`forward(batch)` is the method's `forward_train(batch)`: DDP synchronises gradients of what runs through
    its `forward`, and the distiller's training entry point is `forward_train`."""

    def __init__(self, distiller: nn.Module) -> None:
        super().__init__()
        self.distiller = distiller

    def forward(self, batch: Any) -> Any:
        return self.distiller.forward_train(batch)


def data_parallel(distiller: nn.Module, device: torch.device, *, sync_bn: bool = False) -> Callable[[Any], Any]:
    """The training step to call with each batch: `distiller.forward_train` itself in one process, else a
    DistributedDataParallel wrapper of what trains (the student and the method's modules; the frozen teacher
    lives outside the distiller's module tree and stays a plain module on each rank). With `sync_bn`, BatchNorm
    layers become SyncBatchNorm (statistics over the global batch); convert before building the optimizer."""
    if not is_distributed():
        return distiller.forward_train
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    # Unused parameters: a method may leave some out of a step (a two-stage schedule, w_* = 0).
    return DistributedDataParallel(_TrainStep(distiller), device_ids=ids, broadcast_buffers=False,
                                   find_unused_parameters=True)


def check_sync_bn(sync_bn: bool, device: torch.device) -> None:
    if sync_bn and device.type == "cpu":
        raise UserError("--sync-bn needs GPUs (torch's SyncBatchNorm does not run on CPU): drop --sync-bn")


def convert_sync_bn(distiller: nn.Module) -> None:
    """Replace the BatchNorm layers under `distiller` by SyncBatchNorm in place (same Parameter objects)."""
    for name, child in list(distiller.named_children()):
        setattr(distiller, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))


def check_world(expected: int) -> None:
    """A config resolved for `expected` processes must run in a process group of that size."""
    if world_size() != expected:
        raise UserError(f"this run was resolved for {expected} processes but runs in {world_size()}: start it "
                        f"with --nproc {expected} (or as a job of {expected} tasks)")


# ---------------------------------------------------------------------------------------------------------
# Launching: torch's elastic launcher on this machine, submitit's job environment on SLURM.


def _worker(fn: Callable[..., Any], args: Sequence[Any], device: str) -> Any:
    from kdbench.core.environment import resolve_device

    dev = resolve_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    init(dev, rank_=int(os.environ["RANK"]), world=int(os.environ["WORLD_SIZE"]))
    try:
        return fn(*args, device=str(dev))
    except Exception as e:
        if _lost_a_peer(e):  # a consequence: let the launcher see the rank that failed first
            time.sleep(PEER_FAILURE_DELAY_S)
        raise
    finally:
        shutdown()


# Seconds a rank that lost a peer waits before it fails: the launcher reports the first rank to exit.
PEER_FAILURE_DELAY_S = 5.0


def _lost_a_peer(e: BaseException) -> bool:
    """Whether `e` is a collective failing because another rank went away (not this rank's own error)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(
        s in text for s in ("Connection reset", "Connection closed", "gloo/transport", "NCCL error"))


def launch_local(nproc: int, fn: Callable[..., Any], args: Sequence[Any], device: str = "auto") -> Any:
    """Run `fn(*args, device=...)` in `nproc` worker processes on this machine (torch.distributed's elastic
    launcher: a local rendezvous, no restarts) and return rank 0's result. A failed rank fails the whole run
    with a one-line UserError naming the rank and its error; the launcher stops the other ranks."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=uuid.uuid4().hex,
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0", max_restarts=0, monitor_interval=0.1,
                          start_method="spawn")
    # One intra-op thread per core share: N processes must not each take every core.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    try:
        results = elastic_launch(config, _worker)(fn, list(args), device)
    except ChildFailedError as e:
        raise UserError(failure_line(e)) from None
    return results[0]


def failure_line(e: Any) -> str:
    """'rank R failed: <error>' for the first failed rank of a ChildFailedError, on one line."""
    global_rank, failure = min(e.failures.items())
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", message)
    text = " ".join(str(message).split()) or f"exit code {failure.exitcode}"
    return f"distributed run failed: rank {global_rank} failed: {text}"


def init_from_submitit(device: torch.device, run_id: str) -> torch.device:
    """Join the process group of the current submitit job (SLURM or submitit's local executor): rank, world size
    and the master address come from submitit's JobEnvironment; the port is derived from the job id and the run
    (jobs sharing a node, and the runs one local worker trains in turn, do not collide). Returns the device of
    this task."""
    import submitit

    env = submitit.JobEnvironment()
    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    master = env.hostnames[0] if env.hostnames else "127.0.0.1"
    port = 20000 + int(hashlib.sha256(f"{env.job_id}/{run_id}".encode()).hexdigest(), 16) % 20000
    init(device, rank_=env.global_rank, world=env.num_tasks, init_method=f"tcp://{master}:{port}")
    return device
