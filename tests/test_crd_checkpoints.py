"""Checkpoints of the CRD codebase: loaded safely into the cifar_ models, imported into the teacher zoo.

tests/fixtures/crd-checkpoints/ holds files written by the original RepDistiller classes (random weights, BN
statistics randomised) with their eval-mode logits on a fixed input; see its README.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from fixtures_data import patch_md5, write_cifar100

import kdbench
from kdbench.cli.app import main
from kdbench.core.errors import UserError
from kdbench.core.storage import sha256_file
from kdbench.data.cifar import CIFAR100Files
from kdbench.models import load_crd_checkpoint

FIXTURES = Path(__file__).parent / "fixtures" / "crd-checkpoints"
ORIGINAL_NAMES = {
    "resnet8x4": "cifar_resnet8x4",
    "resnet20": "cifar_resnet20",
    "wrn_16_2": "cifar_wrn_16_2",
    "MobileNetV2": "cifar_mobilenetv2",
    "ShuffleV1": "cifar_shufflev1",
}


@pytest.mark.parametrize(("original", "arch"), list(ORIGINAL_NAMES.items()))
def test_a_crd_checkpoint_reproduces_the_original_logits(original, arch):
    model = load_crd_checkpoint(FIXTURES / f"{original}.pth", arch)
    assert not model.training
    x = torch.load(FIXTURES / "input.pt", weights_only=True)
    expected = torch.load(FIXTURES / f"{original}.logits.pt", weights_only=True)
    with torch.no_grad():
        logits = model(x)
    assert (logits - expected).abs().max().item() < 1e-4


def test_a_checkpoint_of_another_architecture_names_the_file_and_the_mismatch():
    path = FIXTURES / "resnet20.pth"
    with pytest.raises(UserError) as e:
        load_crd_checkpoint(path, "cifar_resnet8x4")  # same keys as resnet20's first blocks, 4× the width
    msg = str(e.value)
    assert str(path) in msg and "shape mismatch" in msg and "conv1.weight (16, 3, 3, 3) vs (32, 3, 3, 3)" in msg
    with pytest.raises(UserError, match="missing keys: block1.layer.0.bn1.weight"):
        load_crd_checkpoint(path, "cifar_wrn_16_2")
    assert "\n" not in msg


class _WritesAMarker:
    """Unpickling this object runs code: it writes a file (what a malicious checkpoint would do, harmlessly)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",))


def _crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "MARKER"
    path = tmp_path / "crafted.pth"
    state = torch.load(FIXTURES / "resnet8x4.pth", weights_only=True)["model"]
    torch.save({"model": state, "epoch": 240, "payload": _WritesAMarker(marker)}, path)
    return path, marker


def test_a_crafted_pickle_is_refused_and_never_runs(tmp_path):
    path, marker = _crafted_checkpoint(tmp_path)
    with pytest.raises(UserError) as e:
        load_crd_checkpoint(path, "cifar_resnet8x4")
    assert str(e.value) == f"not a plain tensor checkpoint: {path}"
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is really dangerous: an unsafe load runs its payload
    assert marker.read_text() == "unpickled"


def cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """The `kdbench` command in this process (so the CIFAR fixture's patched checksums apply)."""
    monkeypatch.setattr(sys, "argv", ["kdbench", *map(str, args)])
    with pytest.raises(SystemExit) as e:
        main()
    captured = capsys.readouterr()
    return int(e.value.code or 0), captured.out, captured.err


@pytest.fixture
def cifar(dirs, monkeypatch):
    written = write_cifar100(dirs["data"], train_per_class=2, test_per_class=1, classes=8)
    patch_md5(monkeypatch, CIFAR100Files, written.md5)
    return dirs


def test_import_into_the_zoo_then_distil_from_the_imported_teacher(cifar, monkeypatch, capsys):
    source = FIXTURES / "resnet8x4.pth"
    code, out, err = cli(monkeypatch, capsys, "teachers", "import", source, "--arch", "cifar_resnet8x4",
                         "--dataset", "cifar100", "--device", "cpu")
    assert code == 0, err
    assert "--set teacher_recipe.name=imported" in " ".join(out.split())
    [card_path] = cifar["zoo"].glob("cifar100/cifar_resnet8x4/imported-s0-*/card.json")
    card = json.loads(card_path.read_text())
    assert card["source"] == "imported" and card["source_sha256"] == sha256_file(source)
    assert card["sha256"] == sha256_file(card_path.parent / "model.safetensors")
    assert card["epochs"] == 240 and card["params"] == 1_233_540 and 0.0 <= card["top1"] <= 100.0

    again = cli(monkeypatch, capsys, "teachers", "import", source, "--arch", "cifar_resnet8x4", "--device", "cpu")
    assert again[0] == 0 and "already imported" in again[1]

    record = kdbench.run("kd", teacher="cifar_resnet8x4", student="cifar_resnet8", dataset="cifar100", epochs=1,
                         data_root=cifar["data"], device="cpu",
                         sets=["teacher_recipe.name=imported", "recipe.batch_size=8"])
    assert record["status"] == "completed"
    teacher = record["teacher_metrics"]
    assert teacher["source"] == "imported" and teacher["cached"] is True and teacher["sha256"] == card["sha256"]
    assert teacher["top1"] == card["top1"]  # the imported weights, not a retrained teacher

    # an imported teacher the zoo does not hold is never trained under the "imported" name
    with pytest.raises(UserError, match="no imported teacher cifar_resnet20 for cifar100"):
        kdbench.run("kd", teacher="cifar_resnet20", student="cifar_resnet8", dataset="cifar100", epochs=1,
                    data_root=cifar["data"], device="cpu", sets=["teacher_recipe.name=imported"])


def test_import_of_a_mismatched_architecture_exits_2_naming_file_and_mismatch(cifar, monkeypatch, capsys):
    source = FIXTURES / "wrn_16_2.pth"
    code, _, err = cli(monkeypatch, capsys, "teachers", "import", source, "--arch", "cifar_wrn_40_2",
                       "--dataset", "cifar100", "--device", "cpu")
    message = " ".join(err.split())
    assert code == 2 and "Traceback" not in err
    assert f"{source} does not fit cifar_wrn_40_2" in message and "missing keys: block1.layer.2." in message
    assert not list(cifar["zoo"].rglob("card.json"))


def test_import_refuses_a_crafted_pickle_and_never_runs_it(cifar, monkeypatch, capsys, tmp_path):
    path, marker = _crafted_checkpoint(tmp_path)
    code, _, err = cli(monkeypatch, capsys, "teachers", "import", path, "--arch", "cifar_resnet8x4",
                       "--dataset", "cifar100", "--device", "cpu")
    assert code == 2 and f"not a plain tensor checkpoint: {path}" in " ".join(err.split())
    assert not marker.exists() and not list(cifar["zoo"].rglob("card.json"))
