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
from .methods import Method
from .metrics import psnr_sections, psnr_volume, ssim_sections
from .pretrained import Pretrained
from .stats import sidecar
from .stats.bootstrap import BootstrapSettings
from .stats.intervals import image_intervals

# ``segmenter``: the affinity network of a segmentation row (issue #5), "" for image metrics.
# ``variant``: the ablation variant of a row (GPEMSR's, issue #4), "" for a method's own row.
# ``ci_low`` / ``ci_high``: a confidence interval of ``value`` where one is computed, else empty.
# ``tie``: set by the leaderboard (paired bootstrap against the best method): "best", "tied",
# "worse", or "" (not compared); empty in the per-job tables.
COLUMNS = [
    "method",
    "display_name",
    "family",
    "preset",
    "scale",
    "metric",
    "value",
    "note",
    "segmenter",
    "variant",
    "ci_low",
    "ci_high",
    "tie",
]


def cost_rows(stats: dict) -> list[tuple[str, float, str]]:
    """``macs_per_mp`` and ``peak_mem_mib`` rows from inference stats (see emsrbench.cost);
    missing (NaN, with the reason) when the SR file predates them or the counter failed."""
    old = "missing: not recorded by this SR file's inference (rerun infer)"
    macs = stats.get("macs_per_mp")
    peak = stats.get("peak_mem_mib")
    return [
        ("macs_per_mp", float("nan") if macs is None else float(macs), stats.get("macs_note", old)),
        (
            "peak_mem_mib",
            float("nan") if peak is None else float(peak),
            f"{stats['device']}; {stats['peak_mem_note']}" if peak is not None else old,
        ),
    ]


def lpips_value(hr: np.ndarray, sr: np.ndarray, pretrained: Pretrained | None) -> tuple[float, str]:
    """LPIPS with the registry's AlexNet, or NaN and the reason it is missing."""
    per_section, note = lpips_per_section(hr, sr, pretrained)
    return (float("nan") if per_section is None else float(np.mean(per_section))), note


def lpips_per_section(hr: np.ndarray, sr: np.ndarray, pretrained: Pretrained | None) -> tuple[np.ndarray | None, str]:
    """Per-section LPIPS with the registry's AlexNet and its note, or None and the reason it is missing."""
    if pretrained is None:
        return None, "disabled in config (metrics.lpips.enabled: false)"
    from .device import inference_precision, pick_device
    from .metrics.lpips_metric import LpipsUnavailable, load_lpips, lpips_sections

    path, why = pretrained.status("alexnet")
    if path is None:
        return None, f"missing: {why}"
    dev = pick_device()
    try:
        model = load_lpips(path, pretrained.entry("alexnet").sha256, dev)
    except LpipsUnavailable as err:
        return None, f"missing: {err}"
    with inference_precision(dev, "fp32"):  # a GPU's TF32 convolutions would move LPIPS away from the CPU's
        per_section = lpips_sections(hr, sr, model, dev)
    return per_section, "AlexNet LPIPS v0.1 in fp32, mean over sections"


def identical_note(psnr_per_section: np.ndarray) -> str:
    """Why a PSNR is infinite: SR sections equal to their HR sections have no error ("" if none
    does). The leaderboard and the report show the reason instead of ranking or plotting inf."""
    same = int(np.isinf(psnr_per_section).sum())
    if not same:
        return ""
    return f"identical: SR equals HR in {same} of {psnr_per_section.size} sections (no error, PSNR infinite)"


INFERRED_IN = "SR inferred in "  # the note clause naming the precision; emsrbench.leaderboard.devices reads it


def precision_note(stats: dict) -> str:
    """The precision of the inference that made the SR volume, for the notes of its rows."""
    return INFERRED_IN + (stats.get("precision") or "a precision not recorded (rerun infer)")


def evaluate(
    method: Method,
    scale: int,
    preset: str,
    sr_path: str | Path,
    hr_path: str | Path,
    pretrained: Pretrained | None,
    variant: str = "",
    intervals: BootstrapSettings | None = None,
    sidecar_path: str | Path | None = None,
) -> pd.DataFrame:
    """``pretrained``: where LPIPS finds AlexNet; None when LPIPS is disabled; ``variant``:
    the ablation variant the SR volume comes from ("" for the method itself); ``intervals``:
    bootstrap settings of the PSNR/SSIM/LPIPS intervals (None: no intervals); ``sidecar_path``:
    where to write their replicates (:mod:`emsrbench.stats.sidecar`; empty without intervals)."""
    hr, _ = read_dataset(hr_path, RAW_KEY, dtype=np.uint8, ndim=3)
    sr, _ = read_dataset(sr_path, RAW_KEY, dtype=np.uint8, ndim=3)
    if hr.shape != sr.shape:
        raise EmsrError(f"{sr_path}:{RAW_KEY}: SR shape {sr.shape} differs from HR {hr.shape} in {hr_path}")
    stats = read_stats(sr_path, "inference")
    flags = "; ".join(stats.get("flags", []))
    lp_sections, lp_note = lpips_per_section(hr, sr, pretrained)
    lp = float("nan") if lp_sections is None else float(np.mean(lp_sections))
    psnr, ssim = psnr_sections(hr, sr), ssim_sections(hr, sr)
    per_section = {"psnr": psnr, "ssim": ssim, **({"lpips": lp_sections} if lp_sections is not None else {})}
    # block length from the HR volume (auto), the same for every method: their sidecars pair
    ci, reps, used = image_intervals(per_section, intervals, hr, f"{sr_path}: interval of")
    if sidecar_path is not None:
        sidecar.write(sidecar_path, reps, kind="image", method=method.name, scale=scale, settings=used, variant=variant)
    psnr_vol = float(psnr_volume(hr, sr))
    inferred = precision_note(stats)
    rows = [
        ("psnr", float(np.mean(psnr)), _join(identical_note(psnr), "dB, data range 255, mean over sections", inferred)),
        (
            "psnr_volume",
            psnr_vol,
            _join(identical_note(psnr) if np.isinf(psnr_vol) else "", "dB, data range 255, whole volume", inferred),
        ),
        ("ssim", float(np.mean(ssim)), _join("Gaussian 11x11 sigma 1.5, mean over sections", inferred)),
        ("lpips", lp, _join(lp_note, inferred if lp_sections is not None else "")),
        ("parameters", float(stats["parameters"]), ""),
        ("train_seconds", float(stats["train_seconds"]), stats.get("train_seconds_note", "")),
        # the device first: emsrbench.leaderboard.devices reads it from there
        ("infer_s_per_mp", float(stats["infer_seconds_per_mp"]), _join(stats["device"], inferred)),
        *cost_rows(stats),
    ]
    base = {
        "method": method.name,
        "display_name": method.display_name,
        "family": method.family,
        "preset": preset,
        "scale": scale,
    }
    none = (float("nan"), float("nan"), "")
    df = pd.DataFrame(
        [
            {
                **base,
                "metric": m,
                "value": v,
                "note": "; ".join(x for x in (n, ci.get(m, none)[2]) if x),
                "segmenter": "",
                "variant": variant,
                "ci_low": ci.get(m, none)[0],
                "ci_high": ci.get(m, none)[1],
                "tie": "",
            }
            for m, v, n in rows
        ],
        columns=COLUMNS,
    )
    if flags:
        df["note"] = [f"{n}; {flags}" if n else flags for n in df["note"]]
    return df


def _join(*clauses: str) -> str:
    """A note of the non-empty ``clauses``."""
    return "; ".join(c for c in clauses if c)


def write_rows(df: pd.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
