"""The dataset registry: one entry per dataset, each a builder plus its default parameters and recipe.

Adding a dataset is one decorated builder (see `digits.py`): it returns :class:`DataSplits` whose samples are
`(image, label, index)` triples, the index being the sample's position in its split (CRD's memory bank and
any instance-level method need it).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.core.registry import Registry
from kdbench.data.splits import DataSplits
from kdbench.spec.recipe import Recipe

Builder = Callable[..., DataSplits]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    build: Builder  # build(params, root: Path, augment: str) -> DataSplits
    params: Any  # default parameters: a frozen dataclass instance, overridable with --set data.KEY=VALUE
    recipe: Recipe  # default training recipe (students and teachers)
    description: str
    needs_root: bool = False  # True for datasets read from disk (then root/where-to-put-files matters)


# Modules of kdbench.data that hold machinery, not datasets.
_NOT_DATASETS = {"registry", "augment", "keyed", "tensor_dataset", "loaders", "transforms", "validation", "subset",
                 "fixtures", "splits"}


def _load_builtin() -> None:
    # Every other module of kdbench.data defines datasets and registers them on import: adding a dataset is
    # adding one file.
    # Found by file in this folder: the package's __init__ imports this module, which never imports the package.
    import importlib
    import pkgutil

    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name not in _NOT_DATASETS and not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")


DATASETS: Registry[DatasetSpec] = Registry("dataset", loader=_load_builtin)


def register_dataset(
    name: str, *, params: Any, recipe: Recipe, description: str, needs_root: bool = False
) -> Callable[[Builder], Builder]:
    def decorator(build: Builder) -> Builder:
        DATASETS.add(name, DatasetSpec(name, build, params, recipe, description, needs_root))
        return build

    return decorator


def get_dataset_spec(name: str) -> DatasetSpec:
    return DATASETS.get(name)


def list_datasets() -> list[str]:
    return DATASETS.names()


def default_data_root() -> Path:
    return Path(os.environ.get("KDBENCH_DATA", Path.home() / ".cache" / "kdbench" / "data")).expanduser()


def build_dataset(
    name: str, params: Any = None, root: str | Path | None = None, augment: str = "none", val_fraction: float = 0.0
) -> DataSplits:
    """The dataset's splits; with `val_fraction` > 0 a stratified validation split held out of the training split
    (fixed by the dataset's `split_seed`, 0 for datasets without one): `DataSplits.val`."""
    spec = get_dataset_spec(name)
    params = params if params is not None else spec.params
    data_root = Path(root or default_data_root())
    splits = spec.build(params, data_root, augment)
    if val_fraction <= 0:
        return splits
    from kdbench.data.validation import hold_out_validation

    unaugmented = splits if augment == "none" else spec.build(params, data_root, "none")
    return hold_out_validation(splits, unaugmented, val_fraction, int(getattr(params, "split_seed", 0)))
