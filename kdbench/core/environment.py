"""What a run ran on: versions, git sha, device, host — stored in every run record and teacher card."""

from __future__ import annotations

import hashlib
import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

# What results/regenerate.sh writes (records, tables, plots): data, not code. A regeneration that rewrites them
# runs from a clean tree; the same list is in results/regenerate.sh's check.
OUTPUT_PATHSPECS = (":(exclude)results/reference", ":(exclude)results/plots", ":(exclude)results/*.md",
                    ":(exclude)results/*.csv")

_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "submitit", "safetensors")


@lru_cache(maxsize=1)
def git_info() -> dict[str, Any]:
    """The sha of the kdbench checkout this code runs from (None when installed from a wheel)."""
    return checkout_info(Path(__file__).resolve().parent.parent)


def checkout_info(here: Path) -> dict[str, Any]:
    """`sha`, `dirty` (uncommitted changes to tracked files other than OUTPUT_PATHSPECS) and, when dirty,
    `diff_sha256` of the git checkout holding `here`; None values outside a checkout."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no", "--", ".", *OUTPUT_PATHSPECS],
            capture_output=True, text=True, timeout=5,
        )
        info: dict[str, Any] = {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
        if info["dirty"]:
            # What the uncommitted changes were, so that a record from a dirty tree names the exact code it ran
            # (`git diff HEAD | sha256sum` reproduces it from the tree that made it).
            diff = subprocess.run(["git", "-C", str(here), "diff", "HEAD", "--", ".", *OUTPUT_PATHSPECS],
                                  capture_output=True, timeout=30)
            info["diff_sha256"] = hashlib.sha256(diff.stdout).hexdigest() if diff.returncode == 0 else None
        return info
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("kdbench", *_PACKAGES):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def device_info(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"type": device.type, "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        info.update(name=torch.cuda.get_device_name(idx), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())
    else:
        info["name"] = platform.processor() or platform.machine()
    return info


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "git": git_info(),
        "device": device_info(device),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def resolve_device(name: str) -> torch.device:
    from kdbench.core.errors import UserError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UserError("--device cuda asked for, but torch sees no CUDA device; use --device cpu or auto")
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise UserError(f"unknown device '{name}'. Valid: auto, cpu, cuda, cuda:N")


def allocated_cpus() -> tuple[int, str]:
    """(CPUs this process was given, where that number comes from).

    Under SLURM a task sees every core of the node (no cgroups, or task/none), so its allocation is
    SLURM_CPUS_PER_TASK; else the CPUs this process may run on (taskset, cgroup cpusets, SLURM's affinity).
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if cpus.isdigit() and int(cpus) > 0:
        return int(cpus), "SLURM_CPUS_PER_TASK"
    try:
        return len(os.sched_getaffinity(0)), "sched_getaffinity"
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1, "cpu_count"


def configure_threads() -> dict[str, Any]:
    """Match torch's threads to the CPUs this process was given; returns what ran (stored in run records).

    Inside a SLURM job the allocation decides (two array tasks on one node must not each use every core).
    Outside one, torch's own choice (or the caller's `torch.set_num_threads`) stands unless this process is
    pinned to fewer CPUs than the machine has.
    """
    cpus, source = allocated_cpus()
    in_job = bool(os.environ.get("SLURM_JOB_ID"))
    if in_job or source == "SLURM_CPUS_PER_TASK" or cpus < (os.cpu_count() or cpus):
        torch.set_num_threads(cpus)
    else:
        source = "unchanged"  # torch's default or what the caller set
    return {"torch_threads": torch.get_num_threads(), "cpus": cpus, "source": source}


def configure_determinism(deterministic: bool, device: torch.device) -> dict[str, Any]:
    """`--deterministic` (default) / `--no-deterministic`: cuDNN's autotuner (`cudnn.benchmark`) off / on; when
    deterministic on a CUDA device also `cudnn.deterministic` and `torch.use_deterministic_algorithms(True,
    warn_only=True)` (an op without a deterministic kernel warns instead of failing; cuBLAS gets the workspace
    setting it needs, if CUDA is not initialised yet). On CPU nothing changes: its kernels are deterministic
    already, and the same command and seed give the same numbers either way. Returns what is in force, for the
    run record's environment.

    Not part of the run id, like the device: it changes which GPU kernels compute the same quantities (the last
    bits of the numbers), not the experiment; a GPU run differs from a CPU run of the same id as much."""
    torch.backends.cudnn.benchmark = not deterministic
    if device.type == "cuda":
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = deterministic
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    return {"deterministic": deterministic, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "cudnn_deterministic": torch.backends.cudnn.deterministic,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled()}
