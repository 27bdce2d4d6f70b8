"""Models: one factory for timm and kdbench architectures, and feature taps by hooks.

Importing this package registers the CRD codebase's CIFAR architectures (`cifar_resnet8x4`, …) in timm's own
registry (`kdbench.models.cifar`), so `timm.create_model("cifar_…")` and every kdbench command know them.
"""

from kdbench.models import cifar  # noqa: F401  (registers the cifar_ architectures in timm)
from kdbench.models.crd_checkpoint import load_crd_checkpoint
from kdbench.models.features import Features, FeatureTap
from kdbench.models.zoo import count_parameters, count_weight_layers, create_model, is_model, register_model

__all__ = [
    "FeatureTap",
    "Features",
    "count_parameters",
    "count_weight_layers",
    "create_model",
    "is_model",
    "load_crd_checkpoint",
    "register_model",
]
