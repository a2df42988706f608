"""Aggregate tidy metric rows into the leaderboard: methods as rows, scale x metric columns.

Segmentation rows (issue #5: a non-empty ``segmenter``) become columns
``<metric>@x<scale>/<segmenter>``; the HR reference (method ``hr``) has only those. The
Markdown has one image-metric table per scale and, after them, the segmentation tables laid
out like the study's Table 1 (rows = methods, columns = scale x segmenter VOI split).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .errors import EmsrError
from .evaluate import COLUMNS
from .io import atomic_path

# Quality metrics and their direction; the others (cost) are shown but never bolded.
HIGHER_IS_BETTER = {"psnr": True, "psnr_volume": True, "ssim": True, "lpips": False}
METRIC_ORDER = ["psnr", "psnr_volume", "ssim", "lpips", "parameters", "train_seconds", "infer_s_per_mp", "macs_per_mp",
                "peak_mem_mib"]
LABELS = {"psnr": "PSNR", "psnr_volume": "PSNR (vol)", "ssim": "SSIM", "lpips": "LPIPS",
          "parameters": "Params", "train_seconds": "Train s", "infer_s_per_mp": "Infer s/MP",
          "macs_per_mp": "GMAC/MP", "peak_mem_mib": "Peak MiB"}
# Segmentation scores: lower is better for all of them.
SEG_METRICS = ["voi_split", "voi_merge", "arand", "cremi_score"]
SEG_LABELS = {"voi_split": "VOI split", "voi_merge": "VOI merge", "arand": "ARAND", "cremi_score": "CREMI score"}
SEGMENTER_LABELS = {"superhuman": "Superhuman", "mala": "MALA"}
HR = "hr"  # the HR test volume, segmented as the upper bound


def _column(metric: str, scale, segmenter: str) -> str:
    return f"{metric}@x{scale}" + (f"/{segmenter}" if segmenter else "")


def _split(column: str) -> tuple[str, int, str]:
    metric, rest = column.split("@x", 1)
    scale, _, segmenter = rest.partition("/")
    return metric, int(scale), segmenter


# Columns that joined evaluate.COLUMNS later, with the value older tables get: they stay readable.
OPTIONAL = {"segmenter": "", "variant": "", "ci_low": math.nan, "ci_high": math.nan}
TEXT = ["method", "display_name", "family", "preset", "metric", "note", "segmenter", "variant"]


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
        tidy[col] = tidy[col].astype(object).where(tidy[col].notna(), "").astype(str)
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
    tidy = _with_segmenter(tidy)
    if "variant" in tidy.columns:  # an ablation variant is a row of its own: "GPEMSR [no_pod]"
        v = tidy["variant"].astype(object).fillna("").astype(str)
        tidy = tidy.assign(display_name=[f"{d} [{x}]" if x else d for d, x in zip(tidy["display_name"], v)])
    t = tidy.assign(column=[_column(m, s, g) for m, s, g in zip(tidy["metric"], tidy["scale"], tidy["segmenter"])])
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
    order += [_column(m, s, g) for s in scales for g in _segmenters(tidy) for m in SEG_METRICS]
    table = table.reindex(columns=[c for c in order if c in table.columns])
    first_psnr = next((c for c in table.columns if c.startswith("psnr@")), None)
    if first_psnr:
        table = table.sort_values(first_psnr, ascending=False)
    return table.reset_index()


def _segmenters(tidy: pd.DataFrame) -> list[str]:
    names = [g for g in _with_segmenter(tidy)["segmenter"].unique() if g]
    known = [g for g in SEGMENTER_LABELS if g in names]
    return known + sorted(set(names) - set(known))


def _fmt(metric: str, v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if metric == "macs_per_mp":
        return f"{v / 1e9:.3g}"
    if metric == "peak_mem_mib":
        return f"{v:.0f}"
    if metric == "parameters":
        return f"{v / 1e6:.3f} M" if v >= 1e4 else f"{int(v)}"
    if metric in ("psnr", "psnr_volume"):
        return f"{v:.2f}"
    if metric in ("voi_split", "voi_merge"):
        return f"{v:.3f}"
    if metric in ("ssim", "lpips", "arand", "cremi_score"):
        return f"{v:.4f}"
    return f"{v:.3g}"


def _segmentation_markdown(tidy: pd.DataFrame, table: pd.DataFrame) -> list[str]:
    """Table 1 of the study (VOI split per scale x segmenter), then every score per scale."""
    scales = sorted(tidy["scale"].unique())
    segmenters = _segmenters(tidy)
    seg_cols = [c for c in table.columns if "/" in c]
    if not seg_cols:
        return []
    rows = table[table[seg_cols].notna().any(axis=1)]
    rank = {HR: 0, "bicubic": 1}  # then the image-table order (PSNR)
    rows = rows.assign(_r=[rank.get(m, 2) for m in rows["method"]]).sort_values("_r", kind="stable").drop(columns="_r")
    others = rows["method"] != HR

    def cells(row, cols):
        out = []
        for c in cols:
            text = _fmt(_split(c)[0], row[c])
            if _split(c)[0] != "cremi_score":  # a split or merge alone rewards merging or splitting everything
                out.append(text)
                continue
            vals = rows.loc[others, c]
            best = vals.min() if vals.notna().any() else None
            out.append(f"**{text}**" if row["method"] != HR and best is not None and row[c] == best else text)
        return out

    def name(row):
        return "HR (upper bound)" if row["method"] == HR else row["display_name"]

    t1 = [(s, g) for s in scales for g in segmenters if _column("voi_split", s, g) in rows]
    lines = ["## Segmentation: VOI split (Table 1 layout)", "",
             "| Method | " + " | ".join(f"{s}x {SEGMENTER_LABELS.get(g, g)}" for s, g in t1) + " |",
             "|---|" + "---:|" * len(t1)]
    lines += [f"| {name(r)} | " + " | ".join(cells(r, [_column("voi_split", s, g) for s, g in t1])) + " |"
              for _, r in rows.iterrows()]
    lines.append("")
    for s in scales:
        for g in segmenters:
            cols = [_column(m, s, g) for m in SEG_METRICS if _column(m, s, g) in rows]
            if not cols:
                continue
            lines += [f"### {s}x, {SEGMENTER_LABELS.get(g, g)}", "",
                      "| Method | " + " | ".join(SEG_LABELS[_split(c)[0]] for c in cols) + " |",
                      "|---|" + "---:|" * len(cols)]
            lines += [f"| {name(r)} | " + " | ".join(cells(r, cols)) + " |" for _, r in rows.iterrows()]
            lines.append("")
    lines += ["Segmentation: affinities of each network (trained once on HR training data) on the HR, bicubic "
              "and every method's SR test volume; 2D fragments + waterz agglomeration (scoring function and "
              "threshold in the metrics.csv notes). VOI in bits (ground-truth 0 ignored); ARAND: adapted Rand "
              "error; CREMI score: sqrt(VOI sum x ARAND). Lower is better; a low VOI split alone can mean "
              "that everything was merged (high VOI merge), so only the best SR CREMI score is in bold; HR "
              "is the upper bound.", ""]
    return lines


def missing_and_flags(tidy: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(the reason of each missing metric, once; each row's flags, once per method x scale).

    Evaluate appends a row's flags to every note of that row, so a reason is compared
    without them: one line per metric, not one per combination of flags."""
    note = tidy["note"].fillna("").astype(str)
    missing = tidy[note.str.startswith("missing")]
    reasons = missing.assign(note=missing["note"].str.replace(r"; flag: [^;]+", "", regex=True))
    reasons = reasons[["metric", "note"]].drop_duplicates()
    variant = tidy["variant"].fillna("").astype(str) if "variant" in tidy.columns else ""
    flagged = (tidy.assign(flag=note.str.findall(r"flag: [^;]+"), variant=variant).explode("flag")
               .dropna(subset=["flag"])[["method", "variant", "scale", "flag"]].drop_duplicates())
    return ([f"{r.metric}: {r.note}" for r in reasons.itertuples()],
            [f"{r.method}{' [' + r.variant + ']' if r.variant else ''} x{r.scale}: {r.flag}" for r in flagged.itertuples()])


def markdown(tidy: pd.DataFrame) -> str:
    tidy = _with_segmenter(tidy)
    full = wide(tidy)
    scales = sorted(tidy["scale"].unique())
    image_cols = [c for c in full.columns if "@x" in c and "/" not in c]
    # The image tables hold the image metrics of the methods that have them (not the HR row).
    table = full[[c for c in full.columns if "/" not in c]]
    table = table[table[image_cols].notna().any(axis=1)] if image_cols else table.iloc[:0]
    lines = ["# emsrbench leaderboard", ""]
    for s in scales:
        cols = [c for c in table.columns if c.endswith(f"@x{s}")]
        if not cols:
            continue
        lines += [f"## {s}x", "", "| Method | Preset | " + " | ".join(LABELS[c.split("@")[0]] for c in cols) + " |",
                  "|---|---|" + "---:|" * len(cols)]
        best = {}
        for c in cols:
            metric = c.split("@")[0]
            if metric in HIGHER_IS_BETTER and table[c].notna().any():
                best[c] = table[c].max() if HIGHER_IS_BETTER[metric] else table[c].min()
        for _, row in table.iterrows():
            cells = []
            for c in cols:
                text = _fmt(c.split("@")[0], row[c])
                cells.append(f"**{text}**" if c in best and row[c] == best[c] else text)
            lines.append(f"| {row['display_name']} | {row['preset']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += _segmentation_markdown(tidy, full)
    notes, flags = missing_and_flags(tidy)
    if notes or flags:
        lines += ["## Missing values and flags", ""]
        lines += [f"- {line}" for line in notes + flags]
        lines.append("")
    lines += ["PSNR/SSIM/LPIPS on uint8 sections (data range 255), means over test sections; best in bold. "
              "Params: learned parameters; Train s: training wall time; Infer s/MP: inference seconds per "
              "output megapixel on the device named in metrics.csv.", ""]
    return "\n".join(lines)


def write(paths: list[str | Path], csv_path, md_path, tidy_path) -> pd.DataFrame:
    tidy = load_tidy(paths)
    with atomic_path(tidy_path) as tmp:
        tidy.to_csv(tmp, index=False)
    with atomic_path(csv_path) as tmp:
        wide(tidy).to_csv(tmp, index=False)
    with atomic_path(md_path) as tmp:
        Path(tmp).write_text(markdown(tidy))
    return tidy
