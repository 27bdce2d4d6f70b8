"""ImageNet-1k in its ILSVRC2012 layout: val labels from the devkit / Kaggle CSV / class folders, the 1000 sorted
wnids a pretrained head expects, grayscale and CMYK JPEGs, the recipes, and the one-line error for missing files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_data import IMAGENET_FIXTURE_WNIDS, imagenet_devkit_ids, write_imagenet
from torchvision.datasets.folder import find_classes

from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.imagenet import ImageNetParams, imagenet_wnids
from kdbench.data.transforms import decode_image_file
from kdbench.spec.recipe import IMAGENET_RECIPES

pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def _labels(ds) -> dict[str, int]:
    return {os.path.basename(f): int(t) for f, t in zip(ds.files, ds.targets, strict=True)}


@pytest.mark.parametrize("labels", ["devkit", "devkit-folder", "loc"])
def test_flat_val_gets_each_image_the_wnid_its_ground_truth_says(tmp_path, labels):
    _, truth = write_imagenet(tmp_path, val="flat", labels=labels, val_images=12)
    data = build_dataset("imagenet", None, tmp_path)
    wnids = imagenet_wnids()
    # RepDistiller's bug (a flat val/ read through ImageFolder) cannot happen: every image has its own wnid.
    assert _labels(data.test) == {name: wnids.index(w) for name, w in truth.items()}
    assert len(set(truth.values())) > 1 and data.num_classes == 1000
    if labels != "loc":  # the devkit's IDs are not sorted-wnid indices: a reader taking ID - 1 would be wrong
        ids = imagenet_devkit_ids(list(wnids))
        assert any(ids[w] - 1 != wnids.index(w) for w in truth.values())


def test_val_as_class_folders_gives_the_same_labels_as_flat(tmp_path):
    _, truth = write_imagenet(tmp_path / "flat", val="flat")
    _, same = write_imagenet(tmp_path / "folders", val="folders")
    flat = build_dataset("imagenet", None, tmp_path / "flat")
    folders = build_dataset("imagenet", None, tmp_path / "folders")
    assert truth == same and _labels(flat.test) == _labels(folders.test)
    assert folders.notes["val_labels"] == "class folders"


def test_class_index_i_is_the_ith_sorted_wnid_as_in_timm_and_torchvision(tmp_path):
    from timm.data import ImageNetInfo

    info = ImageNetInfo("imagenet-1k")
    wnids = imagenet_wnids()
    assert [info.index_to_label_name(i) for i in range(1000)] == list(wnids)  # a timm head's class i
    for w in wnids:  # torchvision's ImageFolder/ImageNet rule: sorted class folders
        (tmp_path / "all" / w).mkdir(parents=True)
    classes, class_to_idx = find_classes(str(tmp_path / "all"))
    assert classes == list(wnids)
    write_imagenet(tmp_path)
    data = build_dataset("imagenet", None, tmp_path)
    for f, t in zip(data.train.files, data.train.targets, strict=True):
        wnid = Path(str(f)).parent.name
        assert int(t) == class_to_idx[wnid] and info.index_to_label_name(int(t)) == wnid
    assert sorted(set(data.train_targets.tolist())) == sorted(wnids.index(w) for w in IMAGENET_FIXTURE_WNIDS)


def test_grayscale_and_cmyk_jpegs_decode_to_rgb(tmp_path):
    base, _ = write_imagenet(tmp_path)
    first = base / "train" / IMAGENET_FIXTURE_WNIDS[0]
    from PIL import Image

    for name, mode in ((f"{first.name}_1.JPEG", "L"), (f"{first.name}_2.JPEG", "CMYK")):
        with Image.open(first / name) as im:
            assert im.mode == mode
            rgb = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        image = decode_image_file(first / name)
        assert image.shape[0] == 3 and image.dtype == torch.uint8
        assert (image.int() - rgb.int()).abs().max() <= 2  # PIL's colour conversion (CMYK: not inverted)
    data = build_dataset("imagenet", None, tmp_path, "rrc-flip")
    assert all(data.train[i][0].shape == (3, 224, 224) for i in range(2))


def test_recipes_and_the_standard_evaluation_transform(tmp_path):
    spec = get_dataset_spec("imagenet")
    assert spec.recipe is IMAGENET_RECIPES["mdistiller-imagenet"]
    md, td = IMAGENET_RECIPES["mdistiller-imagenet"], IMAGENET_RECIPES["torchdistill-imagenet"]
    assert (md.epochs, md.batch_size, md.lr, md.milestones, md.weight_decay) == (100, 512, 0.2, (30, 60, 90), 1e-4)
    assert (td.epochs, td.batch_size, td.lr, td.milestones, td.weight_decay) == (100, 256, 0.1, (30, 60, 90), 1e-4)
    assert md.augment == td.augment == "rrc-flip"
    write_imagenet(tmp_path, size=(300, 260))
    data = build_dataset("imagenet", ImageNetParams(), tmp_path, md.augment)
    resize, crop = data.test.transform.steps[:2]
    assert (list(resize.size), list(crop.size)) == ([256], [224, 224])  # resize 256, centre crop 224
    assert data.test[0][0].shape == (3, 224, 224)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("nothing", "ImageNet is never downloaded automatically"),
        ("no-labels", "no labels for them"),
        ("bad-name", "must be named ILSVRC2012_val_<n>.JPEG"),
        ("not-a-wnid", "are not ILSVRC2012 wnids"),
    ],
)
def test_missing_or_unlabelled_files_are_one_line_through_the_cli(in_process, dirs, setup, message):
    root = dirs["data"]
    if setup != "nothing":
        base, _ = write_imagenet(root, labels="loc")
        if setup == "no-labels":
            (base / "LOC_val_solution.csv").unlink()
        elif setup == "bad-name":
            (base / "val" / "ILSVRC2012_val_00000001.JPEG").rename(base / "val" / "photo.JPEG")
        else:
            (base / "train" / "cats").mkdir()
            shutil.copy(base / "val" / "ILSVRC2012_val_00000001.JPEG", base / "train" / "cats" / "cat.JPEG")
    result = in_process("run", "--method", "ce", "--student", "resnet18", "--dataset", "imagenet",
                        "--data-root", str(root), "--epochs", "1")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    if setup == "nothing":
        assert "image-net.org" in result.stderr and str(root / "imagenet" / "train") in result.stderr


def test_run_end_to_end_on_the_fixture(in_process, dirs):
    write_imagenet(dirs["data"], size=(40, 36))
    result = in_process("run", "--method", "ce", "--student", "resnet18", "--dataset", "imagenet",
                        "--data-root", str(dirs["data"]), "--epochs", "1", "--batch-size", "5",
                        "--set", "data.image_size=32", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"


def test_torchvision_meta_bin_labels_a_flat_val_in_image_order(tmp_path):
    # torchvision.datasets.ImageNet writes meta.bin = (wnid → class names, val wnids in image order) from the
    # devkit; a tree prepared by it once is read through its own load_meta_file.
    base, truth = write_imagenet(tmp_path, labels="loc")
    (base / "LOC_val_solution.csv").unlink()
    val_wnids = [truth[f"ILSVRC2012_val_{n:08d}.JPEG"] for n in range(1, len(truth) + 1)]
    torch.save(({w: (w,) for w in imagenet_wnids()}, val_wnids), base / "meta.bin")
    data = build_dataset("imagenet", None, tmp_path)
    assert data.notes["val_labels"] == "meta.bin"
    assert _labels(data.test) == {name: imagenet_wnids().index(w) for name, w in truth.items()}


def test_the_documented_command_selects_torchdistills_recipe(in_process, dirs):
    # docs/reproducing.md: `--set recipe.name=torchdistill-imagenet --batch-size 256 --lr 0.1` is that recipe.
    write_imagenet(dirs["data"])
    result = in_process("run", "--method", "ce", "--student", "resnet18", "--dataset", "imagenet", "--data-root",
                        str(dirs["data"]), "--set", "recipe.name=torchdistill-imagenet", "--batch-size", "256",
                        "--lr", "0.1", "--dry-run", "--json")
    assert result.returncode == 0, result.stderr
    recipe = json.loads(result.stdout)["config"]["recipe"]
    assert recipe == json.loads(json.dumps(IMAGENET_RECIPES["torchdistill-imagenet"].to_dict()))
