"""The report's rows: tidy metric tables joined with the run plan and the failure records.

Tidy tables have the columns of :data:`emsrbench.evaluate.COLUMNS`; later stages add optional
ones, read when present: ``segmenter`` (the affinity network behind a segmentation metric,
empty for image metrics), ``variant`` (an ablation of a method, empty for the method itself)
and ``ci_low`` / ``ci_high`` (a confidence interval of the value).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import EmsrError
from ..failures import Failure
from ..leaderboard import missing_and_flags, read_tidy
from ..metric_specs import sort_key

# The HR test volume's own segmentation scores: the upper bound, shown but never ranked.
REFERENCE = "hr"


def load_tidy(paths: list[str | Path]) -> pd.DataFrame:
    """The leaderboard's reader (none is fine: the page still builds), one row per key."""
    tidy = read_tidy(paths)
    tidy["scale"] = tidy["scale"].astype(int)
    key = ["method", "variant", "scale", "metric", "segmenter"]
    dup = tidy[tidy.duplicated(key)]
    if len(dup):
        r = dup.iloc[0]
        seg = f" ({r['segmenter']})" if r["segmenter"] else ""
        raise EmsrError(
            f"report: {r['method']} x{r['scale']} has '{r['metric']}'{seg} more than once in the metrics tables"
        )
    return tidy


@dataclass(frozen=True)
class Cell:
    value: float
    note: str = ""
    ci_low: float = math.nan
    ci_high: float = math.nan
    tie: str = ""  # "best" | "tied" | "worse" | "": paired bootstrap against the best (emsrbench.leaderboard.ties)


@dataclass
class Row:
    """One method (or ablation variant) at one scale, as the leaderboard shows it."""

    method: str
    display_name: str
    family: str
    preset: str
    scale: int
    variant: str = ""
    status: str = "ok"  # ok | failed | not run
    cells: dict = field(default_factory=dict)  # (metric, segmenter) -> Cell
    failures: list = field(default_factory=list)  # Failure records that concern this row

    def value(self, metric: str, segmenter: str = "") -> float:
        cell = self.cells.get((metric, segmenter))
        return math.nan if cell is None else cell.value

    @property
    def reference(self) -> bool:
        return self.method == REFERENCE

    @property
    def label(self) -> str:
        if self.reference:
            return "HR (upper bound)"
        return f"{self.display_name} [{self.variant}]" if self.variant else self.display_name


@dataclass
class Planned:
    """What the plan says should be on the page: methods (name -> display name, family,
    preset: the run's or its own from ``method_presets``)."""

    methods: dict
    scales: list
    preset: str


def build_rows(tidy: pd.DataFrame, planned: Planned, failures: list[Failure]) -> list[Row]:
    """Every planned method x scale (ok, failed or not run) plus every variant that has rows."""
    rows = {}
    for (method, variant, scale), g in tidy.groupby(["method", "variant", "scale"], sort=False):
        first = g.iloc[0]
        row = Row(method, first["display_name"], first["family"], first["preset"], int(scale), variant)
        for r in g.itertuples():
            row.cells[(r.metric, r.segmenter)] = Cell(r.value, r.note, r.ci_low, r.ci_high, r.tie)
        rows[(method, variant, int(scale))] = row
    for method, (display, family, preset) in planned.methods.items():
        for scale in planned.scales:
            row = rows.get((method, "", int(scale)))
            concerned = [f for f in failures if f.concerns(method, scale) and f.wildcards.get("variant", "") == ""]
            if row is None:
                row = Row(method, display, family, preset, int(scale), status="failed" if concerned else "not run")
                rows[(method, "", int(scale))] = row
            row.failures = concerned
    for row in rows.values():
        if row.variant:
            row.failures = [
                f for f in failures if f.concerns(row.method, row.scale) and f.wildcards.get("variant") == row.variant
            ]
    return sorted(rows.values(), key=_order)


def _order(row: Row):
    psnr = row.value("psnr")
    return (
        row.scale,
        row.status != "ok",
        bool(row.variant),
        not row.reference,
        -psnr if not math.isnan(psnr) else math.inf,
        row.label,
    )


def columns(rows: list[Row], scale: int | None = None) -> list[tuple[str, str]]:
    """The (metric, segmenter) columns that any row (at ``scale``) has, in display order."""
    keys = {k for r in rows if scale is None or r.scale == scale for k in r.cells}
    return sorted(keys, key=lambda k: (sort_key(k[0])[0], k[1], sort_key(k[0])[1:]))


def as_tidy(rows: list[Row]) -> pd.DataFrame:
    """The cells of the rows that ran, one tidy record each (what emsrbench.no_signal reads)."""
    recs = [
        {
            "method": r.method,
            "variant": r.variant,
            "scale": r.scale,
            "metric": m,
            "segmenter": seg,
            "value": c.value,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "tie": c.tie or "",
        }
        for r in rows
        if r.status == "ok"
        for (m, seg), c in r.cells.items()
    ]
    return pd.DataFrame(
        recs, columns=["method", "variant", "scale", "metric", "segmenter", "value", "ci_low", "ci_high", "tie"]
    )


def flags(tidy: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(missing-value reasons per metric, per-row flags): the Markdown leaderboard's lists."""
    return missing_and_flags(tidy)
