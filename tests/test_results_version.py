"""The RESULTS_VERSION canary: the committed canary records (results/reference/canary, made by
`bash results/canary.sh`) must regenerate to the same numbers, bit for bit, while
kdbench.store.fingerprint.RESULTS_VERSION
stays the same. A change to the harness that alters numbers must raise it (and regenerate the references).

Bit-for-bit holds only where the same kernels compute the same floats: on another CPU (its ISA level, MKL's
branch) or another torch build the last bits differ from the first epochs on, with no change to the code. So when
the numbers differ the test compares the CPU identity the reference records carry
(kdbench.core.cpu_numerics.cpu_identity)
with that of its own rerun: the same → the code changed the numbers (raise the version); another CPU or torch →
skipped, naming both, because here the canary cannot tell a code change from the machine. Canaries made with
`--portable` (results/canary.sh) carry no CPU in their identity, so they check the code on any x86 CPU."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from kdbench.core.cpu_numerics import cpu_identity
from kdbench.execute.runner import execute
from kdbench.spec.config import RunConfig
from kdbench.spec.paths import Paths
from kdbench.store.fingerprint import RESULTS_VERSION, code_fingerprint
from kdbench.store.records import RunStore

# KDBENCH_CANARY: canaries made elsewhere (bash results/canary.sh DIR), e.g. on this machine from an older commit.
CANARY = Path(os.environ.get("KDBENCH_CANARY") or
              Path(__file__).resolve().parents[1] / "results" / "reference" / "canary")
NUMBERS_CHANGED = ("numbers changed: raise kdbench.store.fingerprint.RESULTS_VERSION and regenerate results/reference "
                   "(bash results/regenerate.sh)")
METRICS = ("top1_last", "top1_best", "top5_last", "top5_best", "best_epoch", "epochs")
EPOCH_FIELDS = ("losses", "lr", "top1", "top5", "eval_loss", "train_top1")
TEACHER_METRICS = ("top1", "top5", "top1_best", "sha256")
# A portable run must start in a process that has not computed with torch yet (configure_portable): this one has.
_RERUN = ("import json, sys\nfrom kdbench.spec.config import RunConfig\n"
          "from kdbench.execute.runner import execute\n"
          "from kdbench.spec.paths import Paths\n"
          "config, results, zoo, data = json.loads(sys.argv[1]), *sys.argv[2:]\n"
          "print(execute(RunConfig.from_dict(config), Paths(results, zoo, data), device='cpu')['run_id'])")


def _epochs(path: Path) -> list[dict]:
    return [{k: e.get(k) for k in EPOCH_FIELDS} for e in map(json.loads, path.read_text().splitlines())]


def _differences(ref: dict, ours: dict, ref_store: RunStore, our_store: RunStore) -> list[str]:
    out = [f"{ref['method']} {k}: {ref['metrics'][k]!r} → {ours['metrics'][k]!r}"
           for k in METRICS if ref["metrics"][k] != ours["metrics"][k]]
    out += [f"{ref['method']} teacher {k}: {(ref['teacher_metrics'] or {}).get(k)!r} → "
            f"{(ours['teacher_metrics'] or {}).get(k)!r}"
            for k in TEACHER_METRICS if (ref["teacher_metrics"] or {}).get(k) != (ours["teacher_metrics"] or {}).get(k)]
    theirs, mine = _epochs(ref_store.metrics_path(ref["run_id"])), _epochs(our_store.metrics_path(ours["run_id"]))
    out += [f"{ref['method']} epoch {i}: {a} → {b}" for i, (a, b) in enumerate(zip(theirs, mine, strict=True), 1)
            if a != b]
    return out


def _identity_text(identity: dict[str, Any] | None) -> str:
    return "unknown (made before records named their CPU)" if identity is None else \
        ", ".join(f"{k} {v}" for k, v in identity.items())


def verdict(ref_identity: dict[str, Any] | None, our_identity: dict[str, Any] | None) -> tuple[str, str]:
    """("fail" | "skip", message) for canaries whose numbers differ: a failure says what to do, a skip why this
    machine cannot check them. Public for tests/test_environment_cpu.py."""
    here = f"this rerun: {_identity_text(our_identity)}"
    if ref_identity == our_identity:
        return "fail", f"{NUMBERS_CHANGED}\n(on the CPU and torch that made the canaries: {here})"
    regenerate = ("to check the code on this machine, make canaries here from the commit that last raised "
                  "RESULTS_VERSION (bash results/canary.sh DIR) and rerun this test on your change with "
                  "KDBENCH_CANARY=DIR")
    if ref_identity is None:
        return "fail", (f"numbers differ from the canaries, which do not say which CPU made them. If it was this "
                        f"machine's kind of CPU, the code changed the numbers: raise "
                        f"kdbench.store.fingerprint.RESULTS_VERSION and regenerate results/reference (bash "
                        f"results/regenerate.sh). If not, another CPU alone explains it (not a code change): "
                        f"regenerate the canaries with bash results/canary.sh, which records the CPU.\n{here}")
    return "skip", (f"canaries made on another CPU or torch build: the last float bits differ there without any "
                    f"code change, so this machine cannot check RESULTS_VERSION (do not raise it for this); "
                    f"{regenerate}.\ncanaries: {_identity_text(ref_identity)}\n{here}")


def _rerun(ref: dict, ours: RunStore, tmp_path: Path) -> dict:
    # The canary checks the numbers, not the code's identity: rerun the config under the current fingerprint.
    config = dataclasses.replace(RunConfig.from_dict(ref["config"]),
                                 code=code_fingerprint(ref["method"])["fingerprint"])
    paths = Paths(ours.root, tmp_path / "zoo", tmp_path / "data")
    if not config.portable:
        return execute(config, paths, device="cpu")
    folders = [str(p) for p in (paths.results_dir, paths.zoo_dir, paths.data_root)]
    done = subprocess.run([sys.executable, "-c", _RERUN, json.dumps(config.to_dict()), *folders],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    record = ours.load(done.stdout.split()[-1])
    assert record is not None and record["status"] == "completed"
    return record


def test_canary_records_regenerate_identically_while_results_version_stays(tmp_path: Path) -> None:
    reference = RunStore(CANARY)
    records = sorted(reference.iter_records(), key=lambda r: r["method"])
    assert [r["method"] for r in records] == ["ce", "kd"] and all(r["status"] == "completed" for r in records)
    versions = sorted({r["code"]["results_version"] for r in records})
    if versions != [RESULTS_VERSION]:
        pytest.fail(f"reference records are from results version {versions[0]}; regenerate them "
                    "(bash results/regenerate.sh)")
    assert torch.get_num_threads() == 1 and all(r["threads"]["torch_threads"] == 1 for r in records)

    ours = RunStore(tmp_path / "results")
    differences, identities = [], set()
    for ref in records:
        record = _rerun(ref, ours, tmp_path)
        differences += _differences(ref, record, reference, ours)
        identities.add(json.dumps([cpu_identity(ref["environment"]), cpu_identity(record["environment"])]))
    if differences:
        outcome, message = verdict(*json.loads(sorted(identities)[0]))
        message += "\n" + "\n".join(differences[:10])
        pytest.skip(message) if outcome == "skip" else pytest.fail(message)


def test_differing_numbers_blame_the_code_only_on_the_cpu_that_made_the_canaries():
    here = {"model": "Intel Xeon 6 207 2", "capability": "AVX512", "mkl_branch": "OFF", "torch_build": "2.14.1"}
    elsewhere = {**here, "model": "AMD EPYC 25 17 1", "capability": "AVX2"}
    outcome, message = verdict(here, dict(here))
    assert outcome == "fail" and message.startswith(NUMBERS_CHANGED)
    outcome, message = verdict(elsewhere, here)
    assert outcome == "skip" and "another CPU" in message and "do not raise it" in message
    assert "AMD EPYC" in message and "Intel Xeon" in message  # both named
    outcome, message = verdict(None, here)  # canaries from before records named their CPU
    assert outcome == "fail" and "do not say which CPU" in message and "another CPU alone explains it" in message
