"""Which runs were made by the code that is here now: by default a table averages only those, and says how many
records of older code it left out; with `all_code` the older ones are shown too, as rows of their own
(`kd @3f2a1c`), never averaged with the current code's runs.

A record's code is its `code.fingerprint` (kdbench.store.fingerprint), compared with the current fingerprint of its
method. A record without one (made before fingerprints), or of a method no longer registered, counts as older
code. A runs DataFrame without a `code_fingerprint` column at all (one a user built by hand, not
`kdbench.load_runs`) carries no code to judge and is taken as it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.report.leaderboard.runs import canon, is_missing

CODE_COLUMN = "code_fingerprint"
MARK_COLUMN = "_code_mark"
MARK_LENGTH = 6
UNKNOWN_CODE = "@unknown"


def current_fingerprints(methods: Iterable[str]) -> dict[str, str | None]:
    """Each method's current code fingerprint; None for a method that is not registered (any more)."""
    from kdbench.store.fingerprint import code_fingerprint

    out: dict[str, str | None] = {}
    for method in methods:
        try:
            out[method] = code_fingerprint(method)["fingerprint"]
        except UserError:
            out[method] = None
    return out


def code_mark(fingerprint: object, current: str | None) -> str:
    """"" for the current code; `@<fingerprint prefix>` for older code; `@unknown` without a fingerprint."""
    if is_missing(fingerprint) or not fingerprint:
        return UNKNOWN_CODE
    return "" if fingerprint == current else f"@{str(fingerprint)[:MARK_LENGTH]}"


def select_code(df: pd.DataFrame, all_code: bool = False,
                current: Callable[[Iterable[str]], dict[str, str | None]] = current_fingerprints,
                ) -> tuple[pd.DataFrame, list[str]]:
    """The prepared runs of the current code (or, with `all_code`, every run with older code's rows apart) and
    the footer lines that account for the older records."""
    df = df.copy()
    if CODE_COLUMN not in df.columns:
        df[MARK_COLUMN] = ""
        return df, []
    fingerprints = current(sorted({str(m) for m in df["method"] if not is_missing(m)}))
    df[MARK_COLUMN] = [code_mark(fp, fingerprints.get(str(m))) for m, fp in zip(df["method"], df[CODE_COLUMN],
                                                                               strict=True)]
    old = df[MARK_COLUMN] != ""
    n_old = int(old.sum())
    if not n_old:
        return df, []
    if not all_code:
        methods = ", ".join(sorted({str(m) for m in df.loc[old, "method"]}))
        return df[~old], [f"left out: {n_old} record(s) made by older code ({methods}); "
                          "`kdbench leaderboard --all-code` shows them"]
    df["_row_key"] = [canon([key, mark]) if mark else key for key, mark in zip(df["_row_key"], df[MARK_COLUMN],
                                                                              strict=True)]
    return df, [f"method @xxxxxx: {n_old} record(s) made by older code (its fingerprint); {UNKNOWN_CODE}: made "
                "before code fingerprints or by a method no longer registered; never averaged with current code"]
