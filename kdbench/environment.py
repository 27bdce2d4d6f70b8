"""What a run ran on: versions, git sha, device, host, and the CPU and kernel choices that decide a CPU run's last
float bits — stored in every run record and teacher card. Also the `--portable` CPU mode (configure_portable)."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

_PACKAGES = ("torch", "torchvision", "timm", "numpy", "pandas", "scikit-learn", "submitit", "safetensors")


@lru_cache(maxsize=1)
def git_info() -> dict[str, Any]:
    """The sha of the kdbench checkout this code runs from (None when installed from a wheel)."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5,
        )
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
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


# MKL's Conditional Numerical Reproducibility branches (mkl_cbwr.h): which code path MKL's kernels take.
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
# `--portable`: the settings under which a CPU run's numbers do not depend on which x86 CPU computes them
# (benchmarks/cpu_portable.py checks it and measures the cost). ATen's own kernels at the DEFAULT (no SIMD
# dispatch) level, MKL's BLAS on its COMPATIBLE branch; both are read once, at their first use in the process.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
# The fields of environment()["cpu"] that decide which kernels compute a CPU run's numbers (and so their last
# bits): two records that agree on these, and on torch's version, ran the same float operations.
CPU_IDENTITY = ("model", "capability", "mkl_branch", "mkl_auto_branch", "mkldnn_enabled", "nnpack_enabled",
                "torch_build", "mkl")


def _mkl() -> Any:
    """torch's statically linked MKL (its exported cbwr functions), or None (a build without MKL, not Linux)."""
    import ctypes

    if not torch.backends.mkl.is_available():
        return None
    try:
        return ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    except OSError:
        return None


def _mkl_branch(lib: Any, auto: bool = False) -> str | None:
    """MKL's code path: the branch in force (OFF: each CPU its own), or with `auto` the one this CPU would take."""
    fn = getattr(lib, "mkl_serv_cbwr_get_auto_branch" if auto else "mkl_serv_cbwr_get", None) if lib else None
    if fn is None:
        return None
    code = fn() if auto else fn(1)  # MKL_CBWR_BRANCH
    return _MKL_BRANCHES.get(code, str(code))


@lru_cache(maxsize=1)
def cpu_model() -> dict[str, str | None]:
    """The CPU's name and vendor/family/model/stepping (a VM may call every CPU "Intel Xeon Processor"; the
    numbers still tell Sapphire Rapids from Skylake). From /proc/cpuinfo on Linux, else `platform`."""
    fields = {"model name": "name", "vendor_id": "vendor", "cpu family": "family", "model": "model_number",
              "stepping": "stepping"}
    out: dict[str, str | None] = dict.fromkeys(fields.values())
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, sep, value = line.partition(":")
            if not sep:
                if any(out.values()):
                    break  # the first processor's block is enough
                continue
            if key.strip() in fields:
                out[fields[key.strip()]] = value.strip()
    except OSError:
        pass
    out["name"] = out["name"] or platform.processor() or platform.machine()
    return out


@lru_cache(maxsize=1)
def kernel_libraries() -> dict[str, str | None]:
    """torch's build (e.g. 2.14.1+cu130) and the MKL and oneDNN versions compiled into it (torch.__config__)."""
    import re

    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version ([0-9.]+)", shown)
    onednn = re.search(r"(?:MKL-DNN|oneDNN) (v[^ ]+)", shown)
    return {"torch_build": torch.__version__, "mkl": mkl.group(1) if mkl else None,
            "onednn": onednn.group(1) if onednn else None}


def cpu_info() -> dict[str, Any]:
    """What decides the last bits of a CPU run's numbers: the CPU, the ISA level torch's kernels dispatch to
    (ATEN_CPU_CAPABILITY caps it), MKL's branch (MKL_CBWR fixes it), and whether oneDNN (mkldnn) and NNPACK
    convolutions are on — each picks its kernels by the CPU's instruction set. The thread count is in the
    record's `threads`. Reading the capability fixes it for the process, so call this after configure_portable."""
    model = cpu_model()
    lib = _mkl()
    return {
        "model": " ".join(str(model[k]) for k in ("name", "vendor", "family", "model_number", "stepping")),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "capability_env": os.environ.get("ATEN_CPU_CAPABILITY"),
        "mkl_branch": _mkl_branch(lib),
        "mkl_auto_branch": _mkl_branch(lib, auto=True),
        "mkl_cbwr_env": os.environ.get("MKL_CBWR"),
        "mkldnn_enabled": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "nnpack_enabled": bool(torch.backends.nnpack.is_available() and torch._C._get_nnpack_enabled()),
        "onednn_max_isa_env": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        **kernel_libraries(),
    }


def cpu_identity(env: dict[str, Any] | None) -> dict[str, Any] | None:
    """The fields of a record's environment that decide a CPU run's float bits (CPU_IDENTITY: the CPU, the kernels
    it dispatches to, torch's build and MKL's version; and the torch threads), or None for a record made before
    they were stored. Under `--portable` the CPU itself drops out: the same bits on any x86 CPU."""
    cpu = (env or {}).get("cpu")
    if not cpu:
        return None
    out = {k: cpu.get(k) for k in CPU_IDENTITY}
    out["torch_threads"] = (env.get("device") or {}).get("torch_threads")
    if cpu.get("capability") == "DEFAULT" and cpu.get("mkl_branch") == "COMPATIBLE" and \
            not cpu.get("mkldnn_enabled") and not cpu.get("nnpack_enabled"):
        out["model"] = out["mkl_auto_branch"] = "any x86 CPU (portable)"
    return out


def configure_portable() -> dict[str, Any]:
    """`--portable`: make this process compute CPU numbers that do not depend on the CPU — ATen's DEFAULT kernels
    (ATEN_CPU_CAPABILITY=default), MKL's COMPATIBLE branch (MKL_CBWR), oneDNN and NNPACK convolutions off (they
    pick kernels by the CPU's ISA and cache sizes), one torch thread. The two variables are read at torch's
    first kernel and MKL's first call: set here, they work only before this process has computed anything;
    after that (e.g. a second run in a Python session) this refuses, saying what to set before starting.
    Returns what is in force, for the record."""
    from .errors import UserError

    for name, value in PORTABLE_ENV.items():
        if os.environ.get(name, value).lower() != value.lower():
            raise UserError(f"--portable needs {name}={value}, but the environment sets {name}="
                            f"{os.environ[name]}: unset it")
        os.environ[name] = value
    lib = _mkl()
    capability, branch = torch.backends.cpu.get_cpu_capability(), _mkl_branch(lib)
    if capability != "DEFAULT" or (lib is not None and branch != "COMPATIBLE"):
        raise UserError(f"--portable: this process computed with torch before (its kernels run at {capability}, "
                        f"MKL's branch {branch}); start a fresh process (the `kdbench` command does), or set "
                        + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()) + " before Python starts")
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(1)
    return {"portable": True, "capability": capability, "mkl_branch": branch, "mkldnn_enabled": False,
            "nnpack_enabled": False, "torch_threads": 1}


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "versions": package_versions(),
        "git": git_info(),
        "device": device_info(device),
        "cpu": cpu_info(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
    }


def resolve_device(name: str) -> torch.device:
    from .errors import UserError

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


def configure_threads(portable: bool = False) -> dict[str, Any]:
    """Match torch's threads to the CPUs this process was given; returns what ran (stored in run records).

    Inside a SLURM job the allocation decides (two array tasks on one node must not each use every core).
    Outside one, torch's own choice (or the caller's `torch.set_num_threads`) stands unless this process is
    pinned to fewer CPUs than the machine has. `portable` (configure_portable): one thread, always (how a
    reduction is split across threads changes its last bits).
    """
    cpus, source = allocated_cpus()
    if portable:
        torch.set_num_threads(1)
        return {"torch_threads": 1, "cpus": cpus, "source": "portable"}
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
