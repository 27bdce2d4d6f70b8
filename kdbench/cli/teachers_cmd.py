"""`kdbench teachers list|train`: the cached teacher zoo."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from kdbench.cli.app import app
from kdbench.cli.options import DataRoot, Device, Sets, ZooDir
from kdbench.cli.reporter import RichReporter, console, out
from kdbench.core.errors import UserError
from kdbench.execute.create_teacher import create_teacher
from kdbench.teachers.zoo import TeacherZoo, describe_train_data

teachers_app = typer.Typer(help="The teacher zoo: teachers trained once, cached with a checksum, shared.",
                           no_args_is_help=True)
app.add_typer(teachers_app, name="teachers")


@teachers_app.command("list")
def list_command(
    zoo_dir: Path = ZooDir,
    strict: bool = typer.Option(False, "--strict", help="A card that is not one (not JSON, a field missing or of "
                                "another type, a symlink out of the zoo) is an error (exit 2), not a warning."),
) -> None:
    """Show every cached teacher (architecture, dataset, training data, recipe, seed, accuracy, size, time,
    checksum). The training data is "all N" (the full training split), "F of each class (N)" (the control of
    `teacher_data.train_fraction=F`), "elsewhere" for an imported teacher, or "unknown (old key: unused)" for an
    entry written before the data was part of the key: no run loads those (delete them to free the space).
    A card that is not one is skipped with a warning line naming it (`--strict`: exit 2); no run loads it.

    Example: kdbench teachers list --zoo-dir /shared/zoo
    """
    zoo = TeacherZoo(zoo_dir)
    cards, bad = zoo.scan()
    if bad and strict:
        listed = "; ".join(f"{path}: {why}" for path, why in bad)
        raise UserError(f"{len(bad)} unreadable teacher card(s): {listed} (fix or delete them, or drop --strict)")
    for path, why in bad:
        console.print(f"[yellow]warning[/]: {escape(f'{path}: {why}; skipped')}", highlight=False, soft_wrap=True)
    # Cards are files anyone with the zoo may have written: their strings are shown as they are, never as markup.
    table = Table(title=Text(f"teacher zoo at {zoo.root} ({len(cards)} teachers)"))
    for col in ("arch", "dataset", "training data", "recipe", "seed", "epochs", "top-1", "top-5", "params",
                "train time", "sha256"):
        table.add_column(col, justify="right" if col in ("top-1", "top-5", "params", "epochs") else "left")
    for c in cards:
        cells = (c["arch"], c["dataset"], describe_train_data(c), c["recipe"], str(c["seed"]),
                 str(c.get("epochs", "")), f"{c['top1']:.2f}", f"{c['top5']:.2f}", f"{c['params'] / 1e6:.1f}M",
                 f"{c['train_s']:.0f}s", c["sha256"][:12])
        table.add_row(*(Text(cell) for cell in cells))
    out.print(table)
    old = sum(describe_train_data(c).startswith("unknown") for c in cards)
    if old:
        out.print(f"{old} of them were written before a teacher's training data was part of its zoo key (one may "
                  "have been trained on a student's data.train_fraction subset): no run loads them; delete them, "
                  "they are retrained under the new key when needed.", highlight=False)


@teachers_app.command("train")
def train_command(
    arch: str = typer.Argument(..., help="Teacher architecture (any timm model, e.g. resnet152)."),
    dataset: str = typer.Option("digits", "--dataset", "-d"),
    epochs: int = typer.Option(None, "--epochs", help="Teacher epochs \\[default: the dataset recipe's]."),
    seed: int = typer.Option(0, "--seed"),
    sets: list[str] = Sets,
    zoo_dir: Path = ZooDir,
    data_root: Path = DataRoot,
    device: str = Device,
) -> None:
    """Train a teacher into the zoo (or show the cached one).

    Example: kdbench teachers train resnet152 --dataset digits
    """
    reporter = RichReporter()
    try:
        _, card = create_teacher(arch, dataset, epochs=epochs, seed=seed, sets=sets, zoo_dir=zoo_dir,
                                 data_root=data_root, device=device, reporter=reporter)
    finally:
        reporter.close()
    state = "cached" if card.get("cached") else "trained"
    out.print(escape(f"{arch} on {dataset}: top-1 {card['top1']:.2f}% ({state}) at {card['path']}"), highlight=False)


@teachers_app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="Weights: a state dict (.safetensors, or a timm/torchvision .pth/.pt, "
                                "possibly under 'state_dict'), or a CRD-codebase checkpoint {'model': ...}."),
    arch: str = typer.Option(..., "--arch", help="Its architecture: any timm model (e.g. resnet50) or cifar_ "
                             "model (e.g. cifar_resnet32x4)."),
    dataset: str = typer.Option("cifar100", "--dataset", "-d"),
    seed: int = typer.Option(0, "--seed", help="Zoo seed of this teacher; runs select it with --teacher-seed."),
    sets: list[str] = Sets,
    force: bool = typer.Option(False, "--force", help="Replace an imported teacher of another file."),
    zoo_dir: Path = ZooDir,
    data_root: Path = DataRoot,
    device: str = Device,
) -> None:
    """Import a teacher trained elsewhere into the zoo (safetensors + sha256, card `source: imported`),
    evaluated on the dataset's test split. Runs use it with `--set teacher_recipe.name=imported`. The file must
    fit the architecture and the dataset's class count exactly; a mismatch is named in one line (exit 2).

    Examples:

      kdbench teachers import resnet32x4_best.pth --arch cifar_resnet32x4 --dataset cifar100

      kdbench teachers import resnet18.safetensors --arch resnet18 --dataset digits
    """
    from kdbench.teachers.import_weights import import_teacher

    reporter = RichReporter()
    try:
        card = import_teacher(path, arch, dataset, seed=seed, sets=sets, zoo_dir=zoo_dir, data_root=data_root,
                              device=device, force=force, reporter=reporter)
    finally:
        reporter.close()
    state = "already imported" if card.get("already_imported") else "imported"
    out.print(escape(f"{arch} on {card['dataset']}: top-1 {card['top1']:.2f}% ({state}) at {card['path']}\n"
                     f"use it with: kdbench run --teacher {arch} --dataset {card['dataset']} --teacher-seed "
                     f"{card['seed']} --set teacher_recipe.name=imported ..."), highlight=False)
