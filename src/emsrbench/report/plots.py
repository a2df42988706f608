"""The report's figures (seaborn on matplotlib's Agg backend), as PNG bytes.

A figure whose data is absent (no segmentation metrics yet, a single method) is skipped with
the reason, which the page prints instead of an empty plot. Values that are not finite
numbers (the PSNR of identical images, scores of empty label sets) are left out of bars,
points and axis limits, and each caption names those of its metrics with their reason; an
interval that is not finite or does not contain its estimate is not drawn.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # no display on cluster nodes; also keeps figures off any GUI event loop
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..metric_specs import fmt, sort_key, spec  # noqa: E402
from .data import Row  # noqa: E402

DPI = 100
# PSNR over the whole volume repeats the per-section PSNR in a bar chart; the table has it.
BAR_SKIP = {"psnr_volume", "voi_sum"}
FRAME_COLUMNS = ["label", "method", "scale", "metric", "segmenter", "value", "ci_low", "ci_high", "note"]


@dataclass(frozen=True)
class Plot:
    name: str  # file stem under the figures folder
    title: str
    caption: str
    png: bytes


def frame(rows: list[Row]) -> pd.DataFrame:
    """Long table of the leaderboard rows that ran, with VOI sum derived from split + merge;
    every value, finite or not (:func:`finite_and_not`)."""
    recs = []
    for r in rows:
        if r.status != "ok" or r.variant:
            continue
        base = {"label": r.label, "method": r.method, "scale": f"{r.scale}x"}
        for (metric, seg), c in r.cells.items():
            recs.append(
                {
                    **base,
                    "metric": metric,
                    "segmenter": seg,
                    "value": c.value,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "note": c.note,
                }
            )
        for seg in {s for (m, s) in r.cells if m == "voi_split"}:
            if ("voi_merge", seg) in r.cells and ("voi_sum", seg) not in r.cells:
                split, merge = r.cells[("voi_split", seg)], r.cells[("voi_merge", seg)]
                # a sum that is not finite inherits the reason of the part that is not
                why = split.note if not np.isfinite(split.value) else merge.note
                recs.append(
                    {
                        **base,
                        "metric": "voi_sum",
                        "segmenter": seg,
                        "value": split.value + merge.value,
                        "ci_low": np.nan,
                        "ci_high": np.nan,
                        "note": why,
                    }
                )
    return pd.DataFrame(recs, columns=FRAME_COLUMNS)


def finite_and_not(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows with a finite value, to draw; rows whose value is inf or NaN for a stated reason,
    to name in the captions). NaN values noted "missing: ..." are in neither: the tables and
    the list under them give their reason."""
    value = pd.to_numeric(df["value"], errors="coerce")
    finite = np.isfinite(value)
    missing = value.isna() & df["note"].fillna("").astype(str).str.startswith("missing")
    return df[finite], df[~finite & ~missing]


def _not_plotted(excluded: pd.DataFrame, metrics) -> str:
    """The caption's sentence on the values of ``metrics`` left out because they are not finite."""
    e = excluded[excluded["metric"].isin(list(metrics))]
    if e.empty:
        return ""
    items = [
        f"{r.label} {r.scale} {spec(r.metric).label}{' (' + r.segmenter + ')' if r.segmenter else ''} "
        f"{fmt(r.metric, r.value, r.note)}"
        for r in e.itertuples()
    ]
    return " Not plotted (not a finite number, see the notes): " + "; ".join(items) + "."


def _drawable_ci(d: pd.DataFrame) -> pd.Series:
    """Rows whose interval can be drawn: both ends finite and the estimate inside it (an interval
    that misses its estimate would need a negative error bar, which matplotlib refuses)."""
    lo, hi, v = (pd.to_numeric(d[c], errors="coerce") for c in ("ci_low", "ci_high", "value"))
    return np.isfinite(lo) & np.isfinite(hi) & (lo <= v) & (v <= hi)


def _ci_sentence(d: pd.DataFrame) -> str:
    """The caption's sentence on intervals not drawn although both ends are numbers."""
    lo, hi = (pd.to_numeric(d[c], errors="coerce") for c in ("ci_low", "ci_high"))
    odd = int((np.isfinite(lo) & np.isfinite(hi) & ~_drawable_ci(d)).sum())
    return f" {odd} interval(s) that do not contain their estimate are not drawn." if odd else ""


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (the report inlines them); the figure is closed."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _title(metric: str, seg: str) -> str:
    m = spec(metric)
    arrow = {1: " (higher is better)", -1: " (lower is better)"}.get(m.better, "")
    return f"{m.label}{' (' + seg + ')' if seg else ''}{arrow}"


def _bar_metric(metric: str) -> bool:
    return bool(spec(metric).better or spec(metric).group == "segmentation") and metric not in BAR_SKIP


def metric_bars(df: pd.DataFrame, order: list[str], excluded: pd.DataFrame) -> Plot | str:
    keys = [(m, s) for m, s in df[["metric", "segmenter"]].drop_duplicates().itertuples(index=False) if _bar_metric(m)]
    keys.sort(key=lambda k: (sort_key(k[0]), k[1]))
    if not keys:
        return "no quality metric has a finite value" + _not_plotted(excluded, excluded["metric"].unique())
    scales = sorted(df["scale"].unique(), key=lambda s: int(s[:-1]))
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    width = max(4.0, 0.55 * len(order) * max(1, len(scales)) + 1.5)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, 3.4 * nrows), squeeze=False)
    for i, (ax, (metric, seg)) in enumerate(zip(axes.flat, keys)):
        d = df[(df["metric"] == metric) & (df["segmenter"] == seg)]
        x_order = [o for o in order if o in set(d["label"])]
        sns.barplot(
            data=d,
            x="label",
            y="value",
            hue="scale",
            order=x_order,
            hue_order=scales,
            errorbar=None,
            ax=ax,
            palette="viridis",
        )
        if _drawable_ci(d).any():
            _bar_errors(ax, d, x_order, scales)
        ax.set_title(_title(metric, seg), fontsize=10)
        if i > 0 and ax.get_legend() is not None:
            ax.get_legend().remove()  # one legend for the figure: the scales are the same in every panel
        ax.set_xlabel("")
        ax.set_ylabel(spec(metric).unit)
        ax.tick_params(axis="x", rotation=30)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
        drawn = d[_drawable_ci(d)]  # the axis shows the whole of every error bar drawn
        lo = min(d["value"].min(), drawn["ci_low"].min()) if len(drawn) else d["value"].min()
        hi = max(d["value"].max(), drawn["ci_high"].max()) if len(drawn) else d["value"].max()
        if spec(metric).group == "image" and lo > 0:
            # PSNR differences of tenths of a dB vanish on a zero-based axis.
            pad = max(hi - lo, abs(hi) * 0.02) * 0.6
            ax.set_ylim(max(0.0, lo - pad), hi + pad)
    for ax in list(axes.flat)[len(keys) :]:
        ax.set_visible(False)
    fig.tight_layout()
    shown = df[df["metric"].map(_bar_metric)]
    return Plot(
        "metrics",
        "Metrics per method and scale",
        "One bar per method and scale; error bars are confidence intervals where the metrics carry them."
        + _ci_sentence(shown)
        + _not_plotted(excluded, [m for m in excluded["metric"].unique() if _bar_metric(m)]),
        figure_png(fig),
    )


def _bar_errors(ax, d: pd.DataFrame, x_order: list[str], scales: list[str]) -> None:
    d = d[_drawable_ci(d)]
    ci = {(r.label, r.scale): (r.value, r.ci_low, r.ci_high) for r in d.itertuples()}
    for container, scale in zip(ax.containers, scales):
        for bar in container:
            xi = int(round(bar.get_x() + bar.get_width() / 2))
            if not 0 <= xi < len(x_order) or (x_order[xi], scale) not in ci:
                continue
            v, lo, hi = ci[(x_order[xi], scale)]
            ax.errorbar(bar.get_x() + bar.get_width() / 2, v, yerr=[[v - lo], [hi - v]], color="black", capsize=3, lw=1)


def _scatter(ax, d: pd.DataFrame, x: str, y: str, order: list[str]) -> None:
    # intervals that cannot be drawn are dropped before the pivot: a point keeps its value
    d = d.assign(ci_low=d["ci_low"].where(_drawable_ci(d)), ci_high=d["ci_high"].where(_drawable_ci(d)))
    pts = d.pivot_table(index=["label", "scale"], columns="metric", values=["value", "ci_low", "ci_high"])
    pts.columns = [f"{a}:{b}" for a, b in pts.columns]
    both = [f"value:{x}", f"value:{y}"]
    pts = pts.dropna(subset=both).reset_index() if set(both) <= set(pts.columns) else pts.iloc[:0]
    ax.set_xlabel(_title(x, ""))
    ax.set_ylabel(_title(y, ""))
    if pts.empty:
        ax.text(0.5, 0.5, "no method has finite values of both", ha="center", va="center", transform=ax.transAxes)
        return
    sns.scatterplot(
        data=pts,
        x=f"value:{x}",
        y=f"value:{y}",
        hue="label",
        hue_order=[o for o in order if o in set(pts["label"])],
        style="scale",
        s=70,
        ax=ax,
        palette="tab10",
    )
    for axis, key in (("x", x), ("y", y)):
        lo, hi = pts.get(f"ci_low:{key}"), pts.get(f"ci_high:{key}")
        if lo is None or hi is None or not (lo.notna() & hi.notna()).any():
            continue
        ok = lo.notna() & hi.notna()
        v = pts.loc[ok, f"value:{key}"]
        err = np.vstack([v - lo[ok], hi[ok] - v])
        kw = {"xerr": err} if axis == "x" else {"yerr": err}
        ax.errorbar(pts.loc[ok, f"value:{x}"], pts.loc[ok, f"value:{y}"], fmt="none", ecolor="grey", lw=1, **kw)
    ax.legend(fontsize=7, loc="best")


def psnr_vs_voi(df: pd.DataFrame, order: list[str], excluded: pd.DataFrame) -> Plot | str:
    segs = sorted(df.loc[df["metric"] == "voi_sum", "segmenter"].unique())
    if not segs:
        return "no segmentation metrics (VOI split and merge) yet" + _not_plotted(excluded, ["voi_sum"])
    if not (df["metric"] == "psnr").any():
        return "no finite PSNR" + _not_plotted(excluded, ["psnr"])
    fig, axes = plt.subplots(1, len(segs), figsize=(5.5 * len(segs), 4.2), squeeze=False)
    for ax, seg in zip(axes.flat, segs):
        d = pd.concat([df[df["metric"] == "psnr"], df[(df["metric"] == "voi_sum") & (df["segmenter"] == seg)]])
        _scatter(ax, d, "psnr", "voi_sum", order)
        ax.set_title(f"segmentation by {seg}", fontsize=10)
    fig.tight_layout()
    return Plot(
        "psnr_vs_voi",
        "PSNR versus VOI sum",
        "Each point is a method at one scale; VOI sum = VOI split + VOI merge (bits) of the SR volume's "
        "segmentation against the ground truth. Down and to the right is better."
        + _ci_sentence(df[df["metric"] == "psnr"])
        + _not_plotted(excluded, ["psnr", "voi_sum"]),
        figure_png(fig),
    )


def pareto_front(cost, quality) -> np.ndarray:
    """Boolean mask of the points no other point dominates (cost lower is better, quality higher).

    A point is dominated when another is at least as good on both axes and strictly better on
    one; equal points do not dominate each other, so both stay on the front.
    """
    c = np.asarray(cost, dtype=float)
    q = np.asarray(quality, dtype=float)
    if c.shape != q.shape or c.ndim != 1:
        raise ValueError(f"pareto_front: cost {c.shape} and quality {q.shape} must be 1-D of one length")
    no_worse = (c[None, :] <= c[:, None]) & (q[None, :] >= q[:, None])  # [i, j]: j is no worse than i
    better = (c[None, :] < c[:, None]) | (q[None, :] > q[:, None])
    return ~(no_worse & better).any(axis=1)


# Device-independent cost first: MACs and parameters compare across machines, seconds do not.
COSTS = ("macs_per_mp", "parameters", "infer_s_per_mp")


def _front(ax, d: pd.DataFrame, cost: str) -> list[str]:
    """Draw the Pareto front of each scale on ``ax``; return 'scale: labels' lines."""
    pts = d.pivot_table(index=["label", "scale"], columns="metric", values="value").dropna(subset=[cost, "psnr"])
    lines = []
    pts = pts.reset_index()
    for scale in sorted(pts["scale"].unique(), key=lambda s: int(s[:-1])):
        g = pts[pts["scale"] == scale]
        on = g[pareto_front(g[cost].to_numpy(), g["psnr"].to_numpy())].sort_values([cost, "psnr"])
        # A staircase: from each front point, quality holds until the next (costlier, better) one.
        ax.step(on[cost], on["psnr"], where="post", color="black", lw=1, ls="--", zorder=1)
        ax.scatter(on[cost], on["psnr"], s=160, facecolors="none", edgecolors="black", lw=1.2, zorder=3)
        lines.append(f"{scale}: {', '.join(on['label'])}")
    return lines


def cost_vs_quality(df: pd.DataFrame, order: list[str], excluded: pd.DataFrame) -> Plot | str:
    costs = [c for c in COSTS if (df["metric"] == c).any()]
    if not costs or not (df["metric"] == "psnr").any():
        return "no finite cost or PSNR values" + _not_plotted(excluded, ["psnr", *COSTS])
    fig, axes = plt.subplots(1, len(costs), figsize=(5.5 * len(costs), 4.2), squeeze=False)
    fronts = []
    for ax, cost in zip(axes.flat, costs):
        d = df[df["metric"].isin([cost, "psnr"])]
        _scatter(ax, d, cost, "psnr", order)
        fronts.append(f"{spec(cost).label}: " + "; ".join(_front(ax, d, cost)))
        # bicubic has 0 parameters and near-0 time: symlog keeps it on a log-like axis.
        positive = df.loc[(df["metric"] == cost) & (df["value"] > 0), "value"]
        ax.set_xscale("symlog", linthresh=float(positive.min()) if len(positive) else 1.0)
        ax.set_xlim(left=0)
    fig.tight_layout()
    return Plot(
        "cost_vs_quality",
        "Cost versus quality",
        "PSNR against multiply-accumulates per output megapixel, learned parameters and inference seconds "
        "per output megapixel (on the device each job ran on). Up and to the left is better. Ringed points "
        "joined by the dashed staircase are the Pareto front of each scale: no other method is both "
        "cheaper (or as cheap) and better (or as good). Front, cheapest first: "
        + " | ".join(fronts)
        + "."
        + _ci_sentence(df[df["metric"].isin(["psnr", *costs])])
        + _not_plotted(excluded, ["psnr", *COSTS]),
        figure_png(fig),
    )


def draw(rows: list[Row]) -> tuple[list[Plot], list[str]]:
    """All figures that have data, and a reason for each one skipped."""
    sns.set_theme(style="whitegrid", context="notebook")
    df, excluded = finite_and_not(frame(rows))
    order = list(dict.fromkeys(r.label for r in rows if r.status == "ok" and not r.variant))
    plots, skipped = [], []
    if df.empty and excluded.empty:
        return [], ["no metrics yet: every figure needs at least one row that ran"]
    for make, title in (
        (metric_bars, "Metrics per method and scale"),
        (psnr_vs_voi, "PSNR versus VOI sum"),
        (cost_vs_quality, "Cost versus quality"),
    ):
        out = make(df, order, excluded)
        (plots.append(out) if isinstance(out, Plot) else skipped.append(f"{title}: {out}"))
    return plots, skipped
