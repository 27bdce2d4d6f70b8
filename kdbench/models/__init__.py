"""Models: one factory for timm and kdbench architectures, and feature taps by hooks."""

from .features import Features, FeatureTap
from .zoo import count_parameters, count_weight_layers, create_model, is_model, register_model

__all__ = [
    "FeatureTap",
    "Features",
    "count_parameters",
    "count_weight_layers",
    "create_model",
    "is_model",
    "register_model",
]
