"""Score one SR volume against the HR test volume: tidy rows (method, scale, metric, value, note).

A metric that cannot be computed (LPIPS without its pretrained backbone) is a row with an
empty value and the reason in ``note``: it is reported as missing, never estimated.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .errors import EmsrError
from .io import RAW_KEY, atomic_path, read_dataset, read_stats
from .metrics import psnr_sections, psnr_volume, ssim_sections
from .methods import Method
from .pretrained import Pretrained
from .stats.bootstrap import BootstrapSettings, bootstrap_mean

# ``segmenter``: the affinity network of a segmentation row (issue #5), "" for image metrics.
# ``variant``: the ablation variant of a row (GPEMSR's, issue #4), "" for a method's own row.
# ``ci_low`` / ``ci_high``: a confidence interval of ``value`` where one is computed, else empty.
COLUMNS = ["method", "display_name", "family", "preset", "scale", "metric", "value", "note", "segmenter", "variant",
           "ci_low", "ci_high"]


def cost_rows(stats: dict) -> list[tuple[str, float, str]]:
    """``macs_per_mp`` and ``peak_mem_mib`` rows from inference stats (see emsrbench.cost);
    missing (NaN, with the reason) when the SR file predates them or the counter failed."""
    old = "missing: not recorded by this SR file's inference (rerun infer)"
    macs = stats.get("macs_per_mp")
    peak = stats.get("peak_mem_mib")
    return [
        ("macs_per_mp", float("nan") if macs is None else float(macs), stats.get("macs_note", old)),
        ("peak_mem_mib", float("nan") if peak is None else float(peak),
         f"{stats['device']}; {stats['peak_mem_note']}" if peak is not None else old),
    ]


def lpips_value(hr: np.ndarray, sr: np.ndarray, pretrained: Pretrained | None) -> tuple[float, str]:
    """LPIPS with the registry's AlexNet, or NaN and the reason it is missing."""
    if pretrained is None:
        return float("nan"), "disabled in config (metrics.lpips.enabled: false)"
    from .device import pick_device
    from .metrics.lpips_metric import LpipsUnavailable, load_lpips, lpips_sections

    path, why = pretrained.status("alexnet")
    if path is None:
        return float("nan"), f"missing: {why}"
    dev = pick_device()
    try:
        model = load_lpips(path, pretrained.entry("alexnet").sha256, dev)
    except LpipsUnavailable as err:
        return float("nan"), f"missing: {err}"
    return float(np.mean(lpips_sections(hr, sr, model, dev))), "AlexNet LPIPS v0.1, mean over sections"


def section_interval(per_section: np.ndarray, settings: BootstrapSettings | None, what: str) -> tuple[float, float, str]:
    """(low, high, note) of the mean over sections: a bootstrap resampling the test sections
    (each section a block), or empty with the reason."""
    if settings is None:
        return float("nan"), float("nan"), ""
    if per_section.size < 2 or not np.isfinite(per_section).all():
        return float("nan"), float("nan"), "no interval: needs >= 2 sections with finite values"
    ci = bootstrap_mean(per_section, what=what, **settings.kwargs())
    return ci.low, ci.high, (f"{ci.confidence:.0%} {ci.method} bootstrap over {ci.blocks} sections, "
                             f"{ci.resamples} resamples, seed {settings.seed}")


def evaluate(method: Method, scale: int, preset: str, sr_path: str | Path, hr_path: str | Path,
             pretrained: Pretrained | None, variant: str = "", intervals: BootstrapSettings | None = None) -> pd.DataFrame:
    """``pretrained``: where LPIPS finds AlexNet; None when LPIPS is disabled; ``variant``:
    the ablation variant the SR volume comes from ("" for the method itself); ``intervals``:
    bootstrap settings of the PSNR/SSIM intervals (None: no intervals)."""
    hr, _ = read_dataset(hr_path, RAW_KEY, dtype=np.uint8, ndim=3)
    sr, _ = read_dataset(sr_path, RAW_KEY, dtype=np.uint8, ndim=3)
    if hr.shape != sr.shape:
        raise EmsrError(f"{sr_path}:{RAW_KEY}: SR shape {sr.shape} differs from HR {hr.shape} in {hr_path}")
    stats = read_stats(sr_path, "inference")
    flags = "; ".join(stats.get("flags", []))
    lp, lp_note = lpips_value(hr, sr, pretrained)
    psnr, ssim = psnr_sections(hr, sr), ssim_sections(hr, sr)
    ci = {"psnr": section_interval(psnr, intervals, f"{sr_path}: PSNR interval"),
          "ssim": section_interval(ssim, intervals, f"{sr_path}: SSIM interval")}
    rows = [
        ("psnr", float(np.mean(psnr)), "dB, data range 255, mean over sections"),
        ("psnr_volume", float(psnr_volume(hr, sr)), "dB, data range 255, whole volume"),
        ("ssim", float(np.mean(ssim)), "Gaussian 11x11 sigma 1.5, mean over sections"),
        ("lpips", lp, lp_note),
        ("parameters", float(stats["parameters"]), ""),
        ("train_seconds", float(stats["train_seconds"]), ""),
        ("infer_s_per_mp", float(stats["infer_seconds_per_mp"]), stats["device"]),
        *cost_rows(stats),
    ]
    base = {"method": method.name, "display_name": method.display_name, "family": method.family,
            "preset": preset, "scale": scale}
    none = (float("nan"), float("nan"), "")
    df = pd.DataFrame([{**base, "metric": m, "value": v, "note": "; ".join(x for x in (n, ci.get(m, none)[2]) if x),
                        "segmenter": "", "variant": variant, "ci_low": ci.get(m, none)[0], "ci_high": ci.get(m, none)[1]}
                       for m, v, n in rows],
                      columns=COLUMNS)
    if flags:
        df["note"] = [f"{n}; {flags}" if n else flags for n in df["note"]]
    return df


def write_rows(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
