"""GPU validation: the harness's CUDA paths run end to end, in one table.

    bash benchmarks/gpu_check.sh                  # a CUDA machine with 1 GPU or more; no internet needed
    bash benchmarks/gpu_check.sh --cpu-dry-run    # the same steps on CPU at toy sizes (CI: tests/test_gpu_check.py)

Checks, each a fresh process started the way a user starts it (`python -m kdbench run ... --json`):

  ce, kd, crd, cnn2gnn   one run each with --device cuda --amp --channels-last (fp16 + GradScaler); the record must
                         be completed, on the device, with AMP and channels_last in its config, metrics finite
  teacher cache          kd again into another results folder (the same run id): every teacher batch read from
                         the cache the kd run filled on the device (hits = kd's misses, 0 misses)
  ddp                    kd with --nproc <all GPUs> --sync-bn: NCCL, SyncBatchNorm (skipped with 1 GPU)
  images/s               the ce run's training images/s (epochs after the first, from its metrics.jsonl) against a
                         bare hand-written loop (same data loader, model, optimizer, AMP, channels_last, kernels)

Data: a CIFAR-100 fixture in the official on-disk format (kdbench/data/fixtures.py) in a temporary folder, read
by torchvision's reader with its md5 check on: the processes started here get the fixture's md5s through
tests/fixture_site/sitecustomize.py (PYTHONPATH + KDBENCH_TEST_CIFAR_MD5), as the SLURM smoke test's jobs do.
Pixels are noise: the check is that everything runs on the device, not what it learns. Records, zoo, teacher
cache and data all live under the temporary folder (--workdir keeps them).

Budget: at most 8 minutes on one H100 (80 GB). No check starts after --budget-s (default 450 s, leaving the
interpreter's start and the fixture's writing inside 8 minutes) and each is killed when that budget is spent, so
the script ends in time whatever hangs. Expected about 2-3 minutes: 7 processes of ~10 s start-up (torch, CUDA
context, data), ~5 s of training each, one teacher epoch. GPU sizes: 10,000 training / 1,000 test images at
32 px, teacher cifar_resnet32x4 (1 epoch, trained into the temporary zoo by the kd check), student
cifar_resnet8x4 (gnn2 for cnn2gnn), 2 epochs at the CRD recipe's batch 64 (the ddp run: 64 per GPU).
Dry run (CPU: ~45 s of CPU time, 1.5-2.5 minutes on a busy 2-core machine): 64 / 8 images, cifar_resnet14 →
cifar_resnet8, batch 16, bfloat16 autocast (kdbench's CPU AMP), 2 gloo processes without SyncBN (torch's
SyncBatchNorm needs GPUs).

Statuses: ok, fail (exit code 1), skip (not applicable here), slow (images/s below 0.85 of the bare loop on a
GPU; reported, not a failure: a regression to look at, not a broken path).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Test-only start-up hook: the fixture's md5s as torchvision's expected checksums, in processes started here.
FIXTURE_SITE = REPO / "tests" / "fixture_site"


@dataclass(frozen=True)
class Profile:
    """Sizes and devices of one mode (GPU or CPU dry run)."""

    device: str  # "cuda" | "cpu"
    train_per_class: int
    test_per_class: int
    classes: int  # labelled classes of the CIFAR-100 fixture (the model still has 100 outputs)
    teacher: str
    student: str
    epochs: int
    teacher_epochs: int
    batch_size: int
    nproc: int  # ranks of the ddp check (1: skipped)
    sync_bn: bool
    budget_s: float
    check_timeout_s: float  # one process at most (also bounded by the budget left)
    min_ratio: float | None  # engine / bare-loop images/s below which the row says "slow" (None: not judged)

    @property
    def amp_dtype(self) -> str:
        return "fp16" if self.device == "cuda" else "bf16"  # kdbench.train.evaluate._autocast


def gpu_profile(gpus: int) -> Profile:
    return Profile(device="cuda", train_per_class=100, test_per_class=10, classes=100, teacher="cifar_resnet32x4",
                   student="cifar_resnet8x4", epochs=2, teacher_epochs=1, batch_size=64, nproc=gpus, sync_bn=True,
                   budget_s=450.0, check_timeout_s=240.0, min_ratio=0.85)


# CPU: 2 ranks with gloo (kdbench refuses --sync-bn on CPU); the images/s ratio is reported, not judged (shared
# CPUs make it noise).
DRY_PROFILE = Profile(device="cpu", train_per_class=8, test_per_class=1, classes=8, teacher="cifar_resnet14",
                      student="cifar_resnet8", epochs=2, teacher_epochs=1, batch_size=16, nproc=2, sync_bn=False,
                      budget_s=420.0, check_timeout_s=240.0, min_ratio=None)


@dataclass
class Row:
    check: str
    status: str  # ok | fail | skip | slow
    seconds: float
    figure: str
    log: str = ""  # the failing process's last lines, for stderr


class CheckFailed(Exception):
    """A check's expectation did not hold: the row says fail, with this message as its figure."""


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class Proc:
    """One process that exited 0: its stdout parsed as JSON, and its wall seconds (start-up included)."""

    output: Any
    seconds: float


def log_path(work: Path, check: str) -> Path:
    """Where a check's process writes its stderr (kept with --workdir)."""
    return work / "logs" / f"{check.replace(' ', '-').replace('/', '-')}.log"


def log_tail(work: Path, check: str, lines: int = 15) -> str:
    log = log_path(work, check)
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


@dataclass
class Session:
    profile: Profile
    work: Path
    deadline: float
    env: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def start(self, name: str, argv: list[str]) -> Proc:
        """Run `argv` with the fixture's environment, killed after check_timeout_s or when the budget is spent;
        stdout parsed as JSON. Raises CheckFailed on a non-zero exit, a timeout or no JSON."""
        timeout = min(self.profile.check_timeout_s, self.remaining())
        expect(timeout > 5, f"not started: the budget of {self.profile.budget_s:.0f} s is spent")
        log = log_path(self.work, name)
        log.parent.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        with open(log, "w") as err:
            try:
                # A new session: a timeout kills the whole group (the elastic launcher's ranks and loader workers).
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True, env=self.env,
                                        cwd=self.work, start_new_session=True)
                stdout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.communicate()
                raise CheckFailed(f"killed after {timeout:.0f} s (log: {log})") from None
        seconds = time.monotonic() - t0
        if proc.returncode != 0:
            raise CheckFailed(f"exit code {proc.returncode}: {last_line(log_tail(self.work, name))}")
        try:
            return Proc(json.loads(stdout), seconds)
        except json.JSONDecodeError:
            raise CheckFailed(f"no JSON on stdout: {last_line(log_tail(self.work, name))}") from None

    def kdbench_run(self, name: str, method: str, *extra: str, results: str = "results", teacher: bool = True,
                    student: bool = True, batch_size: int | None = None) -> tuple[dict[str, Any], float]:
        p = self.profile
        argv = [sys.executable, "-m", "kdbench", "run", "--method", method, "--dataset", "cifar100",
                "--data-root", str(self.work / "data"), "--zoo-dir", str(self.work / "zoo"),
                "--results-dir", str(self.work / results), "--cache-dir", str(self.work / "cache"),
                "--device", p.device, "--amp", "--channels-last", "--epochs", str(p.epochs),
                "--batch-size", str(batch_size or p.batch_size), "--json"]
        if teacher:
            argv += ["--teacher", p.teacher, "--teacher-epochs", str(p.teacher_epochs)]
        if student:
            argv += ["--student", p.student]
        proc = self.start(name, [*argv, *extra])
        record = proc.output
        self.records[name] = record
        return record, proc.seconds


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "(no output)"


def check_record(record: dict[str, Any], p: Profile) -> None:
    """What every run of this script must show: completed on the device, with AMP and channels_last."""
    expect(record.get("status") == "completed", f"status {record.get('status')}: {record.get('error', '')}"[:200])
    device = record["environment"]["device"]
    expect(device["type"] == p.device, f"ran on {device['type']}, not {p.device}")
    config = record["config"]
    expect(config.get("amp") is True and config.get("channels_last") is True,
           f"amp {config.get('amp')}, channels_last {config.get('channels_last')} in the config")
    m = record["metrics"]
    expect(all(math.isfinite(m[k]) for k in ("top1_last", "top5_last")), f"non-finite metrics {m}")


def train_images_per_s(record: dict[str, Any], results: Path) -> float:
    """Training images per second of a run: its training images over the training part of each epoch after the
    first (the first pays for cuDNN's and the allocator's warm-up), from its metrics.jsonl."""
    lines = (results / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in lines]
    timed = epochs[1:] or epochs
    return record["data"]["num_train"] / (sum(e["epoch_s"] for e in timed) / len(timed))


def device_figure(record: dict[str, Any], p: Profile) -> str:
    peak = (record.get("memory") or {}).get("cuda_peak_mb")
    return f"amp {p.amp_dtype}, channels_last" + (f", peak {peak:,.0f} MB" if peak is not None else "")


# --------------------------------------------------------------------------------------------------------------
# The checks: each returns (status, figure, seconds) or raises CheckFailed.


def check_ce(s: Session) -> tuple[str, str, float]:
    record, seconds = s.kdbench_run("ce", "ce", teacher=False)
    check_record(record, s.profile)
    rate = train_images_per_s(record, s.work / "results")
    return "ok", (f"{record['student']} top-1 {record['metrics']['top1_last']:.2f}, {rate:,.0f} img/s, "
                  f"{device_figure(record, s.profile)}"), seconds


def check_kd(s: Session) -> tuple[str, str, float]:
    record, seconds = s.kdbench_run("kd", "kd")
    check_record(record, s.profile)
    tm, tc = record["teacher_metrics"], record["teacher_cache"]
    expect(tc.get("mode") == "on" and tc["misses"] > 0 and tc["hits"] == 0,
           f"expected an empty cache filled on the device, got {tc}")
    made = "from the zoo" if tm.get("cached") else f"trained in {tm.get('train_s', 0):.1f} s"
    return "ok", (f"teacher {record['teacher']} {made}; {tc['misses']} batches into the cache; "
                  f"{device_figure(record, s.profile)}"), seconds


def check_teacher_cache(s: Session) -> tuple[str, str, float]:
    fill = s.records.get("kd")
    expect(fill is not None, "needs the kd check's run (it fills the cache)")
    record, seconds = s.kdbench_run("teacher cache", "kd", results="results-cache")
    check_record(record, s.profile)
    expect(record["run_id"] == fill["run_id"], "not the kd check's run id")
    tc = record["teacher_cache"]
    expect(tc.get("mode") == "on" and tc.get("misses") == 0 and tc.get("hits") == fill["teacher_cache"]["misses"],
           f"expected hits {fill['teacher_cache']['misses']} / misses 0 (the kd run's batches), got {tc}")
    t_fill, t_read = fill["timing"]["epoch_s_mean"], record["timing"]["epoch_s_mean"]
    same = record["metrics"]["top1_last"] == fill["metrics"]["top1_last"]
    return "ok", (f"hits {tc['hits']} / misses {tc['misses']} batches; epoch {t_fill:.2f} s filling, "
                  f"{t_read:.2f} s reading; same top-1 as kd: {'yes' if same else 'no'}"), seconds


def check_crd(s: Session) -> tuple[str, str, float]:
    record, seconds = s.kdbench_run("crd", "crd")
    check_record(record, s.profile)
    features = record["teacher_cache"].get("features")
    return "ok", (f"top-1 {record['metrics']['top1_last']:.2f}, teacher features {features}; "
                  f"{device_figure(record, s.profile)}"), seconds


def check_cnn2gnn(s: Session) -> tuple[str, str, float]:
    record, seconds = s.kdbench_run("cnn2gnn", "cnn2gnn", student=False)  # the method's student: gnn2
    check_record(record, s.profile)
    rate = train_images_per_s(record, s.work / "results")
    return "ok", (f"{record['student']} top-1 {record['metrics']['top1_last']:.2f}, {rate:,.0f} img/s, "
                  f"{device_figure(record, s.profile)}"), seconds


def check_ddp(s: Session) -> tuple[str, str, float]:
    p = s.profile
    if p.nproc < 2:
        return "skip", f"{p.nproc} GPU: data-parallel needs 2 or more", 0.0
    # GPU: the recipe's batch per GPU (a global batch of 64 × GPUs); CPU: the toy global batch, split in two.
    batch = p.batch_size * p.nproc if p.device == "cuda" else p.batch_size
    extra = ["--nproc", str(p.nproc), *(["--sync-bn"] if p.sync_bn else [])]
    record, seconds = s.kdbench_run("ddp", "kd", *extra, results="results-ddp", batch_size=batch)
    check_record(record, p)
    d = record.get("distributed") or {}
    backend = "nccl" if p.device == "cuda" else "gloo"
    expect(d.get("world_size") == p.nproc and d.get("backend") == backend and d.get("sync_bn") == p.sync_bn,
           f"expected {p.nproc} × {backend}, sync_bn {p.sync_bn}; the record says {d}")
    rate = train_images_per_s(record, s.work / "results-ddp")
    return "ok", (f"{d['world_size']} × {d['backend']}{', SyncBN' if d['sync_bn'] else ', no SyncBN (CPU)'}, "
                  f"{d['per_rank_batch']} per rank, {rate:,.0f} img/s"), seconds


def check_images_per_s(s: Session) -> tuple[str, str, float]:
    p = s.profile
    ce = s.records.get("ce")
    expect(ce is not None, "needs the ce check's run")
    engine = train_images_per_s(ce, s.work / "results")
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-loop", "--device", p.device,
            "--data-root", str(s.work / "data"), "--student", p.student, "--epochs", str(p.epochs),
            "--batch-size", str(p.batch_size)]
    proc = s.start("images/s", argv)
    bare = proc.output["images_per_s"]
    expect(engine > 0 and bare > 0, f"engine {engine}, bare loop {bare} img/s")
    ratio = engine / bare
    status = "slow" if p.min_ratio is not None and ratio < p.min_ratio else "ok"
    return status, (f"{p.student}: engine {engine:,.0f} vs bare loop {bare:,.0f} img/s = {ratio:.2f}×"
                    + (f" (target ≥ {p.min_ratio})" if p.min_ratio is not None else " (CPU: not judged)")), \
        proc.seconds


CHECKS: dict[str, Callable[[Session], tuple[str, str, float]]] = {
    "ce": check_ce, "kd": check_kd, "teacher cache": check_teacher_cache, "crd": check_crd,
    "cnn2gnn": check_cnn2gnn, "ddp": check_ddp, "images/s": check_images_per_s,
}


# --------------------------------------------------------------------------------------------------------------
# The bare loop (run in its own process, with the fixture's environment, by check_images_per_s).


def bare_loop(device_name: str, data_root: Path, student: str, epochs: int, batch_size: int) -> dict[str, float]:
    """What a researcher writes by hand: cross-entropy, SGD, AMP and channels_last, nothing else — no registry,
    record, progress, divergence check or lr schedule. Same dataset, transforms and loader as the engine's run
    (kdbench's builders), same threads and kernel settings (kdbench.core.environment), so the ratio is the engine's
    own cost. Returns training images/s over the epochs after the first."""
    import torch
    import torch.nn.functional as F

    from kdbench.core.environment import configure_determinism, configure_threads
    from kdbench.data import build_dataset, get_dataset_spec
    from kdbench.data.loaders import make_train_loader
    from kdbench.models import create_model

    device = torch.device(device_name)
    configure_threads()
    configure_determinism(True, device)  # `kdbench run`'s default (--deterministic): the same kernels
    spec = get_dataset_spec("cifar100")
    recipe = spec.recipe
    data = build_dataset("cifar100", root=data_root, augment=recipe.augment)
    loader = make_train_loader(data.train, batch_size, 0, device, data.num_workers)
    torch.manual_seed(0)
    model = create_model(student, num_classes=data.num_classes, image_size=data.image_size,
                         cifar_stem=recipe.cifar_stem).to(device).to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                                nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    rates = []
    for epoch in range(1, epochs + 1):
        loader.sampler.set_epoch(epoch)
        model.train()
        seen = 0
        t0 = time.perf_counter()
        for images, labels, _ in loader:
            images = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            labels = labels.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype):
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += labels.numel()
        if device.type == "cuda":
            torch.cuda.synchronize()
        rates.append(seen / (time.perf_counter() - t0))
    timed = rates[1:] or rates
    return {"images_per_s": sum(timed) / len(timed), "epochs_timed": len(timed)}


# --------------------------------------------------------------------------------------------------------------


def write_fixture(p: Profile, work: Path) -> tuple[Path, int, int]:
    from kdbench.data.fixtures import write_cifar100

    written = write_cifar100(work / "data", train_per_class=p.train_per_class, test_per_class=p.test_per_class,
                             classes=p.classes)
    md5_file = work / "fixture-md5.json"
    md5_file.write_text(json.dumps(written.md5))
    assert written.train_labels is not None and written.test_labels is not None
    return md5_file, len(written.train_labels), len(written.test_labels)


def fixture_env(work: Path, md5_file: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(FIXTURE_SITE), env.get("PYTHONPATH", "")) if x)
    env["KDBENCH_TEST_CIFAR_MD5"] = str(md5_file)
    env["KDBENCH_OFFLINE"] = "1"  # never try a download: the fixture is all there is
    env["KDBENCH_CACHE"] = str(work / "cache")
    env["KDBENCH_DIST_TIMEOUT_S"] = "120"  # a hung collective fails the ddp row instead of the whole budget
    for name in ("KDBENCH_RESULTS", "KDBENCH_ZOO", "KDBENCH_DATA"):  # every folder is passed explicitly
        env.pop(name, None)
    return env


def run_checks(p: Profile, work: Path) -> tuple[list[Row], dict[str, Any]]:
    deadline = time.monotonic() + p.budget_s
    md5_file, n_train, n_test = write_fixture(p, work)
    session = Session(p, work, deadline, fixture_env(work, md5_file))
    rows = []
    for name, check in CHECKS.items():
        t0 = time.monotonic()
        try:
            status, figure, seconds = check(session)
            rows.append(Row(name, status, seconds, figure))
        except CheckFailed as e:
            rows.append(Row(name, "fail", time.monotonic() - t0, str(e), log_tail(work, name)))
        except Exception as e:  # a record without an expected field: this script's bug or the harness's
            rows.append(Row(name, "fail", time.monotonic() - t0, f"{type(e).__name__}: {e}"[:200],
                            log_tail(work, name)))
    device_name = next((r["environment"]["device"].get("name") for r in session.records.values()
                        if r.get("environment")), None)
    return rows, {"n_train": n_train, "n_test": n_test, "device_name": device_name}


def render(rows: list[Row], p: Profile, facts: dict[str, Any], total_s: float) -> str:
    import torch

    if p.device == "cuda":
        where = f"{torch.cuda.device_count()} × {facts['device_name'] or 'GPU'}, CUDA {torch.version.cuda}"
    else:
        where = f"CPU ({facts['device_name'] or 'unknown'}, {os.cpu_count()} cores)"
    mode = "GPU check" if p.device == "cuda" else "GPU check, CPU dry run"
    lines = [f"# {mode}: {where}, torch {torch.__version__}; cifar100 fixture "
             f"{facts['n_train']:,} / {facts['n_test']:,} images; {total_s:.0f} s (budget {p.budget_s:.0f} s)",
             "| check | status | seconds | key figure |", "|---|---|---:|---|"]
    lines += [f"| {r.check} | {r.status} | {r.seconds:.1f} | {r.figure.replace('|', '/')} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu-dry-run", action="store_true", help="the same checks on CPU at toy sizes")
    ap.add_argument("--gpus", type=int, default=0, help="ranks of the ddp check [default: every GPU]")
    ap.add_argument("--budget-s", type=float, default=None, help="start no check after this many seconds")
    ap.add_argument("--workdir", type=Path, default=None, help="a new or empty folder to keep records, zoo, cache, "
                    "data and logs in (default: a temporary folder, removed at the end)")
    ap.add_argument("--bare-loop", action="store_true", help=argparse.SUPPRESS)  # the images/s check's process
    ap.add_argument("--device", default="cuda", help=argparse.SUPPRESS)
    ap.add_argument("--data-root", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--student", default="", help=argparse.SUPPRESS)
    ap.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=64, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.bare_loop:
        print(json.dumps(bare_loop(args.device, args.data_root, args.student, args.epochs, args.batch_size)))
        return 0

    if args.cpu_dry_run:
        p = DRY_PROFILE
    else:
        import torch

        if not torch.cuda.is_available():
            print("gpu_check: torch sees no CUDA device here; run `bash benchmarks/gpu_check.sh --cpu-dry-run` "
                  "for the same steps on CPU", file=sys.stderr)
            return 2
        p = gpu_profile(args.gpus or torch.cuda.device_count())
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        # Its records would be shown again instead of runs, and its teacher cache would turn kd's fill into reads.
        print(f"gpu_check: --workdir {args.workdir} is not empty: name a new or empty folder", file=sys.stderr)
        return 2
    if args.budget_s is not None:
        p = replace(p, budget_s=args.budget_s)
    t0 = time.monotonic()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kdbench-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        rows, facts = run_checks(p, work)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    for r in rows:
        if r.status == "fail" and r.log:
            print(f"--- {r.check}: last lines of its log ---\n{r.log}", file=sys.stderr)
    print(render(rows, p, facts, time.monotonic() - t0))
    return 1 if any(r.status == "fail" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
