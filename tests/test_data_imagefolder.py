"""`imagefolder`: ImageNet-style train/val trees; decoding, transforms, errors, and worker-loader determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from fixtures_data import write_imagefolder
from PIL import Image

from kdbench.core.errors import UserError
from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.imagefolder import ImageFolderParams
from kdbench.data.loaders import make_train_loader
from kdbench.data.transforms import parse_augment

# torchvision 0.29 deprecates its image decoders (for TorchCodec); kdbench silences that outside pytest.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")

SMALL = ImageFolderParams(image_size=32)


def test_tree_counts_classes_and_recipe_shapes(dirs):
    write_imagefolder(dirs["data"], num_classes=3, train_per_class=4, val_per_class=2, size=(40, 30))
    recipe = get_dataset_spec("imagefolder").recipe
    data = build_dataset("imagefolder", SMALL, dirs["data"], recipe.augment)
    # 4 JPEGs + 1 PNG per class; the .txt file is not an image.
    assert data.num_classes == 3 and (len(data.train), len(data.test)) == (15, 9)
    assert torch.bincount(data.train_targets).tolist() == [5, 5, 5]
    for ds in (data.train, data.test):
        x, y, index = ds[len(ds) - 1]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 2 and index == len(ds) - 1
    # Workers started by spawn/forkserver (macOS, Python ≥ 3.14) receive the dataset pickled.
    assert pickle.loads(pickle.dumps(data.train))[0][0].shape == (3, 32, 32)


def test_absolute_path_and_custom_split_folders(dirs, tmp_path):
    base = write_imagefolder(tmp_path, num_classes=2, train_per_class=2, val_per_class=1)
    (base / "val").rename(base / "test")
    params = ImageFolderParams(path=str(base), test_dir="test", image_size=16)
    data = build_dataset("imagefolder", params, dirs["data"], "none")
    assert (len(data.train), len(data.test)) == (6, 4)


def test_decoded_pixels_match_the_file(dirs):
    base = write_imagefolder(dirs["data"], num_classes=1, train_per_class=1, val_per_class=1, size=(32, 32))
    params = ImageFolderParams(image_size=32, crop_ratio=1.0, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    data = build_dataset("imagefolder", params, dirs["data"], "none")
    png = [i for i, f in enumerate(data.test.files) if f.endswith(".png")][0]
    expected = torch.from_numpy(np.array(Image.open(base / "val/class_0/extra.png"))).permute(2, 0, 1)
    assert torch.equal(data.test[png][0].mul(255).round().to(torch.uint8), expected)  # PNG is lossless


def test_missing_tree_says_where_it_looked(dirs):
    with pytest.raises(UserError, match=f"expected {dirs['data']}/imagefolder/train/<class>/<image>"):
        build_dataset("imagefolder", root=dirs["data"])


def test_test_class_unknown_to_training_is_an_error(dirs):
    base = write_imagefolder(dirs["data"], num_classes=2, train_per_class=1, val_per_class=1)
    (base / "val" / "class_1").rename(base / "val" / "class_9")
    with pytest.raises(UserError, match="class_9"):
        build_dataset("imagefolder", SMALL, dirs["data"])


def test_augment_grammar_extends_crop_flip_with_rrc():
    assert parse_augment("rrc-flip").rrc and parse_augment("crop-pad12-flip").pad == 12
    with pytest.raises(UserError, match="Valid: none, crop-padN, rrc"):
        parse_augment("rrc-pad4")


def test_worker_loader_draws_the_same_crops_for_the_same_seed(dirs):
    # A sample's crop is a function of (run seed, epoch, its index) alone (data/loaders.py): the same in loader
    # workers as in the main process, whatever the global RNG holds, and another run seed draws other crops.
    write_imagefolder(dirs["data"], num_classes=2, train_per_class=3, val_per_class=1, size=(24, 24))
    data = build_dataset("imagefolder", ImageFolderParams(image_size=16), dirs["data"], "rrc-flip")

    def crops(seed: int, global_seed: int, workers: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        loader = make_train_loader(data.train, 3, seed=seed, device=torch.device("cpu"), num_workers=workers)
        loader.sampler.set_epoch(1)
        images, index = zip(*[(x, i) for x, _, i in loader], strict=True)
        return torch.cat(images)[torch.cat(index).argsort()]  # in sample order: the shuffle aside

    first = crops(0, global_seed=1, workers=2)
    assert torch.equal(first, crops(0, global_seed=2, workers=2))
    assert torch.equal(first, crops(0, global_seed=1, workers=0))
    assert not torch.equal(first, crops(1, global_seed=1, workers=2))
