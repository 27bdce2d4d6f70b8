"""Which CPU kernels compute a run's numbers, and `--portable`, the mode in which that does not depend on the CPU.

A CPU run's last float bits depend on the CPU: torch's kernels dispatch to the best instruction set it has, MKL
picks a code path per CPU, oneDNN and NNPACK pick convolution kernels by instruction set. cpu_info() names those
choices for the run record (`environment.cpu`), cpu_identity() is the part two records must share to compute the
same bits, configure_portable() fixes them (README: Reproducibility across CPUs).

Kept apart from kdbench.core.environment on purpose: that module is part of every method's code fingerprint
(kdbench.store.fingerprint), and what a record says about its machine must not change any run id.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

# MKL's Conditional Numerical Reproducibility branches (mkl_cbwr.h): which code path MKL's kernels take.
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2", 9: "AVX",
                 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
# `--portable`: the settings under which a CPU run's numbers do not depend on which x86 CPU computes them
# (benchmarks/cpu_portable.py checks it and measures the cost). ATen's own kernels at the DEFAULT (no SIMD
# dispatch) level, MKL's BLAS on its COMPATIBLE branch; both are read once, at their first use in the process.
PORTABLE_ENV = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE"}
# The fields of a record's `environment.cpu` that decide which kernels compute a CPU run's numbers (and so their
# last bits): two records that agree on these and on the thread count ran the same float operations.
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


def configure_portable() -> None:
    """`--portable`: make this process compute CPU numbers that do not depend on the CPU — ATen's DEFAULT kernels
    (ATEN_CPU_CAPABILITY=default), MKL's COMPATIBLE branch (MKL_CBWR), oneDNN and NNPACK convolutions off (they
    pick kernels by the CPU's ISA and cache sizes), one torch thread. The two variables are read at torch's
    first kernel and MKL's first call: set here, they work only before this process has computed anything;
    after that (e.g. a second run in a Python session) this refuses, saying what to set before starting, and
    changes nothing. The record's `environment.cpu` (cpu_info) then shows the mode in force."""
    from kdbench.core.errors import UserError

    for name, value in PORTABLE_ENV.items():
        if os.environ.get(name, value).lower() != value.lower():
            raise UserError(f"--portable needs {name}={value}, but the environment sets {name}="
                            f"{os.environ[name]}: unset it")
    before = {name: os.environ.get(name) for name in PORTABLE_ENV}
    os.environ.update(PORTABLE_ENV)
    lib = _mkl()
    capability, branch = torch.backends.cpu.get_cpu_capability(), _mkl_branch(lib)
    if capability != "DEFAULT" or (lib is not None and branch != "COMPATIBLE"):
        for name, value in before.items():  # refused: this process's children must not inherit half a mode
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value
        raise UserError(f"--portable: this process computed with torch before (its kernels run at {capability}, "
                        f"MKL's branch {branch}); start a fresh process (the `kdbench` command does), or set "
                        + " ".join(f"{k}={v}" for k, v in PORTABLE_ENV.items()) + " before Python starts")
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    torch.set_num_threads(1)
    global _portable_in_force
    _portable_in_force = True


# Set once configure_portable() succeeded: the mode cannot be undone in this process (the kernels were chosen).
_portable_in_force = False


def check_native_possible() -> None:
    """A run without `--portable` in a process that configured it would compute with the portable kernels and
    store those numbers under the native run's id (e.g. a second run in one Python session or debug sweep
    worker): refused, saying to start a fresh process."""
    from kdbench.core.errors import UserError

    if _portable_in_force:
        raise UserError("this process ran a --portable run, and its CPU kernels stay portable: a run without "
                        "--portable needs a fresh process (the `kdbench` command starts one)")


def portable_threads(threads: dict[str, Any]) -> dict[str, Any]:
    """The record's `threads` under `--portable`: one torch thread, whatever configure_threads chose (how a
    reduction is split across threads changes its last bits)."""
    torch.set_num_threads(1)
    return {**threads, "torch_threads": 1, "source": "portable"}
