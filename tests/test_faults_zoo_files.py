"""Teacher-zoo files a colleague hands over cannot change a number, hang a command or print a traceback (issue #34,
cases 2, 3, 4 and 9), each through the command a user types:
- `teachers import` of float32 bytes labelled int32 (or a float `num_batches_tracked`) is one line, exit 2, and
  nothing enters the zoo (the fit check compared shapes only);
- a zoo `model.safetensors` linked to /dev/zero is rejected and retrained (an imported one: one line, exit 2), and a
  `--teacher-ckpt` linked to /dev/zero is one line, exit 2: never read without end (a deadline fails a regression);
- an entry folder, card or weight file that leads out of the zoo is neither listed nor loaded, and the retrain
  replaces the link: the files it pointed to are left unchanged;
- `teachers list` skips a card that is not JSON, lacks `arch` or says `top1: "high"` with one warning line each
  (`--strict`: exit 2), and prints a card's strings literally, never as rich markup; a run whose zoo teacher has
  such a card says so in one line and retrains it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
from pathlib import Path

import pytest
from deadline import deadline
from safetensors.torch import save_file

from kdbench.execute.create_teacher import create_teacher

ARCH = "cifar_resnet8"  # the CRD codebase's ResNet-8: an epoch on 8-pixel digits takes about a second
SETS = ["--set", "data.image_size=8"]
TRAIN = ["teachers", "train", ARCH, "--dataset", "digits", "--epochs", "1", *SETS, "--device", "cpu"]
DEADLINE_S = 60


@pytest.fixture(scope="module")
def trained_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A zoo holding one trained teacher, copied by each test that damages it (trained once per module)."""
    zoo = tmp_path_factory.mktemp("trained") / "zoo"
    create_teacher(ARCH, dataset="digits", epochs=1, sets=[SETS[1]], zoo_dir=zoo, device="cpu")
    return zoo


def _zoo_copy(trained_zoo: Path, tmp_path: Path) -> tuple[Path, Path]:
    zoo = tmp_path / "colleagues-zoo"
    shutil.copytree(trained_zoo, zoo, symlinks=True)
    (card,) = zoo.glob("*/*/*/card.json")
    return zoo, card.parent


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _one_line_exit_2(done) -> str:  # noqa: ANN001 - conftest's CliResult
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr


def _relabelled(source: Path, target: Path, tensor: str, dtype: str) -> None:
    """`source` with the header's dtype of `tensor` changed to `dtype` (same width): the bytes stay, the label lies."""
    raw = source.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    target.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


@pytest.mark.parametrize(("tensor", "dtype", "message"), [
    ("conv1.weight", "I32", "tensor conv1.weight is int32 in the file, the model's is float32"),
    ("bn1.num_batches_tracked", "F64", "tensor bn1.num_batches_tracked is float64 in the file, the model's is int64"),
], ids=["float-bytes-labelled-int32", "float-batch-count"])
def test_import_of_weights_of_another_dtype_is_one_line_exit_2(trained_zoo, tmp_path, in_process, tensor, dtype,
                                                               message):
    (good,) = trained_zoo.glob("*/*/*/model.safetensors")
    bad = tmp_path / "colleague.safetensors"
    _relabelled(good, bad, tensor, dtype)
    zoo = tmp_path / "zoo"
    done = in_process("teachers", "import", str(bad), "--arch", ARCH, "--dataset", "digits", *SETS,
                      "--device", "cpu", "--zoo-dir", str(zoo))
    assert f"does not fit {ARCH}: {message}" in _one_line_exit_2(done)
    assert not list(zoo.rglob("card.json")) and not list(zoo.rglob("*.safetensors"))


def test_a_zoo_weight_file_linked_to_dev_zero_is_rejected_and_retrained(trained_zoo, tmp_path, in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    weights = entry / "model.safetensors"
    weights.unlink()
    weights.symlink_to("/dev/zero")
    with deadline(DEADLINE_S):
        done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0, done.stderr
    flat = "".join(done.stderr.split())  # rich wraps the line where the log is not a terminal
    assert flat.count("rejectedasmodel.safetensors.rejected,retraining") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert weights.is_file() and not weights.is_symlink()  # retrained in place of the link
    card = json.loads((entry / "card.json").read_text())
    assert card["size"] == weights.stat().st_size  # what a load reads at most from now on


def test_a_zoo_weight_file_larger_than_its_card_declares_is_not_read_past_it(trained_zoo, tmp_path, in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    card = json.loads((entry / "card.json").read_text())
    (entry / "card.json").write_text(json.dumps({**card, "size": 100}))
    done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0, done.stderr
    assert "morethanthe100declared" in "".join(done.stderr.split()), done.stderr


def test_a_teacher_ckpt_linked_to_dev_zero_is_one_line_exit_2(tmp_path, in_process, dirs):
    link = tmp_path / "teacher.safetensors"
    link.symlink_to("/dev/zero")
    with deadline(DEADLINE_S):
        done = in_process("run", "--method", "kd", "--teacher", ARCH, "--student", ARCH, "--dataset", "digits",
                          "--epochs", "1", *SETS, "--device", "cpu", "--teacher-ckpt", str(link))
    assert "not a regular file" in _one_line_exit_2(done)
    assert not list(dirs["results"].rglob("result.json"))


def test_an_imported_teacher_linked_to_dev_zero_is_one_line_exit_2(trained_zoo, tmp_path, in_process, dirs):
    (good,) = trained_zoo.glob("*/*/*/model.safetensors")
    zoo = tmp_path / "zoo"
    imported = in_process("teachers", "import", str(good), "--arch", ARCH, "--dataset", "digits", *SETS,
                          "--device", "cpu", "--zoo-dir", str(zoo))
    assert imported.returncode == 0, imported.stderr
    (weights,) = zoo.glob("*/*/imported-*/model.safetensors")
    weights.unlink()
    weights.symlink_to("/dev/zero")
    with deadline(DEADLINE_S):
        done = in_process("run", "--method", "kd", "--teacher", ARCH, "--student", ARCH, "--dataset", "digits",
                          "--epochs", "1", *SETS, "--set", "teacher_recipe.name=imported", "--device", "cpu",
                          "--zoo-dir", str(zoo))
    stderr = _one_line_exit_2(done)
    assert "imported teacher" in stderr and "import it again" in stderr


def test_an_entry_folder_linked_out_of_the_zoo_is_not_listed_loaded_or_written_through(trained_zoo, tmp_path,
                                                                                       in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    outside = tmp_path / "colleague"
    entry.rename(outside)
    entry.symlink_to(outside)
    (outside / "model.safetensors").write_bytes(b"not the card's weights")
    before = _digests(outside)
    listed = in_process("teachers", "list", "--zoo-dir", str(zoo))
    assert listed.returncode == 0 and "(0teachers)" in "".join(listed.stdout.split()), listed  # rich wraps long paths
    assert "symlink out of the zoo" in listed.stderr and len(listed.stderr.strip().splitlines()) == 1
    done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0, done.stderr
    assert "(trained)" in done.stdout  # not loaded from the folder outside
    assert not entry.is_symlink() and (entry / "card.json").is_file()  # the link replaced by a folder of the zoo
    assert _digests(outside) == before and not list(outside.glob("*.rejected"))


def test_a_weight_file_card_or_lock_linked_out_is_replaced_not_written_through(trained_zoo, tmp_path, in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    outside = tmp_path / "colleague"
    outside.mkdir()
    for name, target in (("model.safetensors", "weights"), ("card.json", "card")):
        shutil.copy(entry / name, outside / target)
        (entry / name).unlink()
        (entry / name).symlink_to(outside / target)
    (outside / "lock").write_text("a colleague's file")
    Path(f"{entry}.lock").unlink(missing_ok=True)  # left by the training that made the zoo
    Path(f"{entry}.lock").symlink_to(outside / "lock")
    before = _digests(outside)
    listed = in_process("teachers", "list", "--zoo-dir", str(zoo))
    assert "(0teachers)" in "".join(listed.stdout.split()) and "symlink out of the zoo" in listed.stderr, listed
    done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0 and "(trained)" in done.stdout, done.stderr
    assert not (entry / "model.safetensors").is_symlink() and not (entry / "card.json").is_symlink()
    assert _digests(outside) == before


def _bad_cards(zoo: Path, entry: Path) -> dict[str, Path]:
    card = json.loads((entry / "card.json").read_text())
    bad = {"not-json": "{not json", "no-arch": json.dumps({k: v for k, v in card.items() if k != "arch"}),
           "high": json.dumps({**card, "top1": "high"})}
    paths = {}
    for name, text in bad.items():
        folder = entry.parent / name
        folder.mkdir()
        (folder / "card.json").write_text(text)
        paths[name] = folder / "card.json"
    return paths


def test_teachers_list_skips_each_bad_card_with_one_warning_and_prints_strings_literally(trained_zoo, tmp_path,
                                                                                          in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    bad = _bad_cards(zoo, entry)
    card = json.loads((entry / "card.json").read_text())
    markup = "[link=https://example.org]x[/link][bold]y"
    (entry / "card.json").write_text(json.dumps({**card, "recipe": markup}))
    done = in_process("teachers", "list", "--zoo-dir", str(zoo))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    warnings = done.stderr.strip().splitlines()
    assert len(warnings) == 3, done.stderr
    flat = "".join(done.stderr.split())
    for path, why in ((bad["not-json"], "notJSON"), (bad["no-arch"], "no'arch'"), (bad["high"], "'top1'is\"high\"")):
        assert f"{path}:{why}" in flat, done.stderr
    assert "(1teachers)" in "".join(done.stdout.split()) and markup in done.stdout  # the good card, its text as written

    strict = in_process("teachers", "list", "--zoo-dir", str(zoo), "--strict")
    assert "3 unreadable teacher card(s)" in _one_line_exit_2(strict)


def test_a_run_whose_zoo_teacher_has_a_broken_card_says_so_in_one_line_and_retrains(trained_zoo, tmp_path,
                                                                                    in_process):
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    card = json.loads((entry / "card.json").read_text())
    (entry / "card.json").write_text(json.dumps({**card, "top1": "high"}))
    done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    flat = "".join(done.stderr.split())
    assert flat.count("card.json:'top1'is\"high\",notanumber;filerejected") == 1, done.stderr
    assert flat.count("retraining") == 1 and "(trained)" in done.stdout, done.stderr
    assert json.loads((entry / "card.json").read_text())["top1"] != "high"


def test_a_float16_state_dict_still_imports(trained_zoo, tmp_path, in_process):
    """Another width of the same kind casts exactly: the dtype check refuses kinds, not half-precision files."""
    from safetensors.torch import load_file

    (good,) = trained_zoo.glob("*/*/*/model.safetensors")
    half = tmp_path / "half.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(good)).items()}, str(half))
    done = in_process("teachers", "import", str(half), "--arch", ARCH, "--dataset", "digits", *SETS,
                      "--device", "cpu", "--zoo-dir", str(tmp_path / "zoo"))
    assert done.returncode == 0 and "(imported)" in done.stdout, done.stderr


def test_eval_of_a_student_export_of_another_dtype_is_one_line_exit_2(tmp_path, in_process, dirs):
    """`kdbench eval` loads the run's student export through the same fit check: float bytes labelled int32 (with
    the export card's sha256 made to match, as a colleague could) are refused, not evaluated as other weights."""
    from kdbench.execute.api import run

    record = run("ce", student=ARCH, dataset="digits", epochs=1, sets=[SETS[1]], device="cpu",
                 results_dir=dirs["results"])
    run_dir = dirs["results"] / "runs" / record["run_id"]
    export = run_dir / "student.safetensors"
    _relabelled(export, export, "conv1.weight", "I32")
    card = json.loads((run_dir / "student.json").read_text())
    card["exports"]["last"]["sha256"] = hashlib.sha256(export.read_bytes()).hexdigest()
    (run_dir / "student.json").write_text(json.dumps(card))
    done = in_process("eval", record["run_id"], "--batch-sizes", "8", "--device", "cpu")
    assert "tensor conv1.weight is int32 in the file, the model's is float32" in _one_line_exit_2(done)


@pytest.mark.parametrize("damage", ["dev-zero", "top1-high"])
def test_a_sweep_plans_a_teacher_job_for_a_zoo_entry_it_would_reject(trained_zoo, tmp_path, in_process, dirs,
                                                                     damage):
    """The sweep's "is the teacher cached?" is the zoo's own check: an entry a run would reject is retrained by a
    teacher job, and planning neither hangs on /dev/zero nor fails on a broken card."""
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    sweep = ["sweep", "--methods", "kd", "--teachers", ARCH, "--students", ARCH, "--datasets", "digits", "--epochs",
             "1", "--teacher-epochs", "1", *SETS, "--zoo-dir", str(zoo), "--executor", "local", "--dry-run"]
    cached = in_process(*sweep)
    assert cached.returncode == 0 and "teacher cached" in cached.stderr, cached  # the plan is on stderr
    if damage == "dev-zero":
        (entry / "model.safetensors").unlink()
        (entry / "model.safetensors").symlink_to("/dev/zero")
    else:
        card = json.loads((entry / "card.json").read_text())
        (entry / "card.json").write_text(json.dumps({**card, "top1": "high"}))
    with deadline(DEADLINE_S):
        done = in_process(*sweep)
    assert done.returncode == 0 and "teacher job" in done.stderr and "Traceback" not in done.stderr, done


def test_a_card_written_before_sizes_were_recorded_still_loads(trained_zoo, tmp_path, in_process):
    """Old cards have no `size`: the weights are then read up to the regular file's own size, and still load."""
    zoo, entry = _zoo_copy(trained_zoo, tmp_path)
    card = json.loads((entry / "card.json").read_text())
    del card["size"]
    (entry / "card.json").write_text(json.dumps(card))
    done = in_process(*TRAIN, "--zoo-dir", str(zoo))
    assert done.returncode == 0 and "(cached)" in done.stdout, done.stderr


def test_a_teacher_ckpt_of_another_dtype_is_one_line_exit_2(trained_zoo, tmp_path, in_process, dirs):
    (good,) = trained_zoo.glob("*/*/*/model.safetensors")
    bad = tmp_path / "teacher.safetensors"
    _relabelled(good, bad, "conv1.weight", "I32")
    done = in_process("run", "--method", "kd", "--teacher", ARCH, "--student", ARCH, "--dataset", "digits",
                      "--epochs", "1", *SETS, "--device", "cpu", "--teacher-ckpt", str(bad))
    assert "tensor conv1.weight is int32 in the file, the model's is float32" in _one_line_exit_2(done)
    assert not list(dirs["results"].rglob("result.json"))
