"""core: what every layer stands on.

Errors a person can act on, registries, atomic storage, safe loading of checkpoints, the environment a record
names, distributed helpers, CPU numerics, progress reporting. Imports no other layer of kdbench.
"""
