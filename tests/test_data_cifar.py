"""CIFAR-10/100 through torchvision's readers on tiny files in the official pickle format (tests/fixtures_data.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from fixtures_data import md5_of, patch_md5, write_cifar10, write_cifar100

import kdbench
from kdbench.core.errors import UserError
from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.augment import PadCropFlip
from kdbench.data.cifar import CIFAR10Files, CIFAR100Files
from kdbench.data.loaders import AUTO_WORKERS, loader_workers, make_train_loader


def _pixels(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """Undo the normalisation: back to the uint8 values the file holds."""
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    return (x * s + m).mul(255).round().to(torch.uint8)


def test_cifar100_counts_labels_and_recipe_shapes(dirs, monkeypatch):
    written = write_cifar100(dirs["data"], train_per_class=2, test_per_class=1)
    patch_md5(monkeypatch, CIFAR100Files, written.md5)
    spec = get_dataset_spec("cifar100")
    data = build_dataset("cifar100", root=dirs["data"], augment=spec.recipe.augment)
    assert (len(data.train), len(data.test), data.num_classes, data.image_size) == (200, 100, 100, 32)
    assert data.train_targets.tolist() == written.train_labels.tolist()
    assert data.train_targets.min() == 0 and data.train_targets.max() == 99
    x, y, index = data.train[7]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and index == 7 and y == written.train_labels[7]
    assert data.test[0][0].shape == (3, 32, 32)
    assert data.num_workers == 0 and "50" not in data.notes["split"] and "200/100" in data.notes["split"]


def test_cifar10_reads_the_five_batches_pixel_exact(dirs, monkeypatch):
    written = write_cifar10(dirs["data"], train_per_class=5, test_per_class=2)
    patch_md5(monkeypatch, CIFAR10Files, written.md5)
    data = build_dataset("cifar10", root=dirs["data"], augment="none")
    assert (len(data.train), len(data.test), data.num_classes) == (50, 20, 10)
    for i in (0, 23, 49):  # samples from the first, a middle and the last batch file
        x, y, _ = data.train[i]
        assert torch.equal(_pixels(x, data.mean, data.std), torch.from_numpy(written.train_images[i]))
        assert y == written.train_labels[i]
    x, y, _ = data.test[19]
    assert torch.equal(_pixels(x, data.mean, data.std), torch.from_numpy(written.test_images[19]))


def test_crop_flip_augmentation_is_keyed_and_pads_black(dirs, monkeypatch):
    # Served as batches (in memory): each sample is its keyed crop of the black-padded uint8 image, then
    # normalised; the same (seed, epoch) gives the same images whatever the global RNG holds.
    written = write_cifar10(dirs["data"], train_per_class=2, test_per_class=1)
    patch_md5(monkeypatch, CIFAR10Files, written.md5)
    data = build_dataset("cifar10", root=dirs["data"], augment="crop-pad4-flip")
    assert data.train[0][0].shape == (3, 32, 32)  # a single item is unaugmented

    def epoch(seed: int, global_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        torch.manual_seed(global_seed)
        loader = make_train_loader(data.train, 4, seed=seed, device=torch.device("cpu"))
        loader.sampler.set_epoch(1)
        images, index = zip(*[(x, i) for x, _, i in loader], strict=True)
        return torch.cat(images), torch.cat(index)

    images, index = epoch(0, global_seed=1)
    assert torch.equal(images, epoch(0, global_seed=2)[0]) and not torch.equal(images, epoch(1, global_seed=1)[0])
    raw = torch.from_numpy(written.train_images)[index]
    top, left, flipped = PadCropFlip(4, True).offsets(0, 1, index)
    assert 0 < int(flipped.sum()) < len(index) or len(index) < 8
    for k in range(len(index)):
        padded = torch.nn.functional.pad(raw[k], (4, 4, 4, 4))  # zeros: black
        crop = padded[:, int(top[k]) : int(top[k]) + 32, int(left[k]) : int(left[k]) + 32]
        crop = crop.flip(-1) if flipped[k] else crop
        assert torch.equal(_pixels(images[k], data.mean, data.std), crop)


def test_a_resized_crop_is_refused_for_an_in_memory_set(dirs, monkeypatch):
    written = write_cifar10(dirs["data"], train_per_class=1, test_per_class=1)
    patch_md5(monkeypatch, CIFAR10Files, written.md5)
    with pytest.raises(UserError, match="image-file datasets"):
        build_dataset("cifar10", root=dirs["data"], augment="rrc-flip")


def test_corrupted_file_is_rejected_by_the_md5_check(dirs, monkeypatch):
    written = write_cifar100(dirs["data"], train_per_class=1, test_per_class=1)
    patch_md5(monkeypatch, CIFAR100Files, written.md5)
    train = written.folder / "train"
    raw = bytearray(train.read_bytes())
    raw[-100] ^= 0xFF  # one flipped byte inside the image array
    train.write_bytes(bytes(raw))
    with pytest.raises(UserError, match=r"cifar-100-python/train failed the md5 check"):
        build_dataset("cifar100", root=dirs["data"])


def test_real_checksums_stay_on_for_users(dirs):
    # Without the test's patch, torchvision's real md5s apply: a fixture is not the real CIFAR-100.
    write_cifar100(dirs["data"], train_per_class=1, test_per_class=1)
    assert CIFAR100Files.train_list[0][1] == "16019d7e3df5f24257cddd939b257f8d"
    with pytest.raises(UserError, match="md5 check"):
        build_dataset("cifar100", root=dirs["data"])


def test_offline_error_names_the_expected_files(dirs, monkeypatch):
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        build_dataset("cifar100", root=dirs["data"])
    msg = str(err.value)
    assert f"{dirs['data']}/cifar-100-python/{{train,test,meta}}" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in msg and "\n" not in msg


def test_failed_download_is_one_user_error_line(dirs, monkeypatch):
    monkeypatch.delenv("KDBENCH_OFFLINE", raising=False)
    monkeypatch.setattr(CIFAR10Files, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # refused at once
    with pytest.raises(UserError) as err:
        build_dataset("cifar10", root=dirs["data"])
    msg = str(err.value)
    assert "cifar-10-batches-py/{data_batch_1,data_batch_2" in msg and "automatic download failed" in msg
    assert "\n" not in msg


def test_recipes_are_crd_with_distinct_names_and_the_cifar_stem():
    r100, r10 = get_dataset_spec("cifar100").recipe, get_dataset_spec("cifar10").recipe
    expected = dict(epochs=240, batch_size=64, lr=0.05, schedule="multistep", milestones=(150, 180, 210),
                    gamma=0.1, weight_decay=5e-4, momentum=0.9, augment="crop-pad4-flip", cifar_stem=True)
    assert {k: getattr(r100, k) for k in expected} == expected
    assert dataclasses.replace(r10, name=r100.name) == r100 and r10.name != r100.name


def test_auto_workers_follow_the_device(monkeypatch):
    monkeypatch.delenv("KDBENCH_WORKERS", raising=False)
    monkeypatch.setattr("kdbench.data.loaders._available_cpus", lambda: 16)
    assert loader_workers(torch.device("cuda"), AUTO_WORKERS) == 8
    assert loader_workers(torch.device("cpu"), AUTO_WORKERS) == 4
    assert loader_workers(torch.device("cpu"), None) == 0  # in-memory tensor sets
    monkeypatch.setattr("kdbench.data.loaders._available_cpus", lambda: 2)
    assert loader_workers(torch.device("cpu"), AUTO_WORKERS) == 0
    monkeypatch.setenv("KDBENCH_WORKERS", "3")
    assert loader_workers(torch.device("cpu"), AUTO_WORKERS) == 3


def test_auto_workers_are_shared_by_the_ranks_of_one_machine(monkeypatch):
    # `--nproc 4` on a 16-CPU machine: each rank gets 4 CPUs' worth of workers (3 on a GPU, one for its loop),
    # not 8 each; in a SLURM job SLURM_CPUS_PER_TASK is already one task's share.
    from kdbench.data import loaders

    for name in ("KDBENCH_WORKERS", "SLURM_CPUS_PER_TASK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert loaders._available_cpus() == 16
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loaders._available_cpus() == 4
    assert loader_workers(torch.device("cuda"), AUTO_WORKERS) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "6")
    assert loaders._available_cpus() == 6


def test_run_end_to_end_on_a_tiny_cifar100(dirs, monkeypatch):
    written = write_cifar100(dirs["data"], train_per_class=2, test_per_class=1, classes=8)
    patch_md5(monkeypatch, CIFAR100Files, written.md5)
    # The ImageNet stem keeps this CPU run cheap; the CIFAR stem itself is tested in test_cifar_stem.py.
    record = kdbench.run("ce", student="resnet18", dataset="cifar100", data_root=dirs["data"], epochs=1,
                         sets=["recipe.cifar_stem=false", "recipe.batch_size=8"], device="cpu")
    assert record["status"] == "completed"
    assert record["data"]["num_train"] == 16 and record["data"]["num_classes"] == 100
    assert record["config"]["recipe"]["name"] == "crd-cifar100"
    assert 0.0 <= record["metrics"]["top1_last"] <= 100.0


def test_garbage_in_place_of_a_file_is_unreadable_not_missing(dirs, monkeypatch):
    # The file is there and (checksums patched to match the garbage) passes the md5 check; the reader cannot
    # parse it: the error names that file and the format expected, and never calls it missing.
    written = write_cifar100(dirs["data"], train_per_class=1, test_per_class=1)
    train = written.folder / "train"
    train.write_bytes(b"garbage" * 100)
    patch_md5(monkeypatch, CIFAR100Files, {**written.md5, "train": md5_of(train)})
    with pytest.raises(UserError) as err:
        build_dataset("cifar100", root=dirs["data"])
    msg = str(err.value)
    assert f"{train} is unreadable (UnpicklingError" in msg and "missing" not in msg
    assert "expected the python pickles of the official cifar-100-python.tar.gz" in msg and "\n" not in msg


def test_a_missing_file_is_called_missing(dirs, monkeypatch):
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    written = write_cifar100(dirs["data"], train_per_class=1, test_per_class=1)
    (written.folder / "meta").unlink()
    with pytest.raises(UserError, match=r"cifar100: missing meta; expected .*cifar-100-python/\{train,test,meta\}"):
        build_dataset("cifar100", root=dirs["data"])
