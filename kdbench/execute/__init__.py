"""execute: one run from options to record.

Resolve the config, build its pieces, train, evaluate, store; dry runs, re-evaluation, the depth ladder and the
public `create_teacher`.
"""
