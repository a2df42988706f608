"""Aggregate tidy metric rows into the leaderboard: methods as rows, scale x metric columns.

Segmentation rows (issue #5: a non-empty ``segmenter``), hallucination scores (issue #7) among
them, become columns ``<metric>@x<scale>/<segmenter>``; the HR reference (method ``hr``) has
only those. The
Markdown has one image-metric table per scale and, after them, the segmentation tables laid
out like the study's Table 1 (rows = methods, columns = scale x segmenter VOI split), then the
hallucination tables per scale and segmenter. A scale x segmenter table that carries no signal
(:mod:`emsrbench.no_signal`: every segmentation collapsed, or no ranked score separates the
methods) bolds nothing and says why under its heading.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from .errors import EmsrError
from .evaluate import COLUMNS, INFERRED_IN
from .io import atomic_path
from .metric_specs import (
    SEGMENTER_LABELS,
    best_value,
    fmt,
    is_finite,
    keys,
    reason_clause,
    spec,
)
from .no_signal import COLLAPSE_FRACTION, Findings, capitalised
from .no_signal import find as find_no_signal
from .published import Comparison


def direction(metric: str) -> int:
    """+1 higher is better, -1 lower is better, 0 not ranked (emsrbench.metric_specs)."""
    return spec(metric).better


# Tie marks (column ``tie``, emsrbench.stats.sidecar.tie_marks): a value tied with the best
# carries TIE_MARK in the Markdown and a ``<column>:tie`` column in the wide CSV.
TIE_MARK = "≈"
TIES = ("best", "tied", "worse")
# Image-table columns: quality, then cost (stage-I metrics appear only in ablation tables).
METRIC_ORDER = keys("image") + keys("cost")
SEG_METRICS = keys("segmentation")
HALLUCINATION_METRICS = keys("hallucination")
HR = "hr"  # the HR test volume, segmented as the upper bound


def _column(metric: str, scale, segmenter: str) -> str:
    return f"{metric}@x{scale}" + (f"/{segmenter}" if segmenter else "")


def _split(column: str) -> tuple[str, int, str]:
    metric, rest = column.split("@x", 1)
    scale, _, segmenter = rest.partition("/")
    return metric, int(scale), segmenter


# Columns that joined evaluate.COLUMNS later, with the value older tables get: they stay readable.
OPTIONAL = {"segmenter": "", "variant": "", "ci_low": math.nan, "ci_high": math.nan, "tie": ""}
TEXT = ["method", "display_name", "family", "preset", "metric", "note", "segmenter", "variant", "tie"]


def read_tidy(paths: list[str | Path]) -> pd.DataFrame:
    """Concatenate tidy metric tables (evaluate.COLUMNS; optional columns filled); an empty
    frame for no paths. Text columns are strings ("" for empty), numbers numeric."""
    frames = []
    for p in paths:
        try:
            df = pd.read_csv(p)
        except (OSError, ValueError) as err:
            raise EmsrError(f"{p}: not a readable metrics table ({err})") from None
        missing = set(COLUMNS) - set(OPTIONAL) - set(df.columns)
        if missing:
            raise EmsrError(f"{p}: not a metrics table (missing columns {sorted(missing)})")
        for col, default in OPTIONAL.items():
            if col not in df.columns:
                df[col] = default
        frames.append(df[COLUMNS])
    tidy = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)
    for col in TEXT:
        tidy[col] = _text(tidy[col])
    for col in ("value", "ci_low", "ci_high"):
        tidy[col] = pd.to_numeric(tidy[col], errors="coerce")
    return tidy


def load_tidy(paths: list[str | Path]) -> pd.DataFrame:
    """The leaderboard's rows: :func:`read_tidy` of at least one table."""
    if not paths:
        raise EmsrError("leaderboard: no metric files")
    return read_tidy(paths)


def _with_segmenter(tidy: pd.DataFrame) -> pd.DataFrame:
    seg = tidy["segmenter"].astype(object).fillna("").astype(str) if "segmenter" in tidy.columns else ""
    return tidy.assign(segmenter=seg)


def wide(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per method; columns '<metric>@x<scale>' ordered by scale then metric."""
    t = _keyed(tidy)
    keys = ["method", "display_name", "preset", "column"]
    dup = t[t.duplicated(keys)]
    if len(dup):
        r = dup.iloc[0]
        by = f" ({r['segmenter']})" if r["segmenter"] else ""
        raise EmsrError(f"leaderboard: {r['method']} x{r['scale']} has '{r['metric']}'{by} more than once")
    # unstack, unlike pivot_table, keeps metrics whose value is missing (NaN) as columns.
    table = t.set_index(keys)["value"].unstack("column")
    scales = sorted(tidy["scale"].unique())
    order = [f"{m}@x{s}" for s in scales for m in METRIC_ORDER]
    # per scale: the segmentation scores of every segmenter, then their hallucination scores
    order += [
        _column(m, s, g)
        for s in scales
        for group in (SEG_METRICS, HALLUCINATION_METRICS)
        for g in _segmenters(tidy)
        for m in group
    ]
    table = table.reindex(columns=[c for c in order if c in table.columns])
    first_psnr = next((c for c in table.columns if c.startswith("psnr@")), None)
    if first_psnr:
        table = table.sort_values(first_psnr, ascending=False)
    return table.reset_index()


def _keyed(tidy: pd.DataFrame) -> pd.DataFrame:
    """``tidy`` with the wide table's row names (an ablation variant is a row of its own:
    "GPEMSR [no_pod]") and a ``column`` of its wide column."""
    tidy = _with_segmenter(tidy)
    if "variant" in tidy.columns:
        v = tidy["variant"].astype(object).fillna("").astype(str)
        tidy = tidy.assign(display_name=[f"{d} [{x}]" if x else d for d, x in zip(tidy["display_name"], v)])
    return tidy.assign(column=[_column(m, s, g) for m, s, g in zip(tidy["metric"], tidy["scale"], tidy["segmenter"])])


def _note_lookup(tidy: pd.DataFrame) -> dict:
    """(method, wide row name, wide column) -> the note of that value (its reason when it is
    not a finite number)."""
    t = _keyed(tidy)
    return {(r.method, r.display_name, r.column): str(r.note) for r in t.itertuples()}


def _cell_text(row, column: str, notes: dict, ties: dict | None = None) -> str:
    """A value as the Markdown prints it: a non-finite one with its reason ("inf (identical)")
    and never a tie mark (no comparison is made with it)."""
    value = row[column]
    text = fmt(_split(column)[0], value, notes.get((row["method"], row["display_name"], column), ""))
    return text + (_tie_suffix(ties, row, column) if ties and is_finite(value) else "")


def _segmenters(tidy: pd.DataFrame) -> list[str]:
    names = [g for g in _with_segmenter(tidy)["segmenter"].unique() if g]
    known = [g for g in SEGMENTER_LABELS if g in names]
    return known + sorted(set(names) - set(known))


def _reference_first(table: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """The rows with a value in ``cols``: HR (the upper bound) first, bicubic, then the
    image-table order (PSNR)."""
    rows = table[table[cols].notna().any(axis=1)]
    rank = {HR: 0, "bicubic": 1}
    return rows.assign(_r=[rank.get(m, 2) for m in rows["method"]]).sort_values("_r", kind="stable").drop(columns="_r")


def _row_name(row) -> str:
    return "HR (upper bound)" if row["method"] == HR else row["display_name"]


def _scored_cells(
    rows: pd.DataFrame, row, cols: list[str], notes: dict, ties: dict | None = None, findings: Findings | None = None
) -> list[str]:
    """``row``'s cells in ``cols``: the best finite SR value of a ranked column in bold (HR,
    the upper bound, never; nor a column that ``findings`` silences: no signal), tie marks
    where ``ties`` has them."""
    others = rows["method"] != HR
    out = []
    for c in cols:
        metric, scale, segmenter = _split(c)
        text = _cell_text(row, c, notes, ties)
        silenced = findings is not None and findings.silenced(scale, segmenter, metric)
        best = None if silenced else best_value(metric, rows.loc[others, c])
        out.append(f"**{text}**" if row["method"] != HR and best is not None and row[c] == best else text)
    return out


def _scale_segmenter_table_head(findings: Findings, scale: int, segmenter: str, cols: list[str]) -> list[str]:
    """Heading and header of the table of the metric columns ``cols`` of one scale x segmenter,
    with the sentence under the heading when the table carries no signal (emsrbench.no_signal)."""
    verdict = findings.verdict(scale, segmenter)
    no_signal = [f"*{capitalised(verdict.sentence)}. Nothing in this table is bold.*", ""] if verdict else []
    return [
        f"### {scale}x, {SEGMENTER_LABELS.get(segmenter, segmenter)}",
        "",
        *no_signal,
        "| Method | " + " | ".join(spec(_split(c)[0]).label for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]


def _own_rows(table: pd.DataFrame, tidy: pd.DataFrame) -> dict[str, pd.Series]:
    """method -> its row of the wide ``table`` (its own model: not an ablation variant, not HR)."""
    own = tidy[(_text(tidy["variant"]) == "") & (tidy["method"] != HR)] if "variant" in tidy.columns else tidy
    names = dict(zip(own["method"], own["display_name"]))
    return {r["method"]: r for _, r in table.iterrows() if names.get(r["method"]) == r["display_name"]}


def _published_lines(
    comparison: Comparison, ours: dict[str, pd.Series], t1: list[tuple[int, str]]
) -> dict[str, list[str]]:
    """The published rows of the Table 1 layout by the method whose row (``ours``) they follow
    ("": the methods this run has no row of, shown last), each cell the published value and
    ours - published."""
    shown, _ = comparison.columns_in(t1)
    lines: dict[str, list[str]] = {}
    for method in comparison.reference.methods:
        row = ours.get(method)
        cells = []
        for s, g in t1:
            value = comparison.value(method, s, g) if (s, g) in shown else None
            mine = math.nan if row is None else row[_column("voi_split", s, g)]
            cells.append("" if value is None else comparison.cell_text(value, mine))
        if not any(cells):
            continue
        name = row["display_name"] if row is not None else comparison.reference.row_name(method)
        lines.setdefault(method if row is not None else "", []).append(
            f"| {comparison.row_label(name)} | " + " | ".join(cells) + " |"
        )
    return lines


def _segmentation_markdown(tidy: pd.DataFrame, table: pd.DataFrame, comparison: Comparison | None = None) -> list[str]:
    """Table 1 of the study (VOI split per scale x segmenter), with the ``comparison``'s published
    rows after ours, then every score per scale."""
    scales = sorted(tidy["scale"].unique())
    segmenters = _segmenters(tidy)
    seg_cols = [c for c in table.columns if "/" in c]
    if not seg_cols:
        return []
    rows = _reference_first(table, seg_cols)
    ties = _tie_lookup(tidy)
    notes = _note_lookup(tidy)
    findings = find_no_signal(tidy)

    def cells(row, cols):
        return _scored_cells(rows, row, cols, notes, ties, findings)

    t1 = [(s, g) for s in scales for g in segmenters if _column("voi_split", s, g) in rows]
    lines = [
        "## Segmentation: VOI split (Table 1 layout)",
        "",
        "| Method | " + " | ".join(f"{s}x {SEGMENTER_LABELS.get(g, g)}" for s, g in t1) + " |",
        "|---|" + "---:|" * len(t1),
    ]
    published = _published_lines(comparison, _own_rows(rows, tidy), t1) if comparison is not None else {}
    for _, r in rows.iterrows():
        lines.append(f"| {_row_name(r)} | " + " | ".join(cells(r, [_column("voi_split", s, g) for s, g in t1])) + " |")
        lines += published.get(r["method"], [])
    lines += published.get("", [])
    lines.append("")
    if comparison is not None:
        lines += [comparison.legend(comparison.columns_in(t1)[1]), ""]
    silent = [findings.verdict(s, g) for s, g in t1 if findings.verdict(s, g)]
    if silent:  # a VOI split of 0 here is a merge, not a merit: say so under the table that shows it
        lines += [f"- {capitalised(v.sentence)}." for v in silent] + [""]
    for s in scales:
        for g in segmenters:
            cols = [_column(m, s, g) for m in SEG_METRICS if _column(m, s, g) in rows]
            if not cols:
                continue
            lines += _scale_segmenter_table_head(findings, s, g, cols)
            lines += [f"| {_row_name(r)} | " + " | ".join(cells(r, cols)) + " |" for _, r in rows.iterrows()]
            lines.append("")
    lines += [
        "Segmentation: affinities of each network (trained once on HR training data) on the HR, bicubic "
        "and every method's SR test volume; 2D fragments + waterz agglomeration (scoring function and "
        "threshold in the metrics.csv notes). VOI in bits (ground-truth 0 ignored); ARAND: adapted Rand "
        "error; CREMI score: sqrt(VOI sum x ARAND). Lower is better; a low VOI split alone can mean "
        "that everything was merged (high VOI merge), so only ARAND and the CREMI score are ranked (best SR "
        "value in bold where the values differ); HR "
        "is the upper bound. Segments: 3D segments of the whole segmentation, not ranked. No signal (nothing "
        f"bold, said under the heading): every method's segmentation has at most {COLLAPSE_FRACTION:g} x HR's "
        "segments, or no ranked score of the table tells the methods apart (equal, all tied with the best, "
        "or, without tie marks, all inside bicubic's interval).",
        "",
    ]
    return lines


def _hallucination_markdown(tidy: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """One table per scale x segmenter: boundary precision / recall, invented / erased boundary
    density, orphan fraction; the best SR value of each in bold, HR first (the upper bound)."""
    cols_all = [c for c in table.columns if "/" in c and _split(c)[0] in HALLUCINATION_METRICS]
    if not cols_all:
        return []
    rows = _reference_first(table, cols_all)
    notes = _note_lookup(tidy)
    findings = find_no_signal(tidy)
    lines = ["## Hallucination", ""]
    for s in sorted(tidy["scale"].unique()):
        for g in _segmenters(tidy):
            cols = [_column(m, s, g) for m in HALLUCINATION_METRICS if _column(m, s, g) in rows]
            if not cols:
                continue
            lines += _scale_segmenter_table_head(findings, s, g, cols)
            lines += [
                f"| {_row_name(r)} | " + " | ".join(_scored_cells(rows, r, cols, notes, findings=findings)) + " |"
                for _, r in rows.iterrows()
            ]
            lines.append("")
    lines += [
        "Hallucination: boundaries of each segmentation against the ground truth, matched within the "
        "tolerance in the metrics.csv notes (ground-truth 0 not scored). Precision = 1 - invented / "
        "segmentation boundary length, recall = 1 - erased / ground-truth boundary length; invented / "
        "erased: boundary length in µm per µm² of labelled section area. Those four are not ranked: merging "
        "everything draws no boundary (precision 1, nothing invented), splitting everything misses none; "
        "their harmonic mean, boundary F1, is (higher is better). Orphan fraction: share of segments with "
        "no segment of IoU >= the threshold in the notes in the same network's segmentation of HR (lower is "
        "better; n/a for HR itself). Best SR value in bold where the values differ; HR is the upper bound, "
        "not ranked.",
        "",
    ]
    return lines


def missing_and_flags(tidy: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the reason of each missing or non-finite metric value, once; each row's flags, once per
    method x scale).

    Evaluate appends a row's flags to every note of that row, so a reason is compared
    without them: one line per metric, not one per combination of flags."""
    note = tidy["note"].fillna("").astype(str)
    missing = tidy[note.str.startswith("missing")]
    reasons = missing.assign(note=missing["note"].str.replace(r"; flag: [^;]+", "", regex=True))
    reasons = reasons[["metric", "note"]].drop_duplicates()
    variant = tidy["variant"].astype(object).fillna("").astype(str) if "variant" in tidy.columns else ""
    flagged = (
        tidy.assign(flag=note.str.findall(r"flag: [^;]+"), variant=variant)
        .explode("flag")
        .dropna(subset=["flag"])[["method", "variant", "scale", "flag"]]
        .drop_duplicates()
    )
    return (
        [f"{r.metric}: {r.note}" for r in reasons.itertuples()] + non_finite_reasons(tidy),
        [f"{r.method}{' [' + r.variant + ']' if r.variant else ''} x{r.scale}: {r.flag}" for r in flagged.itertuples()],
    )


def non_finite_reasons(tidy: pd.DataFrame) -> list[str]:
    """One line per metric and reason of the values that are not finite numbers and not
    "missing" (listed already): the PSNR of identical images, scores of empty label sets,
    a score that is 0/0. The reason is the note's tagged clause (emsrbench.metric_specs
    REASON_TAGS), else the note without flags."""
    value = pd.to_numeric(tidy["value"], errors="coerce")
    note = tidy["note"].fillna("").astype(str)
    odd = ~value.apply(is_finite) & ~note.str.startswith("missing")
    lines = []
    for metric, v, n in zip(tidy.loc[odd, "metric"], value[odd], note[odd]):
        why = reason_clause(n) or re.sub(r"(^|; )flag: [^;]+", "", n).strip("; ") or "no reason recorded"
        lines.append(f"{metric} {fmt(metric, v)}: {why}")
    return list(dict.fromkeys(lines))


def devices(tidy: pd.DataFrame) -> list[str]:
    """One line per device and precision that ran inference, naming the method x scale rows
    timed on it.

    The device is the first field of the ``infer_s_per_mp`` note, the precision its
    ``SR inferred in`` field (evaluate writes both; older notes have no precision)."""
    rows = tidy[(tidy["metric"] == "infer_s_per_mp") & tidy["note"].notna()]
    by_device: dict[str, list[str]] = {}
    for r in rows.itertuples():
        fields = [f.strip() for f in str(r.note).split(";")]
        precision = next((f[len(INFERRED_IN) :] for f in fields if f.startswith(INFERRED_IN)), "")
        device = fields[0] + (f", {precision}" if precision else "")
        by_device.setdefault(device, []).append(f"{r.display_name} {r.scale}x")
    return [f"{device}: {', '.join(runs)}" for device, runs in by_device.items()]


def markdown(tidy: pd.DataFrame, comparison: Comparison | None = None) -> str:
    """The leaderboard's Markdown; ``comparison``: published rows in the Table 1 layout."""
    tidy = _with_segmenter(tidy)
    full = wide(tidy)
    scales = sorted(tidy["scale"].unique())
    image_cols = [c for c in full.columns if "@x" in c and "/" not in c]
    # The image tables hold the image metrics of the methods that have them (not the HR row).
    table = full[[c for c in full.columns if "/" not in c]]
    table = table[table[image_cols].notna().any(axis=1)] if image_cols else table.iloc[:0]
    lines = ["# emsrbench leaderboard", ""]
    ties = _tie_lookup(tidy)
    notes = _note_lookup(tidy)
    for s in scales:
        cols = [c for c in table.columns if c.endswith(f"@x{s}")]
        if not cols:
            continue
        lines += [
            f"## {s}x",
            "",
            "| Method | Preset | " + " | ".join(spec(c.split("@")[0]).label for c in cols) + " |",
            "|---|---|" + "---:|" * len(cols),
        ]
        best = {c: best_value(c.split("@")[0], table[c]) for c in cols}
        for _, row in table.iterrows():
            cells = []
            for c in cols:
                text = _cell_text(row, c, notes, ties)
                cells.append(f"**{text}**" if best[c] is not None and row[c] == best[c] else text)
            lines.append(f"| {row['display_name']} | {row['preset']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _segmentation_markdown(tidy, full, comparison)
    lines += _hallucination_markdown(tidy, full)
    notes, flags = missing_and_flags(tidy)
    if notes or flags:
        lines += ["## Missing or non-finite values and flags", ""]
        lines += [f"- {line}" for line in notes + flags]
        lines.append("")
    lines += [
        "PSNR/SSIM/LPIPS on uint8 sections (data range 255), means over test sections; best in bold. "
        "Params: learned parameters; Train s: training wall time; Infer s/MP: inference seconds per "
        "output megapixel on the device below.",
        "",
    ]
    if "tie" in tidy.columns and (_text(tidy["tie"]) != "").any():
        lines += [tie_legend(tidy["note"]), ""]
    ran_on = devices(tidy)
    if ran_on:
        lines += ["## Devices (inference timings)", ""] + [f"- {line}" for line in ran_on] + [""]
    return "\n".join(lines)


TIE_LEGEND = (
    f"{TIE_MARK} tied: not shown to differ from the best (paired block bootstrap, Holm-corrected over "
    "the column). The best of a column (scale x metric x segmenter) is the best value among the methods, "
    "bicubic included, HR and ablation variants left out; every other method's difference to it (same "
    "resampled test blocks for both, see metrics.csv notes for blocks, resamples and confidence) gets a "
    "bootstrap p-value, Holm-corrected over the column's comparisons, and is tied where that is above "
    "1 - confidence. Tied is not equal: on a few correlated sections a real difference can stay unshown. "
    "A difference without an honest interval is not marked. Ranked metrics only: PSNR, SSIM, LPIPS, "
    "ARAND, CREMI score (VOI split and merge alone are not ranked). Column tie in metrics.csv: best / "
    "tied / worse."
)


def tie_legend(notes) -> str:
    """:data:`TIE_LEGEND` and the block lengths the rows' ``notes`` name."""
    from .stats.intervals import block_lengths

    used = block_lengths(notes)
    return TIE_LEGEND + (f" Block length used: {used}." if used else "")


def _text(col: pd.Series) -> pd.Series:
    """A text column with "" for missing values (tables built in code may hold NaN)."""
    return col.astype(object).where(col.notna(), "").astype(str)


def _tie_lookup(tidy: pd.DataFrame) -> dict:
    """(method, display name, wide column) -> tie mark, for the method rows (no variants)."""
    if "tie" not in tidy.columns:
        return {}
    t = _with_segmenter(tidy)
    marked = _text(t["tie"]) != ""
    t = t[marked & (_text(t["variant"]) == "")] if "variant" in t.columns else t[marked]
    return {(r.method, r.display_name, _column(r.metric, r.scale, r.segmenter)): r.tie for r in t.itertuples()}


def _tie_suffix(ties: dict, row, column: str) -> str:
    return f" {TIE_MARK}" if ties.get((row["method"], row["display_name"], column)) == "tied" else ""


def ties(tidy: pd.DataFrame, sidecar_paths: list[str | Path]) -> pd.Series:
    """The ``tie`` column of ``tidy`` from the bootstrap sidecars (emsrbench.stats.sidecar).

    Compared per scale x metric x segmenter: the leaderboard's methods (those with rows in
    ``tidy``), bicubic included, HR (the upper bound) and ablation variants left out; metrics with
    a direction only (:func:`direction`). Rows without a comparison get ""."""
    from .stats import sidecar

    methods = set(tidy.loc[tidy["variant"] == "", "method"]) - {HR}
    loaded = [sidecar.read(p) for p in sidecar_paths]
    marks = sidecar.tie_marks([sc for sc in loaded if sc.method in methods and not sc.variant], direction)
    keys = zip(tidy["method"], tidy["variant"], tidy["scale"].astype(int), tidy["metric"], tidy["segmenter"])
    return pd.Series([marks.get(k, ("", None))[0] for k in keys], index=tidy.index, dtype=object)


def wide_with_ties(tidy: pd.DataFrame) -> pd.DataFrame:
    """:func:`wide`, then a ``<column>:tie`` column (best / tied / worse) per column that has marks."""
    table = wide(tidy)
    lookup = _tie_lookup(tidy)
    for c in [c for c in table.columns if "@x" in c]:
        marks = [lookup.get((m, d, c), "") for m, d in zip(table["method"], table["display_name"])]
        if any(marks):
            table[f"{c}:tie"] = marks
    return table


PUBLISHED_PRESET = "published"  # the preset column of a published row in the wide CSV
DIFFERENCE_SUFFIX = ":ours_minus_published"


def with_published(table: pd.DataFrame, tidy: pd.DataFrame, comparison: Comparison) -> pd.DataFrame:
    """The wide ``table`` and, after it, one row per published row of ``comparison`` with its
    values in the run's columns, ``<column>:ours_minus_published`` (empty where not comparable),
    ``reference`` (the reference's label; empty on the run's rows) and ``source`` (paper, table,
    row)."""
    ref = comparison.reference
    ours = _own_rows(table, tidy)
    records = []
    for method in ref.methods:
        row = ours.get(method)
        rec = {
            "method": method,
            "display_name": comparison.row_label(row["display_name"] if row is not None else ref.row_name(method)),
            "preset": PUBLISHED_PRESET,
            "reference": comparison.label,
            "source": f"{ref.paper}, {ref.table}, row '{ref.row_name(method)}'",
        }
        for v in (v for v in ref.values if v.method == method):
            column = _column(ref.metric, v.scale, v.segmenter)
            if column not in table.columns:
                continue
            rec[column] = v.value
            rec[column + DIFFERENCE_SUFFIX] = comparison.difference(v, math.nan if row is None else row[column])
        records.append(rec)
    return pd.concat([table.assign(reference="", source=""), pd.DataFrame(records)], ignore_index=True)


def write(
    paths: list[str | Path],
    csv_path,
    md_path,
    tidy_path,
    bootstrap: list[str | Path] | None = None,
    own_variant: str = "",
    published: dict | None = None,
) -> pd.DataFrame:
    """``bootstrap``: the sidecars of the rows (tie marks); none: no tie marks. ``own_variant``:
    the variant name of a method's own model (GPEMSR's "full", whose stage-I rows carry it):
    those rows join the method's own row. ``published``: the published rows to show beside the
    run's (:meth:`emsrbench.plan.Plan.published_rows`; {} or None: none); they are not written
    to the tidy table."""
    tidy = load_tidy(paths)
    if own_variant:
        tidy.loc[tidy["variant"] == own_variant, "variant"] = ""
    if bootstrap:
        tidy["tie"] = ties(tidy, bootstrap)
    comparison = Comparison.from_params(published)
    with atomic_path(tidy_path) as tmp:
        tidy.to_csv(tmp, index=False)
    table = wide_with_ties(tidy)
    with atomic_path(csv_path) as tmp:
        (table if comparison is None else with_published(table, tidy, comparison)).to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(markdown(tidy, comparison))
    return tidy
