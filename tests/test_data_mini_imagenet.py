"""Mini-ImageNet as a classification set: both on-disk layouts, the seeded per-class partition, its errors."""

from __future__ import annotations

import os

import pytest
import torch
from fixtures_data import mini_imagenet_classes, write_mini_imagenet_csv, write_mini_imagenet_folders

from kdbench.core.errors import UserError
from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.mini_imagenet import MiniImageNetParams

# torchvision 0.29 deprecates its image decoders (for TorchCodec); kdbench silences that outside pytest.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SMALL = MiniImageNetParams(train_per_class=3, test_per_class=1)


def _names(ds) -> list[str]:
    return [os.path.basename(f) for f in ds.files]


def test_csv_layout_pools_the_few_shot_splits_into_all_classes(dirs):
    write_mini_imagenet_csv(dirs["data"], num_classes=6, per_class=5, size=(100, 90))
    recipe = get_dataset_spec("mini-imagenet").recipe
    data = build_dataset("mini-imagenet", SMALL, dirs["data"], recipe.augment)
    # The CSVs hold disjoint classes (2 each); the classification split has all 6 in both train and test.
    assert data.num_classes == 6 and (len(data.train), len(data.test)) == (18, 6)
    assert torch.bincount(data.train_targets).tolist() == [3] * 6
    assert sorted(data.test.targets.tolist()) == list(range(6))
    assert not set(_names(data.train)) & set(_names(data.test))
    x, y, index = data.train[5]
    assert x.shape == (3, 84, 84) and x.dtype == torch.float32 and index == 5 and 0 <= y < 6
    assert data.test[0][0].shape == (3, 84, 84)  # 100 × 90 JPEGs resized to the recipe's 84 px
    assert "3 train / 1 test" in data.notes["split"] and "6 images unused" in data.notes["split"]
    assert data.notes["layout"].startswith("images/")


def test_partition_is_fixed_by_split_seed_and_the_same_in_both_layouts(dirs, tmp_path):
    write_mini_imagenet_csv(dirs["data"], num_classes=3, per_class=6)
    write_mini_imagenet_folders(tmp_path, num_classes=3, per_class=6)
    from_csv = build_dataset("mini-imagenet", SMALL, dirs["data"])
    from_folders = build_dataset("mini-imagenet", SMALL, tmp_path)
    assert from_folders.notes["layout"] == "class folders"
    assert _names(from_csv.train) == _names(from_folders.train) and _names(from_csv.test) == _names(from_folders.test)
    assert from_csv.train_targets.tolist() == from_folders.train_targets.tolist()
    other = build_dataset("mini-imagenet", MiniImageNetParams(train_per_class=3, test_per_class=1, split_seed=1),
                          dirs["data"])
    assert _names(other.train) != _names(from_csv.train)


def test_class_folders_directly_under_the_root(dirs):
    base = dirs["data"] / "mini-imagenet"
    write_mini_imagenet_folders(dirs["data"], num_classes=3, per_class=4)
    for split in ("train", "val", "test"):  # flatten {split}/<class>/ to <class>/
        for cls in (base / split).iterdir():
            cls.rename(base / cls.name)
        (base / split).rmdir()
    data = build_dataset("mini-imagenet", SMALL, dirs["data"])
    assert data.num_classes == 3 and len(data.train) == 9 and data.train.files[0].startswith(str(base))


def test_too_few_images_in_a_class_names_the_class(dirs):
    write_mini_imagenet_csv(dirs["data"], num_classes=3, per_class=4)
    with pytest.raises(UserError, match=f"class {mini_imagenet_classes(3)[0]} has 4 images, fewer than .* = 600"):
        build_dataset("mini-imagenet", root=dirs["data"])


def test_missing_dataset_names_both_layouts(dirs):
    with pytest.raises(UserError) as err:
        build_dataset("mini-imagenet", root=dirs["data"])
    base = dirs["data"] / "mini-imagenet"
    assert f"{base}/images/*.jpg" in str(err.value) and f"{base}/{{train,val,test}}/<class>" in str(err.value)


def test_image_listed_in_a_csv_but_absent_is_an_error(dirs):
    base = write_mini_imagenet_csv(dirs["data"], num_classes=3, per_class=4)
    victim = sorted((base / "images").iterdir())[0]
    victim.unlink()
    with pytest.raises(UserError, match=f"1 images named in the CSVs are not in .*{victim.name}"):
        build_dataset("mini-imagenet", SMALL, dirs["data"])


def test_recipe_is_documented_84px_crd_shape():
    recipe = get_dataset_spec("mini-imagenet").recipe
    assert (recipe.name, recipe.epochs, recipe.milestones, recipe.augment) == (
        "mini-imagenet-v1", 240, (150, 180, 210), "crop-pad10-flip")
    assert get_dataset_spec("mini-imagenet").params.image_size == 84


def test_an_unreadable_split_file_is_named_with_the_format_expected(dirs):
    base = write_mini_imagenet_csv(dirs["data"], num_classes=3, per_class=4)
    (base / "val.csv").write_bytes(b"\xff\xfe\x00garbage\x00" * 50)
    with pytest.raises(UserError, match=r"val.csv is unreadable \(UnicodeDecodeError.*expected a UTF-8 CSV with the "
                       r"header 'filename,label'"):
        build_dataset("mini-imagenet", SMALL, dirs["data"])
