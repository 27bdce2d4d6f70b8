"""A run stopped inside an epoch resumes at the next step and ends with the bits of a run never stopped (issue #39).

SIGTERM (a real signal, handled by `kdbench run`'s handler) during a step saves that step and exits 143; a run
killed without a word resumes from its last `--checkpoint-every-steps` checkpoint. For kd, crd (memory banks,
negatives drawn from the global RNG) and two-stage fitnet (a stage per epoch), stopped at several steps: the first
epoch's middle, its last step (resumed straight into its evaluation), the second epoch's middle. The metrics, every
line of metrics.jsonl but its timings, and the exported student weights must be the same bits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kdbench.core.progress import Reporter
from kdbench.core.safe_load import load_plain_checkpoint
from kdbench.execute.api import run
from kdbench.store import exports
from kdbench.sweep.signals import stop_on_sigterm

# The smallest CNNs (as test_method_resume_new), 8 px, half of digits to test on: 14 steps of 64 per epoch.
TINY = {"teacher": "cifar_resnet8", "student": "test_resnet", "epochs": 2, "teacher_epochs": 1, "device": "cpu",
        "sets": ["data.image_size=8", "data.test_fraction=0.5"]}
# ab: a pre-stage method (epoch 1 the AB pre-stage with its connectors, epoch 2 CE), killed in either stage.
METHODS = {"kd": [], "crd": ["crd.nce_k=64"], "fitnet": ["fitnet.stages=2"], "ab": []}


@pytest.fixture(scope="module")
def shared_zoo(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo")  # the teacher trains once for the module


class SigtermAt(Reporter):
    """Sends this process a real SIGTERM while global step `at` (1-based) runs, before its optimizer step."""

    def __init__(self, at: int) -> None:
        self.at = at
        self.lines: list[str] = []

    def iteration(self, step: int, losses: dict, lr: float) -> None:
        if step == self.at:
            signal.raise_signal(signal.SIGTERM)

    def log(self, message: str) -> None:
        self.lines.append(message)


class KillAt(Reporter):
    """A kill that saves nothing (as SIGKILL would) while global step `at` runs."""

    def __init__(self, at: int) -> None:
        self.at = at

    def iteration(self, step: int, losses: dict, lr: float) -> None:
        if step == self.at:
            raise KeyboardInterrupt


def _position(results: Path, run_id: str) -> tuple[int, int] | None:
    """(epoch, step) of the run's step-level checkpoint; None for an epoch-boundary one."""
    state = load_plain_checkpoint(results / "runs" / run_id / "checkpoint.pt")
    return (state["in_epoch"]["epoch"], state["in_epoch"]["step"]) if "in_epoch" in state else None


def assert_same_bits(ours: dict, whole: dict, results: Path, whole_results: Path) -> None:
    drop = {"resumed_from_epoch"}
    assert {k: v for k, v in ours["metrics"].items() if k not in drop} == {
        k: v for k, v in whole["metrics"].items() if k not in drop}

    def lines(root: Path) -> list[dict]:
        text = (root / "runs" / whole["run_id"] / "metrics.jsonl").read_text()
        return [{k: v for k, v in json.loads(line).items() if not k.endswith("_s")} for line in text.splitlines()]

    assert lines(results) == lines(whole_results)  # losses, lr, train/test top-1 of every epoch, as floats
    for name in (exports.LAST, exports.BEST):
        a = load_file(results / "runs" / whole["run_id"] / name)
        b = load_file(whole_results / "runs" / whole["run_id"] / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("method", list(METHODS))
def test_sigterm_at_several_steps_resumes_to_the_bits_of_an_uninterrupted_run(method, tmp_path, shared_zoo):
    opts = {**TINY, "sets": TINY["sets"] + METHODS[method], "zoo_dir": shared_zoo}
    whole = run(method, results_dir=tmp_path / "whole", **opts)
    steps = whole["schedule"]["steps_per_epoch"]
    cut = tmp_path / "cut"
    # SIGTERM during global step `at`: that step ends, is saved, and the process exits 143 with the record
    # `interrupted`; the next call resumes after it.
    for at in (3, steps, steps + 6):
        reporter = SigtermAt(at)
        with stop_on_sigterm(), pytest.raises(SystemExit) as stopped:
            run(method, results_dir=cut, reporter=reporter, **opts)
        assert stopped.value.code == 143
        epoch, step = (at - 1) // steps + 1, (at - 1) % steps + 1
        assert _position(cut, whole["run_id"]) == (epoch, step)
        assert any(f"epoch {epoch} step {step}: stop signal" in line for line in reporter.lines), reporter.lines
        record = json.loads((cut / "runs" / whole["run_id"] / "result.json").read_text())
        assert record["status"] == "interrupted" and record["attempts"][-1]["reason"] == "cancelled"
    resumed = run(method, results_dir=cut, **opts)
    assert resumed["metrics"]["resumed_from_epoch"] == 1
    assert_same_bits(resumed, whole, cut, tmp_path / "whole")


def test_a_kill_resumes_from_the_last_checkpoint_every_steps(tmp_path, shared_zoo):
    """No signal to save on (SIGKILL, a node lost): the run resumes from its last `checkpoint_every_steps`
    checkpoint, inside the epoch, with the same bits."""
    opts = {**TINY, "zoo_dir": shared_zoo}
    whole = run("kd", results_dir=tmp_path / "whole", **opts)
    steps = whole["schedule"]["steps_per_epoch"]
    cut = tmp_path / "cut"
    for at in (11, steps + 10):  # killed in step 11: the checkpoint of step 8 (every 4) is the last one
        with pytest.raises(KeyboardInterrupt):
            run("kd", results_dir=cut, reporter=KillAt(at), checkpoint_every_steps=4, **opts)
        assert _position(cut, whole["run_id"]) == ((at - 1) // steps + 1, 8)
    resumed = run("kd", results_dir=cut, **opts)
    assert_same_bits(resumed, whole, cut, tmp_path / "whole")


def test_kill_term_to_kdbench_run_saves_the_step_and_the_same_command_resumes(tmp_path, shared_zoo, in_process):
    """`kill -TERM` of a real `kdbench run` process once its first step checkpoint is on disk: it saves the step
    in progress and exits 143; the same command (here in process) then completes the run with an uninterrupted
    run's bits."""
    results = tmp_path / "cut"
    command = ["run", "--method", "kd", "--teacher", TINY["teacher"], "--student", TINY["student"], "--epochs", "4",
               "--teacher-epochs", "1", "--device", "cpu", "--results-dir", str(results), "--zoo-dir",
               str(shared_zoo), *[x for s in TINY["sets"] for x in ("--set", s)], "--checkpoint-every-steps", "2",
               "--json"]
    args = [sys.executable, "-m", "kdbench", *command]
    # The teacher first (so the subprocess spends its time in the student's steps), and the reference.
    whole = run("kd", results_dir=tmp_path / "whole", **{**TINY, "epochs": 4, "zoo_dir": shared_zoo})
    checkpoint = results / "runs" / whole["run_id"] / "checkpoint.pt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not checkpoint.exists():
            assert proc.poll() is None, proc.communicate()[0]
            assert time.monotonic() < deadline, "no step checkpoint within 120 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, output
    assert "stop signal; saved this step's checkpoint" in output, output
    record = json.loads((results / "runs" / whole["run_id"] / "result.json").read_text())
    assert record["status"] == "interrupted" and record["attempts"][-1]["reason"] == "cancelled"
    assert _position(results, whole["run_id"]) is not None  # stopped inside an epoch, not at its end
    again = in_process(*command)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_same_bits(json.loads(again.stdout), whole, results, tmp_path / "whole")


def test_a_negative_checkpoint_every_steps_is_one_line_exit_2(in_process, tmp_path):
    bad = in_process("run", "--method", "ce", "--results-dir", str(tmp_path), "--checkpoint-every-steps", "-1")
    assert bad.returncode == 2 and "--checkpoint-every-steps" in bad.stderr and "Traceback" not in bad.stderr
    from kdbench.core.errors import UserError

    with pytest.raises(UserError, match=r"--checkpoint-every-steps -1: expected a number of optimizer steps ≥ 0"):
        run("ce", results_dir=tmp_path, checkpoint_every_steps=-1, **{k: v for k, v in TINY.items() if k != "teacher"})
    assert not (tmp_path / "runs").exists()  # refused before any record is written


PLAIN = (bool, int, float, str, type(None))


def _plain_attributes(method: torch.nn.Module) -> dict[str, object]:
    """Every module's own plain attributes (numbers, flags, strings): state a checkpoint's state dict does not
    hold. Tensors and modules are the state dict's (or, as a FeatureTap's captures, remade by every forward)."""
    internals = set(vars(torch.nn.Module()))
    return {f"{name}.{key}": value for name, module in method.named_modules()
            for key, value in vars(module).items()
            if key not in internals and isinstance(value, PLAIN)}


@pytest.mark.parametrize("name", sorted(__import__("kdbench.train.method", fromlist=["x"]).list_methods()))
def test_no_method_keeps_state_a_step_checkpoint_would_lose(name):
    """A step checkpoint holds a method's modules and buffers (its state dict); any other state must be a function
    of the epoch (set by `on_epoch_start`, which a resumed epoch calls again). So a method's plain attributes after
    training steps are those a fresh instance gets from `on_epoch_start` alone: a counter or a learnt float kept
    as a Python attribute would resume wrong and fails here."""
    from wiring.oracles import ORACLES

    from kdbench.models import create_model
    from kdbench.train.method import Batch, MethodContext, get_method

    spec, method_spec = ORACLES[name], get_method(name)
    ctx = MethodContext(num_classes=5, in_chans=3, image_size=16, num_train=40,
                        train_targets=torch.arange(40) % 5, epochs=3, seed=0)

    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        student = create_model(spec.student, num_classes=5, image_size=16, **spec.student_options)
        teacher = create_model(spec.teacher, num_classes=5, image_size=16) if method_spec.needs_teacher else None
        return method_spec.cls(student, teacher, method_spec.params, ctx).train()

    trained = build()
    for epoch in (1, 2):
        trained.on_epoch_start(epoch)
        for seed in range(2):
            g = torch.Generator().manual_seed(seed)
            index = torch.randperm(40, generator=g)[:6]
            trained.forward_train(Batch(torch.randn(6, 3, 16, 16, generator=g), index % 5, index))
    fresh = build()
    fresh.on_epoch_start(2)
    assert _plain_attributes(trained) == _plain_attributes(fresh)


def test_the_deferred_loss_reads_of_a_gpu_resume_inside_an_epoch_to_the_same_bits(tmp_path):
    """On a GPU the losses stay on the device and are read once per logging interval (kdbench.train.step_log):
    a step checkpoint reads the pending ones first, and its sums carry on. Forced on CPU (the same code), with a
    method that draws dropout masks from the global RNG, killed between checkpoints twice."""
    from torch.utils.data import TensorDataset

    from kdbench.data.loaders import make_eval_loader, make_train_loader
    from kdbench.spec.recipe import Recipe
    from kdbench.train.engine import Engine, EngineSettings
    from kdbench.train.method import Distiller, MethodContext

    cpu, n, batch = torch.device("cpu"), 60, 6  # 10 steps an epoch

    class Dropout(Distiller):
        needs_teacher = False

        def forward_train(self, b):
            logits = self.student(torch.nn.functional.dropout(b.images, 0.5, training=True))
            return logits, {"ce": self.cross_entropy(logits, b.labels), "l2": 0.1 * logits.pow(2).mean()}

    class KillAtStep(Reporter):
        def __init__(self, at: int) -> None:
            self.at, self.steps = at, 0

        def step(self, n: int = 1, **info) -> None:
            self.steps += n if n == 1 else 0  # one call per training step (a resume's catch-up call excepted)
            if self.steps == self.at:
                raise KeyboardInterrupt

    def fit(folder: Path, every: int, reporter: Reporter | None = None):
        g = torch.Generator().manual_seed(0)
        ds = TensorDataset(torch.randn(n, 4, generator=g), torch.randint(0, 3, (n,), generator=g), torch.arange(n))
        ctx = MethodContext(num_classes=3, in_chans=1, image_size=2, num_train=n, train_targets=ds.tensors[1],
                            epochs=3, seed=1)
        torch.manual_seed(0)
        model = Dropout(torch.nn.Linear(4, 3), None, None, ctx)
        settings = EngineSettings(cpu, sync_every_step=False, log_interval=3, checkpoint_every_steps=every)
        result = Engine(settings, reporter or Reporter()).fit(
            model, make_train_loader(ds, batch, seed=1, device=cpu), make_eval_loader(ds, batch, order_seed=0,
                                                                                       device=cpu),
            Recipe(name="t", epochs=3, batch_size=batch, lr=0.5, schedule="cosine", weight_decay=0.0), seed=1,
            checkpoint_path=folder / "checkpoint.pt")
        return [{k: v for k, v in vars(r).items() if not k.endswith("_s")} for r in result.history], model

    folder = tmp_path / "cut"
    folder.mkdir()
    whole, whole_model = fit(tmp_path, 0)
    # Killed in global step 8 (epoch 1's 8th): saved at its 4th; then 11 steps after that resume, in global step 15
    # (epoch 2's 5th): saved at epoch 2's 4th.
    for at, where in ((8, (1, 4)), (11, (2, 4))):
        with pytest.raises(KeyboardInterrupt):
            fit(folder, 4, KillAtStep(at))
        state = load_plain_checkpoint(folder / "checkpoint.pt")["in_epoch"]
        assert (state["epoch"], state["step"]) == where
    resumed, model = fit(folder, 4)
    assert resumed == whole
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), whole_model.state_dict().values(),
                                                  strict=True))


def test_a_step_checkpoint_whose_position_is_not_this_codes_is_refused_whole(tmp_path, shared_zoo):
    """A position that is not what this code writes (here: its RNG states gone) is refused before anything is
    restored: the run starts over with the one-line warning, and ends with a fresh run's numbers."""
    opts = {**TINY, "zoo_dir": shared_zoo}
    whole = run("kd", results_dir=tmp_path / "whole", **opts)
    cut = tmp_path / "cut"
    with stop_on_sigterm(), pytest.raises(SystemExit):
        run("kd", results_dir=cut, reporter=SigtermAt(5), **opts)
    path = cut / "runs" / whole["run_id"] / "checkpoint.pt"
    state = load_plain_checkpoint(path)
    del state["in_epoch"]["rng"]
    torch.save(state, path)
    reporter = SigtermAt(-1)
    again = run("kd", results_dir=cut, reporter=reporter, **opts)
    assert any("does not hold this run's state; starting this run again from scratch" in line
               for line in reporter.lines), reporter.lines
    assert_same_bits(again, whole, cut, tmp_path / "whole")
