"""A model that cannot take the run's data, or cannot be built with the user's `--set` options, is one line, exit
2, before any record is written (kdbench.execute.model_probe). Before, each was a timm traceback mid-run: a ViT
built for 32 px fed digits' 16 px images failed inside the teacher's training (or the student's first step),
`num_heads` not dividing `embed_dim` inside timm's constructor, and a `failed` run folder was left behind."""

from __future__ import annotations

from pathlib import Path

import pytest

# A ViT small enough to build in no time; digits' images are 16×16.
TINY_VIT = ("depth=2", "embed_dim=16", "num_heads=2")


def _sets(role: str, *options: str) -> list[str]:
    return [arg for option in options for arg in ("--set", f"{role}.{option}")]


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _nothing_left(dirs: dict[str, Path]) -> None:
    runs = dirs["results"] / "runs"
    assert not runs.is_dir() or not list(runs.iterdir())  # no run folder, not even a `failed` one
    assert not list(dirs["zoo"].glob("*/*/*/model.safetensors"))  # no teacher trained


def test_a_vit_teacher_built_for_another_size_is_one_line_naming_both_sizes_and_the_fix(in_process, dirs) -> None:
    result = in_process("run", "--method", "ofa", "--teacher", "deit_tiny_patch16_224", "--student", "resnet18",
                        "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu",
                        *_sets("teacher", "img_size=32", "patch_size=4", *TINY_VIT))
    line = _one_error_line(result)
    for words in ("--teacher deit_tiny_patch16_224", "built for 32×32", "16×16 images of dataset digits",
                  "--set teacher.img_size=16"):
        assert words in line, line
    _nothing_left(dirs)


def test_a_vit_student_of_a_logit_method_built_for_another_size_is_one_line(in_process, dirs) -> None:
    result = in_process("run", "--method", "kd", "--teacher", "cifar_resnet8", "--student", "deit_tiny_patch16_224",
                        "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu",
                        *_sets("student", "img_size=32", "patch_size=4", *TINY_VIT))
    line = _one_error_line(result)
    assert "--student deit_tiny_patch16_224" in line and "--set student.img_size=16" in line, line
    _nothing_left(dirs)


@pytest.mark.parametrize(("options", "words"), [
    (("img_size=16", "patch_size=4", "depth=2", "embed_dim=16", "num_heads=3"),
     ("cannot be built with", "--set teacher.num_heads=3", "dim should be divisible by num_heads")),
    (("img_size=16", "patch_size=32", *TINY_VIT), ("Kernel size", "a --set teacher.patch_size that divides 16")),
    (("img_size=16", "patch_size=0", *TINY_VIT), ("cannot be built with", "--set teacher.patch_size=0")),
    # kdbench.models.zoo's own line, now before the record (it came from the zoo's training: a `failed` run folder)
    (("img_size=16", "patch_size=4", "no_such_option=1", *TINY_VIT), ("rejected its options", "no_such_option")),
])
def test_teacher_options_timm_refuses_are_one_line(in_process, dirs, options, words) -> None:
    result = in_process("run", "--method", "kd", "--teacher", "deit_tiny_patch16_224", "--student", "cifar_resnet8",
                        "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu", *_sets("teacher", *options))
    line = _one_error_line(result)
    for word in words:
        assert word in line, line
    _nothing_left(dirs)


def test_teachers_train_with_a_size_the_model_does_not_take_is_one_line(in_process, dirs) -> None:
    result = in_process("teachers", "train", "deit_tiny_patch16_224", "--epochs", "1", "--device", "cpu",
                        *_sets("teacher", "img_size=32", "patch_size=4", *TINY_VIT))
    line = _one_error_line(result)
    assert "built for 32×32" in line and "--set teacher.img_size=16" in line, line
    _nothing_left(dirs)


def test_a_sweeps_teacher_job_with_a_size_the_model_does_not_take_is_one_line(in_process, dirs) -> None:
    # A sweep's teacher job trains its teacher itself (kdbench.sweep.jobs.TeacherJob): its log gets the same line.
    import json

    from kdbench.core.errors import UserError
    from kdbench.sweep.jobs import TeacherJob

    planned = in_process("run", "--method", "kd", "--teacher", "deit_tiny_patch16_224", "--student", "cifar_resnet8",
                         "--epochs", "1", "--teacher-epochs", "1", "--device", "cpu", "--dry-run", "--json",
                         *_sets("teacher", "img_size=32", "patch_size=4", *TINY_VIT))
    config = json.loads(planned.stdout)["config"]
    job = TeacherJob(config, {"zoo_dir": str(dirs["zoo"]), "data_root": str(dirs["data"]), "device": "cpu"})
    with pytest.raises(UserError, match=r"built for 32×32.*--set teacher\.img_size=16"):
        job()
    _nothing_left(dirs)
