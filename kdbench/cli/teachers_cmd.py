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
    pretrained: str = typer.Option(None, "--pretrained", help="List timm's pretrained teachers matching this "
                                   "wildcard instead (e.g. 'resnet*'; '' or '*' for all): name, classes, input "
                                   "size, published top-1, and where the weights are on this machine."),
) -> None:
    """Show every cached teacher (architecture, dataset, training data, recipe, seed, accuracy, size, time,
    checksum). The training data is "all N" (the full training split), "F of each class (N)" (the control of
    `teacher_data.train_fraction=F`), "elsewhere" for an imported teacher, or "unknown (old key: unused)" for an
    entry written before the data was part of the key: no run loads those (delete them to free the space).
    A card that is not one is skipped with a warning line naming it (`--strict`: exit 2); no run loads it.

    A pretrained timm teacher (`--teacher resnet34.tv_in1k`) has a card per dataset it was measured on: its data
    is "elsewhere (timm pretrained)", its recipe "pretrained", its top-1/top-5 those measured on that dataset's
    evaluation split. `--pretrained FILTER` lists what timm offers instead.

    Examples: kdbench teachers list --zoo-dir /shared/zoo;  kdbench teachers list --pretrained 'resnet*'
    """
    if pretrained is not None:
        out.print(_pretrained_table(pretrained))
        return
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


def _pretrained_table(pattern: str) -> Table:
    """timm's pretrained weights matching `pattern`, each with what a run needs to know before using it."""
    from kdbench.teachers.pretrained import cached_weights, pretrained_cfg, pretrained_names, published_accuracy

    names = pretrained_names("" if pattern in ("", "*") else pattern)
    table = Table(title=Text(f"timm pretrained weights matching '{pattern}' ({len(names)})"))
    for col in ("name", "classes", "input", "published top-1", "on this machine"):
        # folded, never cut with an ellipsis: a path shown in part cannot be copied
        table.add_column(col, justify="right" if col in ("classes", "published top-1") else "left", overflow="fold")
    for name in names:
        cfg = pretrained_cfg(name)
        size = cfg.get("input_size") or ()
        published = published_accuracy(name)
        found = cached_weights(name)
        table.add_row(*(Text(cell) for cell in (
            name, str(cfg.get("num_classes", "")), "×".join(map(str, size[1:])),
            f"{published[0]:.2f}" if published else "", str(found) if found else "no (kdbench teachers download)")))
    return table


@teachers_app.command("download")
def download_command(
    name: str = typer.Argument(..., help="timm pretrained name with its tag, e.g. resnet34.tv_in1k."),
) -> None:
    """Download timm's pretrained weights NAME into the Hugging Face cache, where runs find them offline (a run
    itself never downloads). Needs the network; honours HF_HOME / HF_HUB_CACHE / HF_HUB_OFFLINE.

    Example: kdbench teachers download resnet34.tv_in1k
    """
    from kdbench.teachers.pretrained import cached_weights, download_weights, is_pretrained_name

    if not is_pretrained_name(name):
        raise UserError(f"{name}: not a timm pretrained name (arch.tag); see `kdbench teachers list --pretrained "
                        "'PATTERN'`")
    path = cached_weights(name) or download_weights(name)
    out.print(escape(f"{name}: {path}\nuse it with: kdbench run --teacher {name} ..."), highlight=False)
