"""`kdbench models describe NAME`: each stage's index, module, shape C×H×W, stride and channels, and the embedding
width, at the dataset's input size, through the CLI in process; a bad name or input is one line, exit 2."""

from __future__ import annotations

import pytest


def rows(text: str) -> dict[str, list[str]]:
    """The table's rows by their index cell: [module, shape, stride, channels]."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")]
        if len(cells) == 7 and cells[1].lstrip("-").isdigit():
            found[cells[1]] = cells[2:6]
    return found


def test_a_resnet_at_the_datasets_size(in_process):
    done = in_process("models", "describe", "resnet18", "--dataset", "digits")
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout) == {  # digits: 16 px, timm's ImageNet stem (stride 4 before layer1)
        "0": ["act1", "64×8×8", "2", "64"], "1": ["layer1", "64×4×4", "4", "64"],
        "2": ["layer2", "128×2×2", "8", "128"], "3": ["layer3", "256×1×1", "16", "256"],
        "4": ["layer4", "512×1×1", "16", "512"],
    }
    assert "resnet18 at 16×16 (digits)" in done.stdout
    assert "embedding width: 512" in done.stdout


def test_the_recipes_small_image_stem_and_an_explicit_image_size(in_process):
    done = in_process("models", "describe", "resnet18", "--dataset", "cifar100", "--image-size", "64")
    assert done.returncode == 0, done.stderr
    assert "small-image stem" in done.stdout  # cifar100's recipe: 3×3 stride-1 stem, no max-pool
    assert rows(done.stdout)["1"] == ["layer1", "64×64×64", "1", "64"]
    plain = in_process("models", "describe", "resnet18", "--dataset", "cifar100", "--no-cifar-stem")
    assert rows(plain.stdout)["1"] == ["layer1", "64×8×8", "4", "64"]


def test_a_tiny_vit_from_model_options_as_token_maps(in_process):
    # The options a run takes as --set student.KEY=V; the scope may be left out here.
    done = in_process("models", "describe", "deit_tiny_patch16_224", "--dataset", "digits", "--set", "img_size=16",
                      "--set", "student.patch_size=4", "--set", "depth=2", "--set", "embed_dim=32",
                      "--set", "num_heads=2")
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout) == {"0": ["blocks.0", "32×4×4", "4", "32"], "1": ["blocks.1", "32×4×4", "4", "32"]}
    assert "forward_intermediates" in done.stdout and "embedding width: 32" in done.stdout


def test_the_gnn_student_by_hooks(in_process):
    done = in_process("models", "describe", "gnn2", "--dataset", "digits", "--set", "hidden=24")
    assert done.returncode == 0, done.stderr
    assert rows(done.stdout) == {"0": ["conv1", "24", "—", "24"]}
    assert "hooks" in done.stdout and "embedding width: 24" in done.stdout


@pytest.mark.parametrize(("args", "says"), [
    (["resnt18"], "unknown model 'resnt18'; close names: resnet18"),
    (["deit_tiny_patch16_224", "--dataset", "digits"],
     "deit_tiny_patch16_224 does not take a 16×16 input (Input height (16) doesn't match model (224).): build it "
     "for that size with --set img_size=16"),
    (["convnext_atto", "--dataset", "digits"], "convnext_atto does not take a 16×16 input"),
    (["resnet18", "--set", "depth"], "--set expects a model option KEY=VALUE"),
    (["resnet18", "--image-size", "0"], "--image-size=0 is out of range; allowed: [1, 4096]"),
    (["resnet18", "--dataset", "cifar1000"], "unknown dataset 'cifar1000'"),
])
def test_mistakes_are_one_line(in_process, args, says):
    done = in_process("models", "describe", *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert "Traceback" not in done.stderr
    assert len(lines) == 1 and says in " ".join(lines[0].split()), lines
