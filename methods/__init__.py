"""Distillation methods, one file each; installed as `kdbench.methods`. Each file registers itself with
`@register_method` from `kdbench.method`; the registry imports every module here on first use."""
