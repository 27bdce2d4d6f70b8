"""Whether a run's test numbers are transductive: its student predicts a test image from the other test images of
its evaluation batch (a graph over the batch), so its accuracy depends on the evaluation batch size and order.

The method class decides (`Distiller.transductive`, which asks the student's architecture by default); the run
record stores the answer (`record["transductive"]`); records written before that field existed are judged from
their config when loaded (kdbench.store.migrations). The leaderboard marks such rows and never names a method.
"""

from __future__ import annotations

from typing import Any

from kdbench.spec.config import RunConfig


def transductive_config(config: RunConfig) -> bool:
    from kdbench.train.method import get_method, method_params

    return bool(get_method(config.method).cls.transductive(method_params(config), config.student,
                                                           config.student_params))


def is_transductive(record: dict[str, Any]) -> bool:
    """The record's `transductive` field (a loaded record always has it: kdbench.store.migrations judges older
    records from their config)."""
    return record.get("transductive") is True
