"""Stage I on its own: the VQGAN's reconstruction of the HR test sections, scored as the
supplement's Table 2 scores the attention ablations (PSNR / LPIPS of the stage I output).

Tidy rows (:data:`emsrbench.evaluate.COLUMNS`) with metrics :data:`METRICS`, named apart from
the SR rows' ``psnr`` / ``lpips`` so both can sit in one table.  ``variant`` is the name of
the variant whose stage I model was reconstructed, the model's own (``full``) included: stage I
rows never join a leaderboard row (those of the model itself have ``variant`` empty), only
the report's ablation tables, which read ``full``'s as the model's.  Stage I does not depend on
the scale, so the same values are written once per scale of the run (the ablation tables are
per scale).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .. import device as devices
from ..errors import EmsrError
from ..evaluate import COLUMNS, lpips_value
from ..io import RAW_KEY, read_dataset
from ..metrics import psnr_sections
from ..pretrained import Pretrained
from .config import GPEMSRConfig
from .stages import load_vqgan, read_state
from .vqgan import VQGAN

METRICS = ("prior_psnr", "prior_lpips")


@torch.no_grad()
def reconstruct(vq: VQGAN, hr: np.ndarray, device: torch.device | None = None) -> np.ndarray:
    """Each uint8 section (Z, H, W) through encoder, codebook and decoder, one at a time;
    sections are reflect-padded to a multiple of the latent cell and cropped back."""
    if hr.ndim != 3:
        raise EmsrError(f"gpemsr stage I reconstruction: expected sections (Z, H, W), got shape {hr.shape}")
    device = device or torch.device("cpu")
    vq = vq.to(device).eval()
    f = vq.cfg.latent_factor
    z, h, w = hr.shape
    ph, pw = -h % f, -w % f
    if ph >= h or pw >= w:
        raise EmsrError(f"gpemsr stage I reconstruction: sections {h}x{w} are smaller than the latent cell ({f} px)")
    out = np.empty_like(hr, dtype=np.uint8)
    for k in range(z):
        x = torch.from_numpy(np.ascontiguousarray(hr[k])).float().div_(255.0)[None, None].to(device)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        with devices.inference_precision(device, "fp32", "gpemsr stage I reconstruction"):  # feeds a metric
            rec = vq(x)[0][..., :h, :w].float().clamp_(0, 1)
        out[k] = rec.mul_(255.0).round_().to(torch.uint8).cpu().numpy()[0, 0]
    return out


def prior_rows(
    cfg: GPEMSRConfig,
    stage1_path: str | Path,
    hr_path: str | Path,
    *,
    method,
    preset: str,
    variant: str,
    scales,
    pretrained: Pretrained | None,
    device: torch.device | None = None,
) -> pd.DataFrame:
    """Rows of the stage I model at ``stage1_path`` reconstructing the HR sections of
    ``hr_path``: ``prior_psnr`` (dB, mean over sections) and ``prior_lpips`` (missing, with the
    reason, when LPIPS is disabled or its AlexNet is absent), once per scale in ``scales``.
    ``method``: anything with ``name``, ``display_name`` and ``family``."""
    vq = load_vqgan(cfg, read_state(stage1_path), str(stage1_path))
    hr, _ = read_dataset(hr_path, RAW_KEY, dtype=np.uint8, ndim=3)
    rec = reconstruct(vq, hr, device)
    psnr = float(np.mean(psnr_sections(hr, rec, f"{stage1_path} reconstruction")))
    lp, lp_note = lpips_value(hr, rec, pretrained)
    what = f"stage I (VQGAN) reconstruction of the {hr.shape[0]} HR test sections, scale-independent"
    metrics = [
        ("prior_psnr", psnr, f"{what}; dB, data range 255, mean over sections"),
        ("prior_lpips", lp, f"{what}; {lp_note}"),
    ]
    rows = [
        {
            "method": method.name,
            "display_name": method.display_name,
            "family": method.family,
            "preset": preset,
            "scale": int(s),
            "metric": m,
            "value": v,
            "note": note,
            "segmenter": "",
            "variant": variant,
            "ci_low": float("nan"),
            "ci_high": float("nan"),
        }
        for s in scales
        for m, v, note in metrics
    ]
    return pd.DataFrame(rows, columns=COLUMNS)
