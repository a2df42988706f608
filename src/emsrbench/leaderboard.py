"""Aggregate tidy metric rows into the leaderboard: methods as rows, scale x metric columns."""

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


def load_tidy(paths: list[str | Path]) -> pd.DataFrame:
    frames = []
    for p in paths:
        df = pd.read_csv(p, keep_default_na=True)
        missing = set(COLUMNS) - set(df.columns)
        if missing:
            raise EmsrError(f"{p}: not a metrics table (missing columns {sorted(missing)})")
        frames.append(df[COLUMNS])
    if not frames:
        raise EmsrError("leaderboard: no metric files")
    return pd.concat(frames, ignore_index=True)


def wide(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per method; columns '<metric>@x<scale>' ordered by scale then metric."""
    t = tidy.assign(column=lambda d: d["metric"] + "@x" + d["scale"].astype(str))
    keys = ["method", "display_name", "preset", "column"]
    dup = t[t.duplicated(keys)]
    if len(dup):
        r = dup.iloc[0]
        raise EmsrError(f"leaderboard: {r['method']} x{r['scale']} has '{r['metric']}' more than once")
    # unstack, unlike pivot_table, keeps metrics whose value is missing (NaN) as columns.
    table = t.set_index(keys)["value"].unstack("column")
    order = [f"{m}@x{s}" for s in sorted(tidy["scale"].unique()) for m in METRIC_ORDER]
    table = table.reindex(columns=[c for c in order if c in table.columns])
    first_psnr = next((c for c in table.columns if c.startswith("psnr@")), None)
    if first_psnr:
        table = table.sort_values(first_psnr, ascending=False)
    return table.reset_index()


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
    if metric in ("ssim", "lpips"):
        return f"{v:.4f}"
    return f"{v:.3g}"


def markdown(tidy: pd.DataFrame) -> str:
    table = wide(tidy)
    scales = sorted(tidy["scale"].unique())
    lines = ["# emsrbench leaderboard", ""]
    for s in scales:
        cols = [c for c in table.columns if c.endswith(f"@x{s}")]
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
    notes = tidy[tidy["note"].fillna("").str.startswith("missing")][["metric", "note"]].drop_duplicates()
    flags = (tidy.assign(flag=tidy["note"].fillna("").str.findall(r"flag: [^;]+")).explode("flag")
             .dropna(subset=["flag"])[["method", "scale", "flag"]].drop_duplicates())
    if len(notes) or len(flags):
        lines += ["## Missing values and flags", ""]
        lines += [f"- {r.metric}: {r.note}" for r in notes.itertuples()]
        lines += [f"- {r.method} x{r.scale}: {r.flag}" for r in flags.itertuples()]
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
