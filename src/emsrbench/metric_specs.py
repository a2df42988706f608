"""What each tidy metric is called, which way is better, which group it belongs to, and how it
is printed: the one definition the Markdown leaderboard, the tie marks and the HTML report share.

A metric that is not listed here (a column added later) is still shown, under its own name,
never highlighted as best or ranked, so new tidy rows reach the tables without touching them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: int  # +1 higher is better, -1 lower is better, 0 not ranked (cost, counts)
    group: str  # "image" | "segmentation" | "hallucination" | "cost" | "other"
    digits: int = 3
    unit: str = ""


METRICS = {
    m.key: m
    for m in [
        Metric("psnr", "PSNR", +1, "image", 2, "dB"),
        Metric("psnr_volume", "PSNR (vol)", +1, "image", 2, "dB"),
        Metric("ssim", "SSIM", +1, "image", 4),
        Metric("lpips", "LPIPS", -1, "image", 4),
        # GPEMSR's stage I alone (emsrbench.gpemsr.reconstruct: its VQGAN reconstructing the HR
        # test sections, supplement Table 2); only ablation rows carry them.
        Metric("prior_psnr", "Stage-I PSNR", +1, "image", 2, "dB"),
        Metric("prior_lpips", "Stage-I LPIPS", -1, "image", 4),
        # Split and merge alone are not ranked: a segmentation that merges everything has zero
        # split (bicubic's at 16x does), one that splits every voxel zero merge. Their sum,
        # ARAND and the CREMI score weigh both.
        Metric("voi_split", "VOI split", 0, "segmentation", 4, "bits"),
        Metric("voi_merge", "VOI merge", 0, "segmentation", 4, "bits"),
        Metric("voi_sum", "VOI sum", -1, "segmentation", 4, "bits"),
        Metric("arand", "ARAND", -1, "segmentation", 4),
        Metric("cremi_score", "CREMI score", -1, "segmentation", 4),
        # Segments of the whole segmentation (3D ids at the reported threshold) and the ground
        # truth's objects: not scores, the plain counts beside HR's that show a collapse
        # (emsrbench.no_signal) at a glance.
        Metric("segments", "Segments", 0, "segmentation", 0),
        Metric("gt_objects", "GT objects", 0, "segmentation", 0),
        # Hallucination (issue #7; emsrbench.segment.stage.score_hallucination): boundaries of the
        # segmentation against the ground truth within a tolerance, orphans against HR's segmentation.
        # Like VOI split and merge, precision (and invented length) alone is won by merging
        # everything, recall (and erased length) by splitting everything: shown, not ranked; their
        # harmonic mean is.
        Metric("boundary_precision", "Boundary precision", 0, "hallucination", 3),
        Metric("boundary_recall", "Boundary recall", 0, "hallucination", 3),
        Metric("boundary_f1", "Boundary F1", +1, "hallucination", 3),
        Metric("invented_um_per_um2", "Invented µm/µm²", 0, "hallucination", 3, "µm/µm²"),
        Metric("erased_um_per_um2", "Erased µm/µm²", 0, "hallucination", 3, "µm/µm²"),
        Metric("orphan_fraction", "Orphan fraction", -1, "hallucination", 3),
        Metric("parameters", "Params", 0, "cost"),
        Metric("train_seconds", "Train s", 0, "cost"),
        Metric("infer_s_per_mp", "Infer s/MP", 0, "cost"),
        Metric("macs_per_mp", "GMAC/MP", 0, "cost"),  # printed in 1e9 multiply-accumulates
        Metric("peak_mem_mib", "Peak MiB", 0, "cost"),
    ]
}
# The affinity networks' names as the tables print them.
SEGMENTER_LABELS = {"superhuman": "Superhuman", "mala": "MALA"}
GROUP_ORDER = ["image", "segmentation", "hallucination", "cost", "other"]
GROUP_LABELS = {
    "image": "Image quality",
    "segmentation": "Segmentation",
    "hallucination": "Hallucination",
    "cost": "Cost",
    "other": "Other",
}


def keys(group: str) -> list[str]:
    """The metrics of a group, in table order."""
    return [k for k, m in METRICS.items() if m.group == group]


def spec(key: str) -> Metric:
    return METRICS.get(key) or Metric(key, key, 0, "other")


def sort_key(key: str) -> tuple:
    keys = list(METRICS)
    m = spec(key)
    return GROUP_ORDER.index(m.group), keys.index(key) if key in keys else len(keys), key


def best_value(key: str, values):
    """The best of a column's finite values, or None when the metric is not ranked, has no
    finite value, or several values are all equal (bold on every row would say nothing).
    Infinite values (the PSNR of identical images) and NaN are never best: inf says the
    images are equal, not that a method is better than any other by an infinite margin."""
    better = spec(key).better
    v = [float(x) for x in values if is_finite(x)]
    if not better or not v or (len(v) > 1 and len(set(v)) == 1):
        return None
    return max(v) if better > 0 else min(v)


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def is_finite(v) -> bool:
    return not is_missing(v) and math.isfinite(float(v))


# Why a value is not a finite number: a note clause "<tag>: <details>" (evaluate, the
# segmentation stage). The tag is printed beside the value ("inf (identical)", "n/a (no
# labels)"), the clause listed under the tables; "missing: ..." values print plain "n/a" (their
# reason is listed under the tables already).
REASON_TAGS = ("identical", "no labels", "not applicable", "undefined")


def reason_clause(note) -> str:
    """The clause of ``note`` that says why its value is missing or not finite ("" if none)."""
    for clause in str(note or "").split(";"):
        clause = clause.strip()
        if clause.partition(":")[0] in REASON_TAGS + ("missing",) and ":" in clause:
            return clause
    return ""


def reason_tag(note) -> str:
    """The short reason printed beside a non-finite value, from its note ("" if none)."""
    tag = reason_clause(note).partition(":")[0]
    return tag if tag in REASON_TAGS else ""


def fmt(key: str, v, note: str = "") -> str:
    """``v`` as the tables print it; a NaN or infinite value with the reason tag of ``note``."""
    if not is_finite(v):
        text = "n/a" if is_missing(v) else ("inf" if float(v) > 0 else "-inf")
        tag = reason_tag(note)
        return f"{text} ({tag})" if tag else text
    v = float(v)
    if key == "parameters":
        return f"{v / 1e6:.3f} M" if v >= 1e4 else f"{int(v)}"
    if key == "macs_per_mp":
        return f"{v / 1e9:.3g}"
    if key == "peak_mem_mib":
        return f"{v:.0f}"
    m = spec(key)
    if m.group in ("image", "segmentation", "hallucination"):
        return f"{v:.{m.digits}f}"
    return f"{v:.3g}"
