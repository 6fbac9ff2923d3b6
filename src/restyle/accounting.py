"""The teacher's bill after a run, beside the estimate made before it (results/estimate.csv).

Every teacher stage writes an accounting CSV (`restyle.teacher.Session`); `compare` sums them per
stage and sets them beside the estimate: requests, prompt tokens, completion tokens (the
estimate's is the `max_tokens` bound) and cost, estimated and actual, with a TOTAL row. A cost is
empty (unknown) where a price is missing, in a stage and in the total alike.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

TOTAL = "TOTAL"
SUMMED = ["requests", "prompt_tokens", "completion_tokens", "cost"]
COLUMNS = ["stage", "basis", *(f"{c}{side}" for c in SUMMED for side in ("_estimated", ""))]


def _summed(frame: pd.DataFrame, stages: list[str]) -> pd.DataFrame:
    """SUMMED per stage of `stages`; 0 for a stage absent from `frame` (it asked nothing), an
    empty cost where one of its parts is."""
    grouped = frame.groupby("stage", sort=False)
    out = grouped[SUMMED].sum()
    out.loc[grouped["cost"].apply(lambda c: c.isna().any()), "cost"] = float("nan")
    return out.reindex(stages, fill_value=0)


def compare(estimated: pd.DataFrame, actual: pd.DataFrame,
            stage_group: Callable[[str], str]) -> pd.DataFrame:
    """COLUMNS per stage (the estimate's order, then stages it did not foresee) and TOTAL;
    `actual` is the accounting CSVs' rows, each counted under the estimate's stage
    `stage_group` gives it (`report.teacher_bill` says which)."""
    est = estimated[~estimated.stage.str.startswith(TOTAL)]  # its own totals are left out
    act = actual.reindex(columns=["stage", *SUMMED])  # no accounting file at all: no columns
    act = act.assign(stage=act.stage.map(stage_group))
    stages = list(dict.fromkeys([*est.stage, *act.stage]))
    both = _summed(est, stages).join(_summed(act, stages), suffixes=("_estimated", ""))
    both.insert(0, "basis", est.set_index("stage")["basis"].reindex(stages).fillna(""))
    both.loc[TOTAL] = {"basis": "", **{c: None if both[c].isna().any() else both[c].sum()
                                       for c in both.columns[1:]}}
    return both.reset_index(names="stage")[COLUMNS]
