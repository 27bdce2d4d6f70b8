"""Distillation methods, one file each; installed as `kdbench.methods`. Each file registers itself with
`@register_method` from `kdbench.train.method`; the registry imports every module here on first use."""
