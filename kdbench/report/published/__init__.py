"""Published CIFAR-100 and ImageNet-1k results (top-1 %, test set / ILSVRC2012 val) that kdbench compares itself
against, shipped as data.

`published.csv` holds one row per published number:

- `paper`: `crd`, `dkd`, `hkd`, `mdistiller` or `torchdistill` (see PAPERS); `table`: where the number is printed
  (CRD: Table 1 = same architecture, Table 2 = cross architecture; the others: their authors' README). The
  ImageNet rows (`mdistiller`, `torchdistill`) give top-1 only: no source found for their top-5.
- `dataset`, `teacher`, `student`: kdbench names (the CRD codebase's `resnet8x4` is kdbench's `cifar_resnet8x4`).
- `method`: a kdbench method name (`kd`, `fitnet`, `at`, `rkd`, `pkt`, `crd`, `crd+kd`, `dkd`, `rkd+kd`, `hkd`,
  `hkd+kd`, `dist`, `ctkd`), or one with `+ls` (`kd+ls`, `dkd+ls`, `ctkd+ls`: the method with logit
  standardization, its `logit_std` switch on; compared with our runs of the method that have it on), or one with
  `+dot` (`kd+dot`: the method trained with DOT, compared with our runs whose `recipe.dot_delta` > 0; our runs
  without DOT meet the plain rows only). Two rows
  of each pair are not distillation methods, and are named as kdbench's leaderboard names them: `teacher` is
  the teacher alone (the papers' "Teacher" column) and `ce` the student trained alone with cross-entropy (the
  papers' "Student" column). Both keep the teacher → student pair they are printed under.
- `top1`: the published mean; `std`: its standard deviation where the paper gives one (for CRD only the values its
  appendix tables give for resnet32x4 → resnet8x4); `runs`: how many runs the mean is over, where stated (CRD:
  5 in Table 1, 3 in Table 2; DKD: 5; not stated for teachers, which are single checkpoints, nor by HKD).
- `epoch`: `last` (accuracy after the last epoch: CRD, per its repository's issue #16), `best` (best test accuracy
  over all epochs: DKD, logit standardization, DOT on CIFAR-100) or `unstated` (HKD, DIST, CTKD, the ImageNet
  rows). A number is only ever compared with ours at the same convention.
  DKD's table copies its KD column from CRD, so those rows are `last` while its DKD rows are `best`.
- `source`, `note`: where the number comes from and what to know about it.

Paper `reviewkd` (methods `ce`, `reviewkd`, epoch `unstated`): its ImageNet numbers from the authors' repository
(dvlab-research/ReviewKD ImageNet/README.md, `table` = "ImageNet README": the student alone and ReviewKD, top-1
only), its CIFAR-100 numbers as Papers with Code lists them (the paper's table numbers not stated there, hence
`table` = "Papers with Code").
"""

from __future__ import annotations

import io
from importlib import resources

import pandas as pd

from kdbench.core.errors import unknown_name

PAPERS = {
    "crd": "Tian, Krishnan, Isola 2020, Contrastive Representation Distillation (ICLR), Tables 1 and 2",
    "dkd": "Zhao et al. 2022, Decoupled Knowledge Distillation (CVPR), as in the mdistiller README",
    "hkd": "Zhou et al. 2021, Distilling Holistic Knowledge with Graph Neural Networks (ICCV), as in its README",
    "mdistiller": "Zhao et al. 2022 (DKD) and KD on ImageNet-1k, as in the mdistiller README's ImageNet table",
    "torchdistill": "Matsubara 2021, torchdistill (RRPR workshop), as in its ILSVRC2012 README",
    "dist": "Huang et al. 2022, Knowledge Distillation from A Stronger Teacher (NeurIPS), as in its README",
    "ctkd": "Li et al. 2023, Curriculum Temperature for Knowledge Distillation (AAAI), as in its README",
    "ls": "Sun et al. 2024, Logit Standardization in Knowledge Distillation (CVPR), as in its README",
    "reviewkd": "Chen et al. 2021, Distilling Knowledge via Knowledge Review (CVPR): its repository's ImageNet README, "
                "and CIFAR-100 as Papers with Code lists it",
    "dot": "Zhao et al. 2023, DOT: A Distillation-Oriented Trainer (ICCV), as in the mdistiller README",
    "ofd": "Heo et al. 2019, A Comprehensive Overhaul of Feature Distillation (ICCV): its repository's ImageNet README "
           "(its CIFAR-100 setups use WRN-28-4 and PyramidNet, which kdbench does not build)",
}
# `top5` is last: it came after the file's first rows (the CIFAR tables give top-1 only), blank where not given.
COLUMNS = ("paper", "table", "dataset", "teacher", "student", "method", "top1", "std", "runs", "epoch", "source",
           "note", "top5")
# Which of our metrics a published number is compared with; an `unstated` convention is compared with neither.
EPOCH_METRIC = {"last": "top1_last", "best": "top1_best"}
EPOCHS = (*EPOCH_METRIC, "unstated")
EPOCH_WORDS = {
    "last": "accuracy after the last epoch",
    "best": "best test accuracy over all epochs",
    "unstated": "the paper does not say whether it reports the last or the best epoch",
}


def published_csv() -> str:
    """The shipped table as CSV text."""
    return resources.files(__name__).joinpath("published.csv").read_text(encoding="utf-8")


def load_published(paper: str | None = None) -> pd.DataFrame:
    """The published numbers (all papers, or one of PAPERS) as a DataFrame in the file's order.

    `top1`, `top5` and `std` are floats (top5 and std NaN where not given); `runs` is a nullable integer.

    >>> load_published("crd").query("student == 'cifar_resnet8x4' and method == 'crd'")["top1"].item()
    75.51
    """
    if paper is not None and paper not in PAPERS:
        raise unknown_name("paper", paper, PAPERS)
    df = pd.read_csv(io.StringIO(published_csv()), dtype={c: str for c in COLUMNS}, keep_default_na=False)
    df["top1"] = df["top1"].astype(float)
    df["std"] = pd.to_numeric(df["std"].replace("", None), errors="raise").astype(float)
    df["top5"] = pd.to_numeric(df["top5"].replace("", None), errors="raise").astype(float)
    df["runs"] = pd.array([int(v) if v else None for v in df["runs"]], dtype="Int64")
    if paper is not None:
        df = df[df["paper"] == paper].reset_index(drop=True)
    return df
