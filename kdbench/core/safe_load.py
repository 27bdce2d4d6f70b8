"""Reading weight files without running code that is in them.

A `.pt`/`.pth` file is a pickle, and unpickling an arbitrary pickle runs whatever it asks for. kdbench's results
folders and teacher files are often on shared storage that other people can write to, so every torch file it
reads goes through `load_plain_checkpoint`: `torch.load(weights_only=True)`, whose unpickler builds only tensors,
numbers, strings, booleans, None, lists, tuples and dicts and refuses any other object (torch >= 2.6, where that
unpickler had its last known escape fixed). A refused file raises `UnsafeCheckpointError`, a `UserError`: the
caller reports it in one line and never obeys it.

Safetensors files hold no code at all; `load_plain_weights` reads them with the safetensors reader and maps a
malformed file to the same error.

`check_plain` is the writer's half: kdbench saves only what the safe loader will read back.

`load_plain_pickle` reads a pickle that is not a torch file (submitit's job result files) with an unpickler that
refuses every class and function: only the pickle's own built-in values (str, bytes, numbers, None, bool, list,
tuple, dict, set) come back, so nothing in the file can run.
"""

from __future__ import annotations

import pickle
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from kdbench.core.errors import UserError

# What `torch.load(weights_only=True)` rebuilds, beyond containers (plus torch's own dtype/device/size values,
# which optimizer and model state may hold).
_PLAIN_SCALARS = (bool, int, float, str, bytes, type(None), torch.dtype, torch.device, torch.Size)


class UnusableCheckpointError(UserError):
    """A checkpoint that cannot be used: unreadable, or not the state kdbench expects."""


class UnsafeCheckpointError(UnusableCheckpointError):
    """A file the safe loader refused: it is not a plain tensor checkpoint (or it is corrupt)."""

    def __init__(self, path: str | Path, reason: str = "") -> None:
        super().__init__(f"not a plain tensor checkpoint: {path}")
        self.path = Path(path)
        self.reason = reason  # the loader's own words (e.g. which global the pickle asked for), for debugging


def load_plain_checkpoint(path: str | Path, *, mmap: bool = False) -> dict[str, Any]:
    """The dict saved in the torch file `path`, loaded on the CPU by the safe (weights-only) unpickler.

    Raises `UnsafeCheckpointError` when the unpickler refuses the file (it asks for any other object: a crafted
    pickle, a pickled model class) or the file is not a readable torch file, or holds something else than a dict.
    `mmap`: map the tensors' storage from the file instead of reading it (for a caller that reads a few numbers).
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():  # torch warns about odd pickles it then refuses: the refusal is the news
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except OSError as e:  # missing, unreadable: not a question of content
        raise UnusableCheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - any failure to decode the file means it is not one we can use
        # torch's refusal is a page of advice (incl. "use weights_only=False", exactly wrong here): keep one line.
        raise UnsafeCheckpointError(path, reason=_one_line(str(e))) from None
    if not isinstance(state, dict):
        raise UnsafeCheckpointError(path, reason=f"it holds a {type(state).__name__}, not a dict")
    return state


def _one_line(message: str) -> str:
    """The line of torch's refusal that names what it refused (a global, an opcode), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return next((line for line in lines if "unsupported" in line.lower()), lines[0] if lines else "")


def load_plain_weights(path: str | Path) -> dict[str, Any]:
    """Tensors of a `.safetensors` file, or the dict of a torch file (through `load_plain_checkpoint`)."""
    path = Path(path)
    if path.suffix != ".safetensors":
        return load_plain_checkpoint(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except OSError as e:
        raise UnusableCheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from None
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise UnsafeCheckpointError(path, reason=str(e)) from None


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first value in `obj` that the safe loader would refuse to read back."""
    if isinstance(obj, (torch.Tensor, *_PLAIN_SCALARS)):
        return
    if type(obj) in (dict, OrderedDict):  # a state dict is an OrderedDict; other dict subclasses need their class
        for key, value in obj.items():
            check_plain(key, f"{where} key")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):  # not a namedtuple or other subclass: those need their class
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} holds a {type(obj).__module__}.{type(obj).__qualname__}, which the safe loader "
                    "would refuse; store it as tensors, numbers, strings, lists or dicts")


class RefusedPickle(pickle.UnpicklingError):
    """The pickle names a class or function: it is not plain values, and it was not unpickled."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: a pickle that names any class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise RefusedPickle(f"refused: the pickle asks for {module}.{name}")


# What a pickle of numpy arrays (the CIFAR python files) names: the array, its dtype, and numpy's rebuilder. None
# of them runs anything but numpy's own array construction.
_NUMPY_ARRAY_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _NumpyArraysUnpickler(pickle.Unpickler):
    """Plain values and numpy arrays only: any other class or function is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _NUMPY_ARRAY_GLOBALS:
            return super().find_class(module, name)
        raise RefusedPickle(f"refused: the pickle asks for {module}.{name}")


def load_numpy_pickle(path: str | Path, encoding: str = "ASCII") -> Any:
    """The plain values and numpy arrays pickled in `path` (e.g. CIFAR's python files, with encoding "latin1").
    `RefusedPickle` if it names anything else; another `pickle.UnpicklingError` / `EOFError` if it is broken."""
    with open(path, "rb") as f:
        return _NumpyArraysUnpickler(f, encoding=encoding).load()


def load_plain_pickle(path: str | Path) -> Any:
    """The plain values pickled in `path` (built-in types only). `RefusedPickle` if it names any class or
    function; another `pickle.UnpicklingError` / `EOFError` if it is incomplete."""
    with open(path, "rb") as f:
        return _NoGlobalsUnpickler(f).load()
