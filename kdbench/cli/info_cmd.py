"""`kdbench methods` and `kdbench datasets`: what is registered, with papers and defaults."""

from __future__ import annotations

from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.reporter import out
from kdbench.data.registry import get_dataset_spec, list_datasets
from kdbench.train.method import get_method, list_methods


def _fmt(defaults: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in defaults.items()) or "—"


@app.command("methods")
def methods_command() -> None:
    """List the registered distillation methods with their paper, default student and default hyperparameters.

    Example: kdbench methods

    Override a default with: kdbench run --method kd --teacher resnet152 --set kd.temperature=2
    """
    table = Table(title="distillation methods")
    for col in ("name", "paper", "teacher", "teacher cache", "default student", "defaults (--set NAME.KEY=VALUE)"):
        table.add_column(col)
    for name in list_methods():
        spec = get_method(name)
        table.add_row(name, spec.paper, "yes" if spec.needs_teacher else "no",
                      spec.cls.teacher_outputs if spec.needs_teacher else "—", spec.default_student,
                      _fmt(spec.defaults()))
    out.print(table)
    out.print("Each loss, where its defaults come from and its published table: docs/methods.md in the kdbench "
              "repository; CNN2GNN's choices and ablations: docs/cnn2gnn.md", highlight=False)


@app.command("datasets")
def datasets_command() -> None:
    """List the registered datasets with their default recipe and parameters (`--set data.KEY=VALUE`).

    Example: kdbench datasets

    Then: kdbench run --method ce --dataset cifar100 --data-root /data
    """
    import dataclasses

    table = Table(title="datasets")
    for col in ("name", "description", "recipe", "epochs", "batch", "lr", "parameters"):
        table.add_column(col)
    for name in list_datasets():
        spec = get_dataset_spec(name)
        r = spec.recipe
        table.add_row(name, spec.description, r.name, str(r.epochs), str(r.batch_size), f"{r.lr:g}",
                      _fmt(dataclasses.asdict(spec.params)))
    out.print(table)


