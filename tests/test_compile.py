"""`--compile` (issue #40): a module that cannot be compiled runs eager after one warning line, and a compiled run is
another run id (and another zoo entry) than an eager one, while an eager run's id is what it always was.

The module that fails is real: a "plugin" whose forward calls a custom operator registered without a fake-tensor
kernel, which dynamo cannot trace (as a graph library's operator): torch.compile raises on its first call."""

from __future__ import annotations

import json

import torch
from torch import nn

from kdbench.execute.build import teacher_key
from kdbench.spec.config import RunConfig
from kdbench.spec.recipe import Recipe
from kdbench.train.compile import CompileStats, compile_distiller, compile_module


@torch.library.custom_op("kdbench_test::opaque_double", mutates_args=())
def opaque_double(x: torch.Tensor) -> torch.Tensor:
    return x * 2  # no register_fake: dynamo cannot run it on fake tensors


class Plugin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return opaque_double(self.linear(x))


def test_a_module_that_cannot_be_compiled_warns_once_and_runs_eager():
    torch.manual_seed(0)
    plugin, x = Plugin(), torch.randn(5, 4)
    eager = plugin(x)
    lines: list[str] = []
    stats = CompileStats(mode="default")
    compile_module(plugin, "connector", "default", stats, lines.append)
    first, second = plugin(x), plugin(x)
    assert torch.equal(first, eager) and torch.equal(second, eager)  # the eager call's numbers
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("warning: --compile: connector (Plugin) could not be compiled")
    assert lines[0].endswith("it runs eager")
    assert "connector" in stats.eager and stats.modules == []
    assert plugin._compiled_call_impl is None  # eager from now on: no second try, no second warning


class _Method(nn.Module):
    """A distiller's shape: a student, a teacher held outside the module tree, a trained connector, a frozen one."""

    def __init__(self) -> None:
        super().__init__()
        self.student, self.connector, self.frozen = nn.Linear(4, 3), Plugin(), nn.Linear(3, 3)
        self.frozen.requires_grad_(False)
        self._teacher = [nn.Linear(4, 3)]  # as Distiller holds it: not a child, never trained

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]


def test_compile_distiller_names_student_teacher_and_trained_modules_only():
    stats = compile_distiller(_Method(), "default", print, torch.device("cpu"))
    assert stats.modules == ["student", "teacher", "connector"]


def _config(**changes) -> RunConfig:
    recipe = Recipe(name="r", epochs=1, batch_size=8, lr=0.1)
    return RunConfig(method="kd", student="resnet18", dataset="digits", seed=0, recipe=recipe, teacher="resnet18",
                     teacher_recipe=recipe, **changes)


def test_compiled_numbers_are_another_run_id_and_eager_ids_stay():
    eager = _config()
    assert "compile" not in eager.to_dict() and "compile_mode" not in eager.to_dict()  # ids of earlier runs kept
    compiled = _config(compile=True, compile_mode="default")
    tuned = _config(compile=True, compile_mode="max-autotune")
    assert len({eager.run_id, compiled.run_id, tuned.run_id}) == 3
    assert teacher_key(compiled).digest != teacher_key(eager).digest  # a compiled zoo teacher is another entry
    assert "compiled" not in teacher_key(eager).to_dict()


def test_the_flag_changes_the_run_id_through_the_cli(in_process):
    args = ("run", "--method", "ce", "--student", "cifar_resnet8", "--epochs", "1", "--dry-run", "--json")
    eager, compiled = in_process(*args), in_process(*args, "--compile")
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    eager_doc, compiled_doc = json.loads(eager.stdout), json.loads(compiled.stdout)
    assert eager_doc["run_id"] != compiled_doc["run_id"]
    assert compiled_doc["config"]["compile"] is True and "compile" not in eager_doc["config"]


def test_an_unknown_compile_mode_is_refused_in_one_line(in_process):
    done = in_process("run", "--method", "ce", "--student", "cifar_resnet8", "--compile", "--compile-mode", "fast",
                      "--dry-run")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unknown compile mode 'fast'" in done.stderr and "max-autotune" in done.stderr


def test_compile_from_the_sweep_flag_or_the_sweep_file_reaches_every_run_id(tmp_path):
    from kdbench.cli.sweep_options import GridSelection, SchedulerFlags, SweepPlaces, sweep_flags, sweep_inputs
    from kdbench.sweep.grid import expand

    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [ce]\nseeds: 0\n")
    places = SweepPlaces(results_dir=tmp_path / "results")
    eager = sweep_inputs(sweep_flags(GridSelection(), places, SchedulerFlags()), path)
    flag = sweep_inputs(sweep_flags(GridSelection(compile=True), places, SchedulerFlags()), path)
    path.write_text("methods: [ce]\nseeds: 0\ncompile: true\ncompile_mode: max-autotune\n")
    from_file = sweep_inputs(sweep_flags(GridSelection(), places, SchedulerFlags()), path)
    [eager_run], [flag_run], [file_run] = expand(eager.grid), expand(flag.grid), expand(from_file.grid)
    assert not eager_run.config.compile and flag_run.config.compile_mode == "default"
    assert file_run.config.compile and file_run.config.compile_mode == "max-autotune"
    assert len({eager_run.config.run_id, flag_run.config.run_id, file_run.config.run_id}) == 3


def test_a_compiled_runs_optimizer_step_is_the_fused_kernel_and_an_eager_runs_stays_foreach():
    """`fused` only under --compile (kdbench.train.engine): every eager run's numbers come from torch's default
    (foreach), which sums in another order than the fused kernel."""
    from kdbench.train.optim import build_optimizer

    for optimizer_name in ("sgd", "adamw"):
        recipe = Recipe(name="r", epochs=1, batch_size=4, lr=0.1, weight_decay=5e-4, optimizer=optimizer_name)
        eager, _ = build_optimizer(nn.Linear(4, 3), recipe)
        compiled, _ = build_optimizer(nn.Linear(4, 3), recipe, fused=True)
        assert all(not g["fused"] for g in eager.param_groups), optimizer_name
        assert all(g["fused"] for g in compiled.param_groups), optimizer_name
        assert type(eager) is type(compiled)


def test_inductor_keeps_contiguous_convolutions_on_a_cpu_and_its_default_elsewhere():
    import torch._inductor.config as inductor_config

    from kdbench.train.compile import configure_inductor

    before = inductor_config.layout_optimization
    try:
        inductor_config.layout_optimization = True
        configure_inductor(torch.device("meta"))  # not a CPU: torch's default stays
        assert inductor_config.layout_optimization is True
        configure_inductor(torch.device("cpu"))
        assert inductor_config.layout_optimization is False
    finally:
        inductor_config.layout_optimization = before
