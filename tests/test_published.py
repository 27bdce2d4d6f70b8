"""The published CIFAR-100 tables shipped as data, `kdbench published`, and `kdbench leaderboard --published`
joining real run records (written with RunStore; no model is trained) with them at the paper's epoch convention."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import pandas as pd
import pytest
from test_leaderboard import make_config, write_run

from kdbench.core.errors import UserError
from kdbench.report.leaderboard import build_published, render
from kdbench.report.published import EPOCHS, PAPERS, load_published

# The CIFAR architectures of the CRD codebase under kdbench's names.
CIFAR_ARCHS = {
    *(f"cifar_resnet{d}" for d in (8, 14, 20, 32, 44, 56, 110)), "cifar_resnet8x4", "cifar_resnet32x4",
    "cifar_resnet50", "cifar_wrn_16_1", "cifar_wrn_16_2", "cifar_wrn_40_1", "cifar_wrn_40_2",
    *(f"cifar_vgg{d}" for d in (8, 11, 13, 16, 19)), "cifar_mobilenetv2", "cifar_shufflev1", "cifar_shufflev2",
}
IMAGENET_ARCHS = {"resnet34", "resnet18", "resnet50", "resnet152", "mobilenetv1_100"}  # timm's names, as kdbench's
METHODS = {"teacher", "ce", "kd", "fitnet", "at", "rkd", "pkt", "crd", "crd+kd", "dkd", "rkd+kd", "hkd", "hkd+kd",
           "dist", "ctkd", "kd+ls", "dkd+ls", "ctkd+ls", "kd+dot", "sp", "cc", "vid", "nst", "reviewkd", "ab", "ft",
           "fsp", "ofd"}


def one(df: pd.DataFrame, **match: str) -> dict:
    rows = df[(df[list(match)] == pd.Series(match)).all(axis=1)]
    assert len(rows) == 1, (match, rows)
    return rows.iloc[0].to_dict()


def test_published_numbers_as_the_papers_print_them() -> None:
    df = load_published()
    pair = {"teacher": "cifar_resnet32x4", "student": "cifar_resnet8x4", "dataset": "cifar100"}
    kd = one(df, paper="crd", table="Table 1", method="kd", **pair)
    assert (kd["top1"], kd["std"], kd["runs"], kd["epoch"]) == (73.33, 0.25, 5, "last")
    crd = one(df, paper="crd", table="Table 1", method="crd", **pair)
    assert (crd["top1"], crd["std"]) == (75.51, 0.18)
    assert one(df, paper="crd", method="crd+kd", **pair)["top1"] == 75.46
    assert one(df, paper="crd", method="teacher", **pair)["top1"] == 79.42
    assert one(df, paper="crd", method="ce", **pair)["top1"] == 72.50
    shuffle = one(df, paper="crd", method="crd", teacher="cifar_wrn_40_2", student="cifar_shufflev1")
    assert (shuffle["top1"], shuffle["table"], shuffle["runs"]) == (76.05, "Table 2", 3)
    # DKD's README copies its KD column from CRD (last epoch); its DKD column is best epoch.
    assert one(df, paper="dkd", method="dkd", **pair)["epoch"] == "best"
    assert one(df, paper="dkd", method="dkd", **pair)["top1"] == 76.32
    assert one(df, paper="dkd", method="kd", **pair)["epoch"] == "last"
    hkd = one(df, paper="hkd", method="hkd+kd", **pair)
    assert (hkd["top1"], hkd["std"], hkd["epoch"]) == (76.13, 0.05, "unstated")
    # AB, FT, FSP: Table 1 (FSP "N/A" for WRN-40-2 → WRN-40-1, unequal widths) and AB, FT in Table 2.
    assert one(df, paper="crd", method="ab", **pair)["top1"] == 73.17
    assert one(df, paper="crd", method="ft", teacher="cifar_vgg13", student="cifar_mobilenetv2")["top1"] == 61.78
    assert df.query("method == 'fsp'")["table"].tolist() == ["Table 1"] * 6
    # The SP, CC, VID and NST columns of CRD's Tables 1-2 (RepDistiller's README), at the last epoch.
    assert {m: one(df, paper="crd", method=m, **pair)["top1"] for m in ("sp", "cc", "vid", "nst")} == {
        "sp": 72.94, "cc": 72.97, "vid": 73.09, "nst": 73.30}
    shufflenet = {"teacher": "cifar_wrn_40_2", "student": "cifar_shufflev1", "dataset": "cifar100"}
    assert (one(df, paper="crd", method="nst", **shufflenet)["top1"], one(df, method="nst", **shufflenet)["runs"]) == (
        74.89, 3)
    # CRD: 13 pairs × (teacher, student, 7 methods) + SP, CC, VID, NST, AB, FT 13 pairs each + FSP 6;
    # DKD 11 pairs × 2; HKD 5 pairs × 7 rows.
    assert df["paper"].value_counts().to_dict() == {"crd": 201, "dkd": 22, "hkd": 35, "mdistiller": 4,
                                                    "torchdistill": 4, "dist": 12, "ctkd": 11, "ls": 42, "reviewkd": 6,
                                                    "dot": 5, "ofd": 6}


def test_every_published_row_uses_kdbench_names() -> None:
    df = load_published()
    cifar = df[df["dataset"] == "cifar100"]
    assert set(cifar["teacher"]) | set(cifar["student"]) <= CIFAR_ARCHS
    imagenet = df[df["dataset"] == "imagenet"]
    assert set(imagenet["teacher"]) | set(imagenet["student"]) <= IMAGENET_ARCHS
    assert set(df["method"]) <= METHODS
    assert set(df["paper"]) == set(PAPERS) and set(df["epoch"]) <= set(EPOCHS)
    assert set(df["dataset"]) == {"cifar100", "imagenet"}
    assert not df.duplicated(["paper", "table", "teacher", "student", "method"]).any()
    assert df["top1"].between(50, 90).all() and df["source"].str.len().gt(0).all()
    assert set(load_published("hkd")["paper"]) == {"hkd"}
    with pytest.raises(UserError, match="Valid: crd, ctkd, dist, dkd, dot, hkd, ls, mdistiller, ofd, reviewkd, "
                                        "torchdistill"):
        load_published("kd")


def test_published_command_formats_and_bad_paper(in_process) -> None:
    csv = in_process("published", "--paper", "crd", "--format", "csv")
    assert csv.returncode == 0, csv.stderr
    rows = pd.read_csv(io.StringIO(csv.stdout))
    assert set(rows["paper"]) == {"crd"} and len(rows) == 201
    markdown = in_process("published", "--paper", "dkd")
    assert markdown.returncode == 0, markdown.stderr
    # DKD mixes conventions, so its columns say which; the resnet32x4 → resnet8x4 row holds both numbers.
    assert "| kd (last) | dkd (best) |" in markdown.stdout
    assert "| README · cifar_resnet32x4 → cifar_resnet8x4 | 73.33 | 76.32 |" in markdown.stdout
    latex = in_process("published", "--format", "latex")
    assert latex.returncode == 0 and latex.stdout.count(r"\begin{tabular}") == len(PAPERS)  # one per paper
    assert r"73.33 $\pm$ 0.25" in latex.stdout
    bad = in_process("published", "--paper", "fitnet")
    assert bad.returncode == 2 and "Valid: crd, " in bad.stderr and "Traceback" not in bad.stderr


def cifar_config(method: str, seed: int, *, teacher: str | None = "cifar_resnet32x4",
                 student: str = "cifar_resnet8x4", dataset: str = "cifar100"):
    """A real resolved config, renamed to the CIFAR pair (the cifar_ models need not exist to write a record)."""
    config = make_config(method, teacher="resnet50" if teacher else None, seed=seed)
    return dataclasses.replace(config, teacher=teacher, student=student, dataset=dataset)


KD_LAST = [73.0, 73.5, 74.0]  # write_run stores top1_best = top1_last + 1
DKD_LAST = [75.0, 75.2]


@pytest.fixture
def cifar_results(dirs: dict[str, Path]) -> Path:
    root = dirs["results"]
    for seed, v in enumerate(KD_LAST):
        write_run(root, cifar_config("kd", seed), v, teacher_top1=79.0)
    for seed, v in enumerate(DKD_LAST):
        write_run(root, cifar_config("dkd", seed), v, teacher_top1=79.0)
    write_run(root, cifar_config("ce", 0, teacher=None), 72.0)
    # Neither may join the resnet32x4 → resnet8x4 rows: another dataset, another teacher.
    write_run(root, cifar_config("kd", 0, dataset="cifar10"), 90.0)
    write_run(root, cifar_config("kd", 0, teacher="cifar_wrn_40_2"), 60.0)
    return root


def test_leaderboard_published_joins_ours_at_the_papers_epoch(cifar_results: Path) -> None:
    board = build_published(cifar_results)
    data = board.data
    kd = one(data, paper="crd", method="kd", teacher="cifar_resnet32x4", student="cifar_resnet8x4")
    assert kd["metric"] == "top1_last" and kd["n"] == 3 and kd["published_top1"] == 73.33
    assert kd["mean"] == pytest.approx(73.5) and kd["std"] == pytest.approx(0.5)
    assert kd["delta"] == pytest.approx(73.5 - 73.33)
    # DKD reports the best epoch: ours is compared at top1_best (75.1 + 1), never at the last epoch.
    dkd = one(data, paper="dkd", method="dkd")
    assert dkd["metric"] == "top1_best" and dkd["mean"] == pytest.approx(76.1)
    assert dkd["delta"] == pytest.approx(76.1 - 76.32)
    # DKD's KD column is CRD's last-epoch number, so it meets our last epoch too.
    assert one(data, paper="dkd", method="kd")["mean"] == pytest.approx(73.5)
    # HKD does not say which epoch: shown, but compared with neither.
    hkd_kd = one(data, paper="hkd", method="kd", student="cifar_resnet8x4")
    assert hkd_kd["n"] == 0 and pd.isna(hkd_kd["delta"])
    teacher = one(data, paper="crd", method="teacher", student="cifar_resnet8x4")
    assert teacher["mean"] == 79.0 and teacher["delta"] == pytest.approx(79.0 - 79.42)
    ce = one(data, paper="crd", method="ce", student="cifar_resnet8x4")
    assert ce["mean"] == 72.0 and ce["n"] == 1
    # Only the pair we ran (plus its student alone) appears; the cifar10 and wrn_40_2 runs join nothing.
    assert set(zip(data["teacher"], data["student"], strict=True)) == {("cifar_resnet32x4", "cifar_resnet8x4")}
    assert set(data["dataset"]) == {"cifar100"}
    assert not (data["mean"] == 90.0).any() and not (data["mean"] == 60.0).any()

    text = render(board, "markdown")
    assert "| crd Table 1 | cifar100 | cifar_resnet32x4 → cifar_resnet8x4 | kd | last | 73.33 ± 0.25 (5) | " \
           "73.50 ± 0.50 (3) | +0.17 |" in text
    assert "| dkd README | cifar100 | cifar_resnet32x4 → cifar_resnet8x4 | dkd | best | 76.32 (5) | " \
           "76.10 ± 0.14 (2) | -0.22 |" in text
    assert "hkd: the paper does not say" in text


def test_cli_leaderboard_published(cifar_results: Path, in_process) -> None:
    res = in_process("leaderboard", "--published", "--results-dir", str(cifar_results), "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = pd.read_csv(io.StringIO(res.stdout))
    assert one(rows, paper="dkd", method="dkd")["mean"] == pytest.approx(76.1)
    mixed = in_process("leaderboard", "--published", "--metric", "top1_last", "--results-dir", str(cifar_results))
    assert mixed.returncode == 2 and "epoch convention" in mixed.stderr


def test_top5_is_read_where_a_paper_gives_it_and_shown_beside_top1(in_process) -> None:
    """CTKD's README gives ImageNet top-1 and top-5 (its table, read at zhengli97/CTKD); the CIFAR tables give top-1
    only, so top5 is NaN there, never 0."""
    df = load_published("ctkd")
    imagenet = {"dataset": "imagenet", "teacher": "resnet34", "student": "resnet18"}
    assert (one(df, method="teacher", **imagenet)["top1"], one(df, method="teacher", **imagenet)["top5"]) == (
        73.96, 91.58)
    assert df[df["dataset"] == "cifar100"]["top5"].isna().all()
    shown = in_process("published", "--paper", "ctkd")
    assert shown.returncode == 0 and "| 73.96 / 91.58 |" in shown.stdout and "`top-1 / top-5`" in shown.stdout


def test_published_kd_dot_rows_meet_only_our_kd_runs_trained_with_dot(cifar_results: Path, in_process) -> None:
    """`kdbench leaderboard --published`: mdistiller's KD+DOT number (best epoch) is compared with our kd runs whose
    recipe has `dot_delta` > 0, and the plain KD numbers only with the kd runs trained without DOT."""
    for seed, v in enumerate([74.0, 74.4]):
        config = make_config("kd", teacher="resnet50", seed=seed, sets=("data.image_size=8", "recipe.dot_delta=0.075"))
        assert config.recipe.dot_delta == 0.075
        write_run(cifar_results, dataclasses.replace(config, teacher="cifar_resnet32x4", student="cifar_resnet8x4",
                                                     dataset="cifar100"), v, teacher_top1=79.0)
    res = in_process("leaderboard", "--published", "--results-dir", str(cifar_results), "--format", "csv")
    assert res.returncode == 0, res.stderr
    rows = pd.read_csv(io.StringIO(res.stdout))
    dot = one(rows, paper="dot", method="kd+dot", teacher="cifar_resnet32x4", student="cifar_resnet8x4")
    assert (dot["published_top1"], dot["epoch"], dot["n"]) == (75.12, "best", 2)
    assert dot["mean"] == pytest.approx(75.2)  # top1_best = top1_last + 1 of the two DOT runs
    assert "dot_delta=0.075" in dot["setting"]
    plain = one(rows, paper="crd", method="kd", teacher="cifar_resnet32x4", student="cifar_resnet8x4")
    assert plain["n"] == 3 and plain["mean"] == pytest.approx(73.5)  # KD_LAST: the DOT runs stay out


def test_ofd_rows_are_the_authors_imagenet_errors_as_accuracies() -> None:
    """clovaai/overhaul-distillation's README gives top-1/top-5 *error*: the rows hold 100 − error, both numbers."""
    df = load_published("ofd")
    mv1 = {"dataset": "imagenet", "teacher": "resnet50", "student": "mobilenetv1_100"}
    assert (one(df, method="ofd", **mv1)["top1"], one(df, method="ofd", **mv1)["top5"]) == (71.25, 90.34)
    r50 = {"dataset": "imagenet", "teacher": "resnet152", "student": "resnet50"}
    assert (one(df, method="teacher", **r50)["top1"], one(df, method="ce", **r50)["top5"]) == (78.31, 93.03)
    assert set(df["epoch"]) == {"unstated"}
