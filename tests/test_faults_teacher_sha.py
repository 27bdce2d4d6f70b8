"""The teacher-output cache is keyed by the sha256 of the weights the run loaded, never by a number a card on disk
claims. Before, a pretrained teacher's zoo card (kdbench.teachers.pretrained: its measured accuracy, reused when its
key matches) was trusted for the `sha256` the run records and keys its cache by: a card whose key names teacher B
but whose `sha256` is teacher A's (tampered, or a colleague's edited copy) made a run of B read A's cached outputs,
and its record name A's weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from deadline import deadline
from safetensors.torch import save_file
from test_pretrained_teachers import TINY_RUN, _dirs, _state, offline_hf  # noqa: F401 (a fixture)

from kdbench.core.storage import sha256_file


def _run(in_process, dirs, weights: Path, *args: str) -> dict:
    with deadline(240):
        result = in_process("run", *TINY_RUN, *_dirs(dirs), "--teacher-ckpt", str(weights), "--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


@pytest.mark.usefixtures("offline_hf")  # an empty, offline Hugging Face home
def test_a_card_claiming_another_teachers_sha256_never_serves_that_teachers_cached_outputs(dirs, in_process,
                                                                                        tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_file(_state(11), str(a))  # weights no other test uses: the session shares one teacher-output cache
    save_file(_state(12), str(b))
    sha_a, sha_b = sha256_file(a), sha256_file(b)
    _run(in_process, dirs, a)  # A's outputs now in the cache
    _run(in_process, dirs, b, "--teacher-cache", "off")  # B's card in the zoo, nothing of B's in the cache
    card_path = next(dirs["zoo"].glob(f"*/*/pretrained-{sha_b[:12]}-*/card.json"))
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "sha256": sha_a}))  # B's key, A's digest

    record = _run(in_process, dirs, b, "--force")
    assert record["config"]["teacher_ckpt_sha256"] == sha_b
    assert record["teacher_metrics"]["sha256"] == sha_b  # the weights loaded, not the card's claim
    assert record["teacher_cache"]["hits"] == 0 and record["teacher_cache"]["misses"] > 0  # none of A's outputs
