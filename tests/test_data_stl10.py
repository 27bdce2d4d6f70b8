"""STL-10's labelled splits through torchvision's reader, on tiny `.bin` files in the official binary format."""

from __future__ import annotations

import pytest
import torch
from fixtures_data import STL10_NAMES, patch_md5, write_stl10

from kdbench.core.errors import UserError
from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.stl10 import STL10Labelled, STL10Params, channel_stats


@pytest.fixture
def stl(dirs, monkeypatch):
    written = write_stl10(dirs["data"], train_per_class=3, test_per_class=2)
    patch_md5(monkeypatch, STL10Labelled, written.md5)
    return written


def test_counts_labels_and_recipe_shapes(dirs, stl):
    recipe = get_dataset_spec("stl10").recipe
    data = build_dataset("stl10", root=dirs["data"], augment=recipe.augment)
    assert (len(data.train), len(data.test), data.num_classes, data.image_size) == (30, 20, 10, 96)
    # train_y.bin holds 1-based labels; the split's are 0-based.
    assert data.train_targets.tolist() == stl.train_labels.tolist() and int(data.train_targets.max()) == 9
    assert data.train.classes == STL10_NAMES
    x, y, index = data.train[4]
    assert x.shape == (3, 96, 96) and x.dtype == torch.float32 and (y, index) == (stl.train_labels[4], 4)
    assert "unlabelled images unused" in data.notes["split"]


def test_column_major_files_are_read_the_right_way_up(dirs, stl):
    data = build_dataset("stl10", root=dirs["data"], augment="none")
    m, s = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    for split, images in ((data.train, stl.train_images), (data.test, stl.test_images)):
        x = split[3][0]
        assert torch.equal((x * s + m).mul(255).round().to(torch.uint8), torch.from_numpy(images[3]))


def test_normalisation_is_the_training_images_channel_stats(dirs, stl):
    data = build_dataset("stl10", root=dirs["data"], augment="none")
    expected = torch.from_numpy(stl.train_images).double().div(255)
    assert data.mean == pytest.approx(expected.mean(dim=(0, 2, 3)).tolist(), abs=1e-4)
    assert data.std == pytest.approx(expected.std(dim=(0, 2, 3), correction=0).tolist(), abs=1e-4)
    assert channel_stats(stl.train_images, chunk=7) == channel_stats(stl.train_images)
    stacked = torch.stack([data.train[i][0] for i in range(len(data.train))])
    assert stacked.mean().abs() < 0.01 and (stacked.std() - 1).abs() < 0.01


def test_resized_variant_changes_the_output_side(dirs, stl):
    data = build_dataset("stl10", STL10Params(image_size=64), root=dirs["data"], augment="crop-pad8-flip")
    assert data.image_size == 64 and data.train[0][0].shape == (3, 64, 64) and data.test[0][0].shape == (3, 64, 64)


def test_unlabelled_file_is_not_required(dirs, stl):
    assert not (stl.folder / "unlabeled_X.bin").exists()
    assert [name for name, _ in STL10Labelled.train_list] == ["train_X.bin", "train_y.bin"]
    assert len(build_dataset("stl10", root=dirs["data"]).train) == 30


def test_truncated_file_fails_the_md5_check(dirs, stl):
    path = stl.folder / "test_X.bin"
    path.write_bytes(path.read_bytes()[:-96])
    with pytest.raises(UserError, match=r"stl10_binary/test_X.bin failed the md5 check"):
        build_dataset("stl10", root=dirs["data"])


def test_offline_error_names_the_labelled_files(dirs, monkeypatch):
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        build_dataset("stl10", root=dirs["data"])
    assert f"{dirs['data']}/stl10_binary/{{train_X.bin,train_y.bin,test_X.bin,test_y.bin}}" in str(err.value)
    assert "stl10_binary.tar.gz" in str(err.value)
