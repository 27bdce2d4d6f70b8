"""`kdbench teachers import` takes plain state dicts of any timm architecture (safetensors, or a `.pth` as timm and
torchvision write them), so a user's own weights become a zoo teacher; a file that does not fit is one line
naming the first mismatch, exit 2."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

import kdbench
from kdbench.cli.app import main
from kdbench.core.storage import sha256_file
from kdbench.teachers.import_weights import import_teacher

SETS = ["data.image_size=8"]


def _timm_state(arch: str, num_classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return timm.create_model(arch, pretrained=False, num_classes=num_classes).state_dict()


def test_a_timm_state_dict_becomes_a_zoo_teacher_runs_distil_from(dirs, tmp_path):
    state = _timm_state("resnet18", 10)
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    card = import_teacher(path, "resnet18", "digits", sets=SETS, zoo_dir=dirs["zoo"], device="cpu")
    entry = Path(card["path"])
    assert card["source"] == "imported" and card["source_format"] == "safetensors"
    assert card["source_sha256"] == sha256_file(path) and card["sha256"] == sha256_file(entry / "model.safetensors")
    imported = load_file(str(entry / "model.safetensors"))
    assert sorted(imported) == sorted(state) and all(torch.equal(imported[k], state[k]) for k in state)

    # the same weights as timm/torchvision training scripts save them: under "state_dict", from DataParallel
    pth = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, pth)
    again = import_teacher(pth, "resnet18", "digits", seed=1, sets=SETS, zoo_dir=dirs["zoo"], device="cpu")
    assert again["source_format"] == "state-dict" and again["source_meta"] == {"epoch": 90}
    assert again["sha256"] == card["sha256"] and again["top1"] == card["top1"]  # the very same teacher

    record = kdbench.run("kd", teacher="resnet18", student="gnn2", epochs=1, zoo_dir=dirs["zoo"],
                         results_dir=dirs["results"], device="cpu",
                         sets=[*SETS, "student.hidden=16", "teacher_recipe.name=imported"])
    teacher = record["teacher_metrics"]
    assert teacher["source"] == "imported" and teacher["sha256"] == card["sha256"] and teacher["cached"] is True


def _drop_first(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(list(state.items())[1:])


@pytest.mark.parametrize(("arch", "classes", "edit", "message"), [
    ("resnet18", 1000, dict, "does not fit resnet18: its classifier fc has 1000 classes, not 10; "
                             "2 shape mismatch (file vs model): fc.weight (1000, 512) vs (10, 512), fc.bias"),
    ("resnet18", 10, _drop_first, "does not fit resnet18: 1 missing keys: conv1.weight"),
    ("resnet34", 10, dict, "does not fit resnet18: 96 unexpected keys: layer1.2."),
], ids=["imagenet-classes", "missing-key", "another-architecture"])
def test_a_file_that_does_not_fit_is_one_line_exit_2(dirs, tmp_path, arch, classes, edit, message, monkeypatch,
                                                     capsys):
    path = tmp_path / f"{arch}.safetensors"
    save_file({k: v.contiguous() for k, v in edit(_timm_state(arch, classes)).items()}, str(path))
    # The CLI's entry point in process (`python -m kdbench` is main(); a subprocess spent ~5 s importing): a
    # warning, which a fresh process would print as a second line, is recorded and refused here.
    monkeypatch.setattr(sys, "argv", ["kdbench", "teachers", "import", str(path), "--arch", "resnet18",
                                      "--dataset", "digits", "--set", SETS[0], "--device", "cpu"])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as done:
        main()
    stderr = capsys.readouterr().err
    assert done.value.code == 2, stderr
    assert not caught, [str(w.message) for w in caught]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert message in stderr, stderr
    assert not list(dirs["zoo"].rglob("card.json"))
