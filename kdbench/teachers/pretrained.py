"""Pretrained teachers from timm: `--teacher resnet34.tv_in1k` (any timm name with a pretrained tag), never trained
here, never downloaded without being asked.

- **Where the weights come from.** The file timm's own pretrained machinery would read, looked up *offline*: the
  Hugging Face cache (`$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; `model.safetensors`
  first, then `pytorch_model.bin`, as timm does) or, for weights timm only knows by URL, torch's hub cache
  (`$TORCH_HOME/hub/checkpoints/<file>`); or the user's own file, `--teacher-ckpt FILE`. A run never calls the
  network: timm's hub retries for ~46 s when offline; here a missing file is one line (exit 2) naming the exact
  path to put it at, `--teacher-ckpt`, and `kdbench teachers download NAME`, the one command that downloads
  (:func:`download_weights`, asked for explicitly).
- **How they load.** The file is read by kdbench's safe loader (plain tensors only, like every weight file here),
  then handed to timm as `pretrained_cfg_overlay=dict(state_dict=...)` with `pretrained=True`: timm's own
  pretrained loading (the architecture's checkpoint filter, a strict load) without timm opening files itself.
- **Identity.** The run config holds the name with its tag (`teacher`) and the weights' sha256
  (`teacher_ckpt_sha256`), so the run id changes with the weights. A class-count, channel or input-size mismatch
  with the dataset is one line, exit 2 (a pretrained head is never replaced: fine-tune first).
- **Accuracy.** The teacher's top-1/top-5 on the run's evaluation split are measured before distilling and kept in
  a zoo card of its own kind (`<zoo>/<dataset>/<name.tag>/pretrained-<sha12>-<digest>/card.json`: source
  "timm pretrained", tag, hf_hub_id, sha256, size, the measured and the published accuracy; no weights: they stay
  where they were found), reused by later runs of the same weights on the same data. A teacher more than
  :data:`FAR_BELOW_POINTS` below its published top-1 is one warning line (wrong labels, wrong transform).
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from kdbench.core import distributed
from kdbench.core.environment import environment
from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.safe_load import load_plain_weights
from kdbench.core.storage import atomic_write_json, sha256_file
from kdbench.data.loaders import make_eval_loader
from kdbench.data.registry import DataSplits
from kdbench.models.state_dicts import unwrap_state_dict
from kdbench.models.zoo import count_parameters
from kdbench.spec.config import content_hash
from kdbench.teachers.zoo_files import BadZooFile, read_card, regular_source, user_file_sha256
from kdbench.train.evaluate import evaluate

SOURCE = "timm pretrained"
PRETRAINED_RECIPE = "pretrained"  # the `recipe` of a pretrained teacher's zoo card (it was trained elsewhere)
CARD = "card.json"
# A measured top-1 this many points below the published one is worth a line: a wrong label order (RepDistiller's
# ImageNet val labels cost about a point), another evaluation transform or normalisation, or other weights.
FAR_BELOW_POINTS = 2.0
# timm prefers the safetensors file of a Hugging Face repo, then the pickle (timm.models._hub).
HF_FILENAMES = ("model.safetensors", "pytorch_model.bin")

# Published ImageNet-1k top-1/top-5 (single 224 centre crop) of weights whose numbers timm's pretrained_cfg does not
# carry: torchvision's documented accuracies of its V1 weights, which timm's `tv_in1k` tags are.
PUBLISHED_ACCURACY: dict[str, tuple[float, float]] = {
    "resnet18.tv_in1k": (69.758, 89.078),
    "resnet34.tv_in1k": (73.314, 91.420),
    "resnet50.tv_in1k": (76.130, 92.862),
    "resnet101.tv_in1k": (77.374, 93.546),
    "resnet152.tv_in1k": (78.312, 94.046),
}


def pretrained_names(pattern: str = "") -> list[str]:
    """timm's pretrained names (`arch.tag`) matching the wildcard `pattern` (all when empty)."""
    return list(timm.list_pretrained(pattern or ""))


@functools.cache
def _pretrained_set() -> frozenset[str]:
    return frozenset(timm.list_pretrained())


def is_pretrained_name(name: str | None) -> bool:
    """Whether `name` asks for timm's pretrained weights: an architecture with a tag (`resnet34.tv_in1k`). A tag timm
    does not have is a UserError listing the architecture's tags (timm itself would silently build it untrained)."""
    if not name or "." not in name:
        return False
    if name in _pretrained_set():
        return True
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        return False  # not timm's: the caller's unknown-architecture message names it
    tags = pretrained_names(f"{arch}.*")
    listed = ", ".join(tags[:12]) + (f" (+{len(tags) - 12} more)" if len(tags) > 12 else "")
    raise UserError(f"--teacher {name}: timm has no pretrained weights tagged '{name.partition('.')[2]}' for {arch}; "
                    f"its pretrained tags: {listed or 'none'} (`kdbench teachers list --pretrained {arch}*`)")


def pretrained_cfg(name: str) -> dict[str, Any]:
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"--teacher {name}: timm has no pretrained config for it")
    return cfg.to_dict()


def published_accuracy(name: str) -> tuple[float, float] | None:
    """Published ImageNet top-1/top-5 of timm weights `name` where known (:data:`PUBLISHED_ACCURACY`)."""
    return PUBLISHED_ACCURACY.get(name)


# ---------------------------------------------------------------------------------------------------------------
# Finding the weights, offline


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache folder, by huggingface_hub's own rules, read now (not at import)."""
    if os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ.get("HF_HUB_CACHE") or os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def _hf_repo(cfg: dict[str, Any]) -> tuple[str, str | None] | None:
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None


def _torch_hub_file(cfg: dict[str, Any]) -> Path | None:
    url = cfg.get("url")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0]) if url else None


def cached_weights(name: str) -> Path | None:
    """The file of timm weights `name` already on this machine (Hugging Face cache, then torch's hub cache), else
    None. Reads the caches only: no network."""
    from huggingface_hub import try_to_load_from_cache

    cfg = pretrained_cfg(name)
    repo = _hf_repo(cfg)
    if repo is not None:
        names = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_FILENAMES
        for filename in names:
            found = try_to_load_from_cache(repo[0], filename, cache_dir=hf_hub_cache(), revision=repo[1])
            if isinstance(found, str) and Path(found).is_file():
                return Path(found)
    local = _torch_hub_file(cfg)
    return local if local is not None and local.is_file() else None


def where_to_put(name: str) -> str:
    """Where a run looks for weights `name`, in words: the exact cache path to put the file at."""
    cfg = pretrained_cfg(name)
    repo = _hf_repo(cfg)
    if repo is not None:
        folder = hf_hub_cache() / f"models--{repo[0].replace('/', '--')}"
        filename = cfg.get("hf_hub_filename") or HF_FILENAMES[0]
        return (f"{folder}/snapshots/REVISION/{filename} with {folder}/refs/{repo[1] or 'main'} holding REVISION "
                f"(the Hugging Face cache of {repo[0]})")
    local = _torch_hub_file(cfg)
    return str(local) if local is not None else "nowhere (timm lists no file for them)"


@dataclass(frozen=True)
class PretrainedWeights:
    """Weights `name` (arch.tag) found on this machine: their file, its sha256 and size, where it was found."""

    name: str
    path: Path
    sha256: str
    size: int
    origin: str  # "cache" (Hugging Face or torch hub) | "file" (--teacher-ckpt)

    @property
    def arch(self) -> str:
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        return self.name.partition(".")[2]


@functools.lru_cache(maxsize=8)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    # Resolving a run and running it both need the digest: hashed once per file version in a process.
    return sha256_file(path)


def find_weights(name: str, file: str | Path | None = None, sha256: str | None = None) -> PretrainedWeights:
    """Weights `name` from the user's `file` (`--teacher-ckpt`; `sha256` when already hashed) or from the caches;
    a one-line UserError saying where to put them when they are not on this machine. Never calls the network."""
    cfg = pretrained_cfg(name)
    if cfg.get("custom_load"):
        raise UserError(f"--teacher {name}: timm loads these weights with custom code (not a state dict); "
                        "kdbench takes state-dict weights only: choose another tag")
    if file is not None:
        path = Path(file).expanduser()
        digest = sha256 or user_file_sha256(path, "--teacher-ckpt")
        return PretrainedWeights(name, path, digest, path.stat().st_size, "file")
    path = cached_weights(name)
    if path is None:
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes",
                                                                                               "on") else ""
        raise UserError(f"--teacher {name}: its pretrained weights are not on this machine{offline}, and a run "
                        f"never downloads: put the file at {where_to_put(name)}; or pass it with --teacher-ckpt "
                        f"PATH; or download it once with `kdbench teachers download {name}`")
    regular_source(path, f"--teacher {name}: cached file")
    stat = path.stat()
    return PretrainedWeights(name, path, _sha256(path, stat.st_size, stat.st_mtime_ns), stat.st_size, "cache")


def download_weights(name: str) -> Path:
    """Download weights `name` into the Hugging Face cache (what `kdbench teachers download` asks for explicitly):
    the file timm would load. A one-line UserError when offline or the hub refuses."""
    from huggingface_hub import hf_hub_download

    cfg = pretrained_cfg(name)
    repo = _hf_repo(cfg)
    if repo is None:
        raise UserError(f"{name}: timm has these weights only at {cfg.get('url')}; download that file to "
                        f"{where_to_put(name)}")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        raise UserError(f"{name}: HF_HUB_OFFLINE is set: unset it to download, or put the file at "
                        f"{where_to_put(name)}")
    errors = []
    for filename in (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else HF_FILENAMES:
        try:
            return Path(hf_hub_download(repo[0], filename, revision=repo[1], cache_dir=hf_hub_cache()))
        except Exception as e:  # noqa: BLE001 - offline, not found, refused: each is one line for the user
            errors.append(f"{filename}: {(str(e).splitlines() or [type(e).__name__])[0][:160]}")
    raise UserError(f"{name}: could not download it from the Hugging Face hub ({'; '.join(errors)})")


# ---------------------------------------------------------------------------------------------------------------
# Building and checking the teacher


def check_fits_dataset(name: str, cfg: dict[str, Any], data: DataSplits, dataset: str) -> None:
    """A pretrained teacher sees the images and predicts the classes it was trained on: another class count,
    channel count or input size than the dataset's is one line (exit 2)."""
    classes = int(cfg.get("num_classes") or 0)
    if classes != data.num_classes:
        raise UserError(f"--teacher {name} predicts {classes} classes, dataset {dataset} has {data.num_classes}: a "
                        "pretrained head is not replaced here; fine-tune the model on this dataset first and pass "
                        f"its weights with --teacher {name.partition('.')[0]} --teacher-ckpt FILE")
    chans, *size = cfg.get("input_size") or (3, 224, 224)
    sizes = {size[-1], *((cfg["test_input_size"][-1],) if cfg.get("test_input_size") else ())}
    if chans != data.in_chans or data.image_size not in sizes:
        trained = " or ".join(f"{s}×{s}" for s in sorted(sizes))
        raise UserError(f"--teacher {name} takes {chans}-channel {trained} images (timm's pretrained_cfg), dataset "
                        f"{dataset} gives {data.in_chans}-channel {data.image_size}×{data.image_size}: set the "
                        "dataset's image size to the teacher's (e.g. --set data.image_size=...) or pick another tag")


def build_pretrained(weights: PretrainedWeights, options: dict[str, Any] | None = None) -> nn.Module:
    """timm's model `weights.name` with the weights of `weights.path`, loaded by timm's pretrained machinery from
    the state dict kdbench's safe loader read (timm never opens the file, never the network)."""
    state = unwrap_state_dict(load_plain_weights(weights.path), weights.path)
    try:
        model = timm.create_model(weights.name, pretrained=True, pretrained_cfg_overlay={"state_dict": state},
                                  **(options or {}))
    except TypeError as e:  # an option the architecture does not take
        raise UserError(f"teacher {weights.name} rejected its options {sorted(options or {})}: {e}") from None
    except RuntimeError as e:  # a strict load that failed: the file is not these weights
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{weights.path} does not fit {weights.name}: {first[:300]}") from None
    return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# The zoo card: the weights' facts and their measured accuracy on a dataset's evaluation split


def card_key(weights: PretrainedWeights, dataset: str, data_params: dict[str, Any],
             options: dict[str, Any]) -> dict[str, Any]:
    """What the measured accuracy depends on: the weights, their build options and the evaluation data."""
    return {"source": SOURCE, "name": weights.name, "sha256": weights.sha256, "dataset": dataset,
            "data_params": data_params, "model_options": options}


def card_dir(zoo_root: Path, key: dict[str, Any]) -> Path:
    return zoo_root / key["dataset"] / key["name"] / f"{PRETRAINED_RECIPE}-{key['sha256'][:12]}-{content_hash(key, 10)}"


def _stored_card(zoo_root: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    path = card_dir(zoo_root, key) / CARD
    if not path.is_file():
        return None
    try:
        card = read_card(zoo_root, path)
    except BadZooFile:
        return None  # measured again and written anew
    return card if card.get("key") == key and card.get("sha256") == key["sha256"] else None  # else measured anew


def load_pretrained_teacher(
    weights: PretrainedWeights, dataset: str, data_params: dict[str, Any], data: DataSplits, device: torch.device,
    *, options: dict[str, Any] | None = None, zoo_dir: str | Path | None = None, eval_batch_size: int = 256,
    reporter: Reporter = NULL_REPORTER,
) -> tuple[nn.Module, dict[str, Any]]:
    """The pretrained teacher and its card: checked against the dataset, built, its accuracy on the dataset's
    evaluation split measured (or read from its zoo card for these very weights and data), the card stored."""
    from kdbench.teachers.zoo import default_zoo_dir

    options = dict(options or {})
    cfg = pretrained_cfg(weights.name)
    check_fits_dataset(weights.name, cfg, data, dataset)
    _warn_if_other_normalisation(weights.name, cfg, data, dataset, reporter)
    model = build_pretrained(weights, options)
    root = Path(zoo_dir).expanduser() if zoo_dir is not None else default_zoo_dir()
    key = card_key(weights, dataset, data_params, options)
    card = _stored_card(root, key)
    if card is not None:
        reporter.log(f"teacher {weights.name} ({SOURCE}, {weights.path}): top-1 {card['top1']:.2f}% on {dataset}, "
                     f"measured before ({card_dir(root, key)})")
    else:
        t0 = time.perf_counter()
        ev = evaluate(model.to(device), make_eval_loader(data.test, eval_batch_size, 0, device), device)
        model = model.to("cpu")
        card = _new_card(key, weights, cfg, model, ev.top1, ev.top5, len(data.test), time.perf_counter() - t0, device)
        reporter.log(f"teacher {weights.name} ({SOURCE}, {weights.path}): top-1 {ev.top1:.2f}% top-5 "
                     f"{ev.top5:.2f}% on {dataset}'s evaluation split")
        _store_card(root, key, card, reporter)
    _warn_if_far_below(card, dataset, reporter)
    return model, {**card, "path": str(weights.path), "cached": True}


def _new_card(key: dict[str, Any], weights: PretrainedWeights, cfg: dict[str, Any], model: nn.Module, top1: float,
              top5: float, num_test: int, eval_s: float, device: torch.device) -> dict[str, Any]:
    published = published_accuracy(weights.name)
    return {
        "key": key, "arch": weights.name, "dataset": key["dataset"], "recipe": PRETRAINED_RECIPE, "seed": 0,
        "sha256": weights.sha256, "size": weights.size, "params": count_parameters(model),
        "top1": top1, "top5": top5, "train_s": 0.0, "source": SOURCE,
        "pretrained": {
            "name": weights.name, "architecture": weights.arch, "tag": weights.tag,
            "hf_hub_id": cfg.get("hf_hub_id"), "url": cfg.get("url") or None, "weights_file": str(weights.path),
            "found_in": weights.origin, "num_classes": cfg.get("num_classes"), "input_size": cfg.get("input_size"),
            "published_top1": published[0] if published else None,
            "published_top5": published[1] if published else None,
            "evaluated_on": {"split": "test", "num_images": num_test, "eval_s": eval_s},
        },
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(device),
    }


def _store_card(root: Path, key: dict[str, Any], card: dict[str, Any], reporter: Reporter) -> None:
    """Write the card (rank 0 of a data-parallel run); a zoo that cannot be written costs the cache, not the run."""
    if not distributed.is_main():
        return
    folder = card_dir(root, key)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_json(folder / CARD, {**card, "path": str(folder)})
    except OSError as e:
        reporter.log(f"warning: teacher {key['name']}: its zoo card could not be written at {folder} "
                     f"({e.strerror or e}); the run goes on, the accuracy is measured again next time")


def _warn_if_other_normalisation(name: str, cfg: dict[str, Any], data: DataSplits, dataset: str,
                                 reporter: Reporter) -> None:
    """The teacher and the student see the same tensors: normalised otherwise than the teacher was trained on, the
    teacher is handicapped (a few points on ImageNet). One warning line; a dataset that states no mean/std says
    nothing."""
    if not data.mean or not cfg.get("mean"):
        return
    theirs = (tuple(cfg["mean"]), tuple(cfg.get("std") or ()))
    ours = (tuple(data.mean), tuple(data.std))
    if any(len(a) != len(b) or any(abs(x - y) > 1e-3 for x, y in zip(a, b, strict=False))
           for a, b in zip(theirs, ours, strict=True)):
        shown = ",".join
        reporter.log(f"warning: teacher {name} was trained on inputs normalised with mean "
                     f"{shown(map(str, theirs[0]))} std {shown(map(str, theirs[1]))}, dataset {dataset} normalises "
                     f"with mean {shown(map(str, ours[0]))} std {shown(map(str, ours[1]))}: set the dataset's "
                     "mean/std to the teacher's where it has them (--set data.mean=... --set data.std=...)")


def _warn_if_far_below(card: dict[str, Any], dataset: str, reporter: Reporter) -> None:
    published = (card.get("pretrained") or {}).get("published_top1")
    if isinstance(published, int | float) and card["top1"] < published - FAR_BELOW_POINTS:
        reporter.log(f"warning: teacher {card['arch']} scores top-1 {card['top1']:.2f}% on {dataset}, "
                     f"{published - card['top1']:.1f} points below its published {published:.2f}%: check the "
                     "evaluation split's labels (class i must be wnid i), its transform and normalisation")
