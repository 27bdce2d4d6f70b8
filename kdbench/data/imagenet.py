"""`imagenet`: ImageNet-1k (ILSVRC2012) in its own layout, classes in sorted-wnid order so pretrained heads line up.

Layout under `<data-root>/<data.path>` (default `imagenet`):
- `train/<wnid>/*.JPEG` (the train tar's per-class tars, extracted);
- `val/` either as class folders `val/<wnid>/*.JPEG` (torchvision's ImageNet class leaves it so) or flat
  `val/ILSVRC2012_val_00000001.JPEG …` with its labels from, in this order of preference,
  `LOC_val_solution.csv` (Kaggle: `ImageId,PredictionString`, the wnid first in the prediction string),
  the devkit (`ILSVRC2012_devkit_t12.tar.gz` or its extracted folder `ILSVRC2012_devkit_t12/`), or torchvision's
  `meta.bin` (written by torchvision.datasets.ImageNet from the devkit).

Class i is the i-th of the 1000 ILSVRC2012 wnids in sorted order: torchvision's rule (sorted class folders) and
timm's ImageNet-1k class order (timm.data.ImageNetInfo, from which the list is read), so class i of a pretrained
timm or torchvision head is class i here, whichever classes a tree actually holds (a partial tree keeps 1000
classes). A flat val/ image's label is looked up by the number in its file name (ILSVRC2012_val_<n>: line n of
the devkit's ground truth, whose ILSVRC2012_IDs meta.mat maps to wnids), never by folder or by listing order:
RepDistiller's ImageNet val labels went wrong reading a flat val/ through ImageFolder (its issue #36).

ImageNet is never downloaded (image-net.org needs a login): missing files are one line saying where to put them.
Recipes: `mdistiller-imagenet` (the default) and `torchdistill-imagenet` (kdbench.spec.recipe).
"""

from __future__ import annotations

import csv
import functools
import io
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

from kdbench.core.errors import UserError, check_range
from kdbench.data.imagefolder import flatten, image_file_splits, resolve_path, scan_class_folders
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, is_image_file
from kdbench.spec.recipe import MDISTILLER_IMAGENET

DOWNLOADS = "https://image-net.org/challenges/LSVRC/2012/2012-downloads.php"
DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_FOLDER = "ILSVRC2012_devkit_t12"
META_MAT = "data/meta.mat"
GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
LOC_CSV = "LOC_val_solution.csv"
TORCHVISION_META = "meta.bin"
_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d+)", re.IGNORECASE)


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 wnids in class-index order: timm's ImageNet-1k synset list, which is sorted (so it is
    also torchvision's sorted-folder order; checked here, since a head's alignment depends on it)."""
    from timm.data import ImageNetInfo

    wnids = tuple(ImageNetInfo("imagenet-1k").label_names())
    if len(wnids) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError("timm's imagenet-1k synset list is not the 1000 sorted wnids")  # a timm change
    return wnids


@dataclass(frozen=True)
class ImageNetParams:
    path: str = "imagenet"  # absolute, or relative to the data root
    image_size: int = 224
    crop_ratio: float = 0.875  # evaluation: resize to image_size / crop_ratio (256), centre-crop image_size

    def __post_init__(self) -> None:
        check_range("data.image_size", self.image_size, 8, 1024)
        check_range("data.crop_ratio", self.crop_ratio, 0.0, 1.0, low_open=True)


def where_to_put(base: Path) -> str:
    return (f"imagenet: expected {base}/train/<wnid>/*.JPEG and {base}/val/ (class folders <wnid>/, or flat "
            f"ILSVRC2012_val_*.JPEG with {base}/{DEVKIT_ARCHIVE} or {base}/{LOC_CSV}); ImageNet is never downloaded "
            f"automatically: get ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar and {DEVKIT_ARCHIVE} from "
            f"{DOWNLOADS} and extract them there (set data.path to move {base})")


def _devkit_ground_truth(meta_mat: bytes, ground_truth: str, source: str) -> list[str]:
    """The devkit's val wnids in image-number order: ground-truth line n holds the ILSVRC2012_ID of image n, and
    meta.mat's leaf synsets (num_children 0) map IDs to wnids — torchvision's parse_meta_mat, same fields."""
    import scipy.io

    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
        id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
        ids = [int(line) for line in ground_truth.split()]
    except Exception as e:  # noqa: BLE001 — any malformed devkit gets the same advice
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"imagenet: {source} is unreadable ({reason}); expected the ILSVRC2012 devkit "
                        f"({META_MAT} and {GROUND_TRUTH}) from {DOWNLOADS}") from None
    unknown = sorted({i for i in ids if i not in id_to_wnid})
    if unknown:
        raise UserError(f"imagenet: {source}: ground-truth IDs {unknown[:5]} are not leaf synsets of its meta.mat")
    return [id_to_wnid[i] for i in ids]


def read_devkit(base: Path) -> tuple[list[str], str] | None:
    """Val wnids by image number from the devkit archive or its extracted folder, with the one read; None when
    neither is there."""
    folder, archive = base / DEVKIT_FOLDER, base / DEVKIT_ARCHIVE
    if (folder / META_MAT).is_file() and (folder / GROUND_TRUTH).is_file():
        truth = (folder / GROUND_TRUTH).read_bytes().decode("ascii", "replace")
        return _devkit_ground_truth((folder / META_MAT).read_bytes(), truth, str(folder)), DEVKIT_FOLDER
    if not archive.is_file():
        return None
    try:
        with tarfile.open(archive, "r:gz") as tar:
            meta = tar.extractfile(f"{DEVKIT_FOLDER}/{META_MAT}")
            truth = tar.extractfile(f"{DEVKIT_FOLDER}/{GROUND_TRUTH}")
            if meta is None or truth is None:
                raise KeyError("not regular files")
            return _devkit_ground_truth(meta.read(), truth.read().decode("ascii"), str(archive)), DEVKIT_ARCHIVE
    except (tarfile.TarError, KeyError, OSError, EOFError, UnicodeDecodeError) as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"imagenet: {archive} is unreadable ({reason}); expected the devkit archive with "
                        f"{DEVKIT_FOLDER}/{META_MAT} and {DEVKIT_FOLDER}/{GROUND_TRUTH}, from {DOWNLOADS}") from None


def read_loc_csv(path: Path) -> dict[int, str]:
    """Image number → wnid from Kaggle's LOC_val_solution.csv (`ImageId,PredictionString`, wnid first)."""
    labels: dict[int, str] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
                raise UserError(f"imagenet: {path} must start with the header 'ImageId,PredictionString'")
            for row in reader:
                number = _VAL_NUMBER.fullmatch(row["ImageId"].strip())
                words = (row["PredictionString"] or "").split()
                if number is None or not words:
                    raise UserError(f"imagenet: {path}: row {row['ImageId']!r} is not ILSVRC2012_val_<n> with a wnid")
                labels[int(number.group(1))] = words[0]
    except (UnicodeDecodeError, csv.Error) as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"imagenet: {path} is unreadable ({reason}); expected Kaggle's {LOC_CSV}") from None
    return labels


def read_torchvision_meta(base: Path) -> list[str] | None:
    """torchvision's meta.bin (wnid → names, val wnids in image order), when it is there."""
    if not (base / TORCHVISION_META).is_file():
        return None
    from torchvision.datasets.imagenet import load_meta_file

    try:
        return list(load_meta_file(str(base))[1])
    except Exception as e:  # noqa: BLE001 — torchvision's reader: any failure is a bad file
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:160]
        raise UserError(f"imagenet: {base / TORCHVISION_META} is unreadable ({reason}); delete it, or put "
                        f"{DEVKIT_ARCHIVE} in {base}") from None


def flat_val_labels(base: Path, val_dir: Path, files: list[str]) -> tuple[dict[str, list[str]], str]:
    """A flat val/'s images grouped by wnid, each by the number in its file name; and where the labels came from."""
    by_number: dict[int, str]
    if (base / LOC_CSV).is_file():
        by_number, source = read_loc_csv(base / LOC_CSV), LOC_CSV
    else:
        devkit = read_devkit(base)
        wnids, source = devkit if devkit is not None else (read_torchvision_meta(base), TORCHVISION_META)
        if wnids is None:
            raise UserError(f"imagenet: {val_dir} holds images but no class folders, and no labels for them: put "
                            f"{DEVKIT_ARCHIVE} (or {LOC_CSV}) in {base}, from {DOWNLOADS}")
        by_number = {n: w for n, w in enumerate(wnids, start=1)}
    classes: dict[str, list[str]] = {}
    for path in files:
        name = Path(path).name
        number = _VAL_NUMBER.fullmatch(Path(name).stem)
        if number is None:
            raise UserError(f"imagenet: {path}: a flat val/ image must be named ILSVRC2012_val_<n>.JPEG "
                            "(its label is line n of the ground truth)")
        wnid = by_number.get(int(number.group(1)))
        if wnid is None:
            raise UserError(f"imagenet: {path} has no label in {base / source}")
        classes.setdefault(wnid, []).append(path)
    return classes, source


def _check_wnids(classes: dict[str, list[str]], folder: Path) -> None:
    known = set(imagenet_wnids())
    unknown = sorted(set(classes) - known)
    if unknown:
        raise UserError(f"imagenet: {unknown[:5]} under {folder} are not ILSVRC2012 wnids "
                        "(expected <wnid>/ folders such as n01440764/)")


@register_dataset(
    "imagenet",
    params=ImageNetParams(),
    recipe=MDISTILLER_IMAGENET,
    description="ImageNet-1k (ILSVRC2012) train/ + val/ (class folders, or flat with the devkit), 1000 sorted wnids",
    needs_root=True,
)
def build_imagenet(params: ImageNetParams, root: Path, augment: str) -> DataSplits:
    base = resolve_path(root, params.path)
    train_dir, val_dir = base / "train", base / "val"
    if not train_dir.is_dir() or not val_dir.is_dir():
        raise UserError(where_to_put(base))
    train_classes = scan_class_folders(train_dir)
    if not train_classes:
        raise UserError(f"imagenet: no images in class folders under {train_dir}; " + where_to_put(base))
    _check_wnids(train_classes, train_dir)
    flat = sorted(str(p) for p in val_dir.iterdir() if p.is_file() and is_image_file(p.name))
    if flat:
        val_classes, val_source = flat_val_labels(base, val_dir, flat)
    else:
        val_classes, val_source = scan_class_folders(val_dir), "class folders"
    if not val_classes:
        raise UserError(f"imagenet: no images in {val_dir}; " + where_to_put(base))
    _check_wnids(val_classes, val_dir)
    index = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    # Sorted by class index so that file order is the same whichever way val/ is laid out.
    train = flatten(dict(sorted(train_classes.items())), index)
    val = flatten({w: sorted(f) for w, f in sorted(val_classes.items())}, index)
    notes = {
        "split": f"ILSVRC2012 train/ and val/ ({len(train[0]):,}/{len(val[0]):,} images)",
        "classes": f"1000 sorted wnids (timm/torchvision order); {len(train_classes)} with training images",
        "val_labels": val_source,
    }
    return image_file_splits(train, val, len(index), augment, params.image_size, IMAGENET_MEAN, IMAGENET_STD,
                             params.crop_ratio, notes)
