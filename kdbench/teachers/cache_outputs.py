"""What the teacher-output cache computes and stores when a batch misses: every output the teacher's tap can give,
not only the ones the asking method takes (issue #35, point 4).

A sweep of kd, dkd, pkt and at on one teacher and seed asks for logits, logits, logits + embedding and logits +
two stage maps. When each run stored only what it asked for, the teacher was paid in three of the four runs. So
a batch the cache does not hold is computed once through a tap on every `feature_info` stage and the embedding
(kdbench.models.taps.IntermediateTap, the methods' tap: its logits are the plain teacher's bits), and the
run stores the logits, the embedding and every stage map that fits the cap (:func:`choose_stored`): whichever
method of the sweep comes next reads its taps instead of running the teacher.

Names: "logits", "embedding" and "stage<i>" with i the non-negative `feature_info` index (a method's stage -1 is
the same entry as stage n-1): IntermediateTap's outputs, stage maps N × C × H × W whatever the family. A tap of
another class (a model-specific tap that reshapes its outputs) is run as it is and its outputs are named with its
class name in front, so that they never meet an IntermediateTap entry of the same stage index with other
contents; a tap whose stage ids are strings names its own outputs (kdbench.models.preact.PreactTap's
"stage2.preact": the pre-ReLU map, never the post-ReLU "stage2"), its embedding being the shared one.
A plain FeatureTap (forward hooks: a ViT's or Mixer's tokens, Swin's
channels-last maps as the modules return them) shares the entries only on a model IntermediateTap reads by the
same hooks (no `forward_intermediates`: kdbench's CIFAR networks, the GNN); elsewhere its outputs are named
"FeatureTap-stage<i>", so a token sequence whose shape happens to read as C × H × W is never served as a map.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from kdbench.models.features import Features, FeatureTap, num_stages, stage_modules
from kdbench.models.preact import PreactTap
from kdbench.models.taps import HOOKS, IntermediateTap, tap_mode

# What a method taps the teacher with: IntermediateTap, a plain FeatureTap, or a tap class of its own (PreactTap).
Tap = IntermediateTap | FeatureTap


def stage_count(teacher: nn.Module) -> int:
    """The teacher's `feature_info` stages (0 for a model without any)."""
    try:
        return num_stages(teacher)
    except ValueError:
        return 0


def _shares_entries(tap: Tap) -> bool:
    """Whether `tap`'s outputs are the full tap's (IntermediateTap's) bits and layout, so they share its entries."""
    if type(tap) is IntermediateTap:
        return True
    return type(tap) is FeatureTap and tap_mode(tap.model) == HOOKS


def _stage_name(tap: Tap, sid: int | str, count: int) -> str:
    if _shares_entries(tap):
        return f"stage{sid % count}" if count else f"stage{sid}"
    if isinstance(sid, str):  # a tap that names its own outputs (PreactTap's "2.preact"): never an int stage's name
        return f"stage{sid}"
    return f"{type(tap).__name__}-stage{sid}"


def _embedding_name(tap: Tap) -> str:
    # PreactTap's embedding is an IntermediateTap's on the same forward: the shared entry's bits.
    shared = _shares_entries(tap) or type(tap) is PreactTap
    return "embedding" if shared else f"{type(tap).__name__}-embedding"


def output_names(tap: Tap | None, count: int = 0) -> list[str]:
    """The cache names of what a tap (None: logits only) returns; `count`: the teacher's stage count."""
    if tap is None:
        return ["logits"]
    return ["logits", *(_stage_name(tap, sid, count) for sid in tap.stage_ids),
            *([_embedding_name(tap)] if tap.want_embedding else [])]


def _full_tap(teacher: nn.Module, count: int) -> IntermediateTap | None:
    """An IntermediateTap on every stage and the embedding of `teacher`; without the embedding when it has no
    classifier to read it from; None when a stage module its `feature_info` names is not in a model read by hooks.
    Checked before the tap is built: a hooks tap that fails half-way leaves the hooks it had registered."""
    modules = dict(teacher.named_modules())
    if count and tap_mode(teacher) == HOOKS and any(name not in modules for name, _ in stage_modules(teacher)):
        return None
    get_classifier = getattr(teacher, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    # A pair of classifiers (a distilled DeiT's) has an embedding too: IntermediateTap reads its pre-logits.
    embedding = head is not None and not isinstance(head, nn.Identity)
    if not (count or embedding):
        return None
    return IntermediateTap(teacher, stages=range(count), embedding=embedding)


def compute_outputs(teacher: nn.Module, tap: Tap | None, images: torch.Tensor, count: int,
                    ) -> dict[str, torch.Tensor]:
    """One forward of the teacher on `images`, every output it gives by cache name: for an IntermediateTap (or
    None, or a FeatureTap that shares its entries) all the stages and the embedding; for a tap of another class
    (or a teacher no full tap fits) what the asking tap gives. The full tap's hooks are removed after the call:
    they neither hold the batch's maps nor stay."""
    full = _full_tap(teacher, count) if tap is None or _shares_entries(tap) else None
    if full is None:
        if tap is None:
            return {"logits": teacher(images)}
        f = tap(images)
        return {"logits": f.logits, **{_stage_name(tap, i, count): v for i, v in f.stages.items()},
                **({_embedding_name(tap): f.embedding} if f.embedding is not None else {})}
    try:
        f = full(images)
    finally:
        full.remove()
    # A stage module that returns something else than one tensor (a tuple) cannot be an entry: left out.
    stages = {f"stage{i}": v for i, v in f.stages.items() if isinstance(v, torch.Tensor)}
    return {"logits": f.logits, **stages, **({"embedding": f.embedding} if f.embedding is not None else {})}


def as_features(outputs: dict[str, torch.Tensor], tap: Tap | None, count: int) -> Features:
    """What `tap` would have returned (its own stage ids as keys), from outputs by cache name."""
    if tap is None:
        return Features(outputs["logits"], {}, None)
    return Features(outputs["logits"], {sid: outputs[_stage_name(tap, sid, count)] for sid in tap.stage_ids},
                    outputs[_embedding_name(tap)] if tap.want_embedding else None)


def row_bytes(value: torch.Tensor, cache_dtype: str) -> int:
    """The bytes one sample's row of `value` takes in an entry of the cache's dtype."""
    size = 2 if cache_dtype == "float16" and value.is_floating_point() else value.element_size()
    return value[0].numel() * size


def feature_memory() -> int:
    """The memory one epoch's feature entries may take: a quarter of what is available now. An epoch's entries
    are held in memory until the epoch ends, so a short run with a large cap (1 epoch, 20 GB) must not fill
    the machine's memory with stage maps it was never asked for. (What is stored never changes a number.)"""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):  # not a POSIX system that says
        return 1 << 62


def choose_stored(outputs: dict[str, torch.Tensor], rows: int, cap: int, cache_dtype: str) -> list[str]:
    """The outputs a computing run stores: the logits always, then the feature outputs while their entries for
    the whole run (`rows` = training samples × epochs) fit the cap together — the embedding first (the smallest
    and the one most methods read), then the stage maps smallest first, so that as many methods as possible hit.
    The choice depends on the teacher, the data and the cap only, never on the method that happens to compute."""
    def priority(name: str) -> tuple[bool, int, str]:
        return (not name.endswith("embedding"), row_bytes(outputs[name], cache_dtype), name)

    chosen, budget = ["logits"], cap
    for name in sorted((n for n in outputs if n != "logits"), key=priority):
        need = row_bytes(outputs[name], cache_dtype) * rows
        if need <= budget:
            chosen.append(name)
            budget -= need
    return chosen
