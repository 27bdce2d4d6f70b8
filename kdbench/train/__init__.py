"""train: one engine for every method.

The Distiller interface and the method registry, the training loop, the evaluator, optimizers and schedules, step
logs. Never names a method; the methods layer above it imports it.
"""
