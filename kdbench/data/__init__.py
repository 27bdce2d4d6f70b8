"""Datasets: a registry of builders that return (image, label, index) splits, and their loaders."""

from kdbench.data.registry import (
    DATASETS,
    DatasetSpec,
    DataSplits,
    build_dataset,
    default_data_root,
    get_dataset_spec,
    list_datasets,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetSpec",
    "build_dataset",
    "default_data_root",
    "get_dataset_spec",
    "list_datasets",
    "register_dataset",
]
