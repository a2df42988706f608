"""Segmentation tables that carry no information: found, said in words, never bolded.

Issue 15: at 16x every quick segmentation of the phantom, bicubic's included, merged the volume
into a few segments; the table still bolded one of them and marked the others tied, as if a
method had won something.  A table is one scale x segmentation network (the Markdown's
"### 16x, Superhuman", the report's segmenter column group); its rows are the methods, bicubic
included, the HR reference (method ``hr``) and ablation variants left out.

The rules, each conservative (they speak only where nothing can be read from the table):

* **collapse** (the whole table): HR's segmentation has ``M > 0`` segments (metric
  ``segments``), every method has a segment count, and every count is at most
  :data:`COLLAPSE_FRACTION` x the smaller of M and the ground truth's object count (metric
  ``gt_objects``, where the rows have it).  Whatever its scores, a segmentation with k segments
  keeps at most k objects apart: with a quarter of the objects or fewer it has merged at least
  three quarters of them, and the differences between such segmentations say how they merged,
  not which input was better.  (A tenth, the first bound, missed the default run's 16x
  Superhuman table: 1-14 segments for 73 objects, VOI merge 5.08-5.09 bits for every method,
  bicubic's single segment included, yet a bold "best" CREMI score 0.0001 under the rest.)
  The smaller reference keeps the rule quiet where HR itself is over-segmented (the quick
  networks give HR 20x the ground truth's objects on the phantom): a method is never called
  collapsed for having fewer segments than an over-split HR while it still has as many as
  there are objects.
* **flat column** (one ranked column, at least two methods with finite values): the values are
  equal as printed; or every method has a tie mark and none is "worse" (no method shown to
  differ from the best); or, where no method has a tie mark (no paired comparison was made),
  every value lies inside bicubic's own confidence interval.  A paired comparison outranks the
  intervals: a difference it finds significant is kept even where the intervals overlap.
* **indistinct** (the whole table): every ranked segmentation score of the table (ARAND, CREMI
  score, VOI sum where present) is a flat column.

A table with no signal bolds nothing, its hallucination columns included (they score the same
segmentations); a flat column in a table with signal bolds nothing in that column only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from .metric_specs import SEGMENTER_LABELS, fmt, is_finite, spec

HR = "hr"
COLLAPSE_FRACTION = 0.25
SEGMENT_COUNT = "segments"
GT_OBJECTS = "gt_objects"
# Tie marks (emsrbench.leaderboard.ties) that mean "not shown to differ from the best".
NOT_SHOWN_WORSE = {"best", "tied"}


@dataclass(frozen=True)
class Verdict:
    """Why one table (scale x segmenter) carries no signal: ``sentence`` is what the tables print."""

    scale: int
    segmenter: str
    rule: str  # "collapse" | "indistinct"
    sentence: str


@dataclass
class Findings:
    """The tables without signal and every column (scale, segmenter, metric) to leave unbolded."""

    tables: dict = field(default_factory=dict)  # (scale, segmenter) -> Verdict
    flat: set = field(default_factory=set)  # (scale, segmenter, metric)

    def verdict(self, scale: int, segmenter: str) -> Verdict | None:
        return self.tables.get((int(scale), segmenter))

    def silenced(self, scale: int, segmenter: str, metric: str) -> bool:
        """No bold in this column: its table has no signal, or the column separates nothing."""
        key = (int(scale), segmenter)
        return bool(segmenter) and (key in self.tables or key + (metric,) in self.flat)


def segmenter_label(segmenter: str) -> str:
    return SEGMENTER_LABELS.get(segmenter, segmenter)


def _count_text(n: float) -> str:
    return f"{round(n)}"


def collapse_sentence(
    scale: int, segmenter: str, counts: list[float], hr_count: float, gt_objects: float = math.nan
) -> str | None:
    """The collapse rule (module doc) on the segment counts of every method of one table; None
    if it does not apply."""
    if not (is_finite(hr_count) and hr_count > 0) or not counts or not all(is_finite(c) for c in counts):
        return None
    reference = min(hr_count, gt_objects) if is_finite(gt_objects) and gt_objects > 0 else hr_count
    if max(counts) > COLLAPSE_FRACTION * reference:
        return None
    low, high = min(counts), max(counts)
    merged = _count_text(low) if round(low) == round(high) else f"{_count_text(low)}-{_count_text(high)}"
    noun = "segment" if merged == "1" else "segments"
    truth = f", the ground truth {_count_text(gt_objects)} objects" if is_finite(gt_objects) else ""
    return (
        f"no signal at {scale}x with {segmenter_label(segmenter)}: every segmentation merges into {merged} "
        f"{noun}; HR has {_count_text(hr_count)}{truth}"
    )


@dataclass(frozen=True)
class Entry:
    """One method's value in one column."""

    method: str
    value: float
    ci_low: float = math.nan
    ci_high: float = math.nan
    tie: str = ""


def flat_reason(metric: str, entries: list[Entry]) -> str | None:
    """Why the column ``entries`` (the methods' values, HR left out) separates nothing (the
    flat-column rule of the module doc), or None if it may separate something."""
    if not spec(metric).better:
        return None
    finite = [e for e in entries if is_finite(e.value)]
    if len(finite) < 2:
        return None
    if len({fmt(metric, e.value) for e in finite}) == 1:
        return "all equal"
    marks = [e.tie for e in finite]
    if all(marks):
        return "every method tied with the best" if set(marks) <= NOT_SHOWN_WORSE else None
    if any(marks):
        return None  # a partial comparison: not enough to say there is nothing
    bicubic = next((e for e in finite if e.method == "bicubic"), None)
    if bicubic is None or not (is_finite(bicubic.ci_low) and is_finite(bicubic.ci_high)):
        return None
    if all(bicubic.ci_low <= e.value <= bicubic.ci_high for e in finite):
        return "every value inside bicubic's confidence interval"
    return None


def _entries(group: pd.DataFrame) -> list[Entry]:
    tie = group["tie"] if "tie" in group.columns else pd.Series("", index=group.index)
    lows = group["ci_low"] if "ci_low" in group.columns else pd.Series(math.nan, index=group.index)
    highs = group["ci_high"] if "ci_high" in group.columns else pd.Series(math.nan, index=group.index)
    return [
        Entry(m, float(v), float(lo), float(hi), str(t) if isinstance(t, str) else "")
        for m, v, lo, hi, t in zip(group["method"], group["value"], lows, highs, tie)
    ]


def _methods_only(tidy: pd.DataFrame) -> pd.DataFrame:
    """Segmentation rows of the methods: HR, ablation variants and image metrics left out."""
    variant = tidy["variant"].fillna("").astype(str) if "variant" in tidy.columns else ""
    segmenter = tidy["segmenter"].fillna("").astype(str) if "segmenter" in tidy.columns else ""
    keep = (segmenter != "") & (variant == "") & (tidy["method"] != HR)
    return tidy[keep]


def _segment_counts(table: pd.DataFrame) -> list[float]:
    """Every method's segment count, NaN for a method without one (older rows): one NaN keeps
    the collapse rule from speaking."""
    counted = table[table["metric"] == SEGMENT_COUNT].set_index("method")["value"].astype(float)
    return [float(counted.get(m, math.nan)) for m in table["method"].unique()]


def _count(rows: pd.DataFrame, metric: str, scale: int, segmenter: str) -> float:
    """The first ``metric`` value of ``rows`` at ``scale`` with ``segmenter``; NaN if none."""
    value = rows.loc[
        (rows["metric"] == metric) & (rows["scale"].astype(int) == scale) & (rows["segmenter"] == segmenter), "value"
    ]
    return float(value.iloc[0]) if len(value) else math.nan


def _indistinct_sentence(scale: int, segmenter: str, reasons: dict) -> str:
    said = "; ".join(f"{spec(m).label}: {why}" for m, why in reasons.items())
    return (
        f"no signal at {scale}x with {segmenter_label(segmenter)}: no method's score differs from the others ({said})"
    )


def find(tidy: pd.DataFrame) -> Findings:
    """The tables without signal and the flat columns of ``tidy`` (the leaderboard's tidy rows,
    with optional ``segmenter``, ``variant``, ``ci_low``, ``ci_high`` and ``tie`` columns)."""
    out = Findings()
    if "segmenter" not in tidy.columns or tidy.empty:
        return out
    methods = _methods_only(tidy)
    hr = tidy[tidy["method"] == HR]
    for (scale, segmenter), table in methods.groupby(["scale", "segmenter"], sort=True):
        scale = int(scale)
        reasons = {}
        for metric, column in table.groupby("metric", sort=False):
            why = flat_reason(metric, _entries(column))
            if why:
                out.flat.add((scale, segmenter, metric))
                if spec(metric).group == "segmentation":
                    reasons[metric] = why
        # every row of a table is scored against the same ground truth: any row's count is its count
        truth = _count(tidy, GT_OBJECTS, scale, segmenter)
        sentence = collapse_sentence(
            scale, segmenter, _segment_counts(table), _count(hr, SEGMENT_COUNT, scale, segmenter), truth
        )
        if sentence:
            out.tables[(scale, segmenter)] = Verdict(scale, segmenter, "collapse", sentence)
            continue
        ranked = {m for m in table["metric"].unique() if spec(m).group == "segmentation" and spec(m).better}
        if ranked and ranked <= set(reasons):
            out.tables[(scale, segmenter)] = Verdict(
                scale, segmenter, "indistinct", _indistinct_sentence(scale, segmenter, reasons)
            )
    return out


def capitalised(sentence: str) -> str:
    return sentence[:1].upper() + sentence[1:]
