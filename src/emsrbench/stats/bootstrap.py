"""Bootstrap confidence intervals over test blocks, and paired comparisons between methods.

Definitions
-----------
* A *block* is a unit of the test volume that is resampled as a whole: a section (or a slab of
  consecutive sections) for image metrics, a z-slab (optionally cut into xy tiles) for
  segmentation metrics.  Each block carries one value of the metric (see
  :func:`image_block_values` and :func:`segmentation_block_values`) and a weight.
* The estimate is the weighted mean of the block values, ``sum(w * x) / sum(w)`` (unweighted:
  all ``w = 1``).  A bootstrap replicate draws ``n`` blocks with replacement out of the ``n``
  blocks and recomputes that weighted mean (a ratio of sums, so unequal blocks are handled
  without bias towards small ones).
* Interval: BCa (bias-corrected and accelerated, Efron 1987) by default, percentile on request.
  BCa corrects the percentile interval's known under-coverage for skewed block values (PSNR
  of a few bad sections) at the cost of one jackknife, which for a weighted mean is exact and
  vectorised (leave-one-out sums).  The bias correction uses the share of replicates below the
  estimate (ties count half), clipped to [1/(2B), 1 - 1/(2B)] so it stays finite.
* All replicates of one call come from one ``numpy.random.Generator(PCG64(seed))`` index matrix
  (B x n): the same seed and number of blocks give the same resamples for every method, so the
  intervals of different methods and their paired differences are drawn on identical resamples.
* Paired comparison of methods A and B over the same blocks: the interval of the weighted mean
  of the per-block differences ``a - b`` (resampling blocks keeps each pair together, so the
  block-to-block variation that both methods share cancels).  ``tied`` means the interval
  contains 0 (the difference is not significant at the chosen confidence).
* A degenerate sample (every replicate equal, e.g. identical methods) gives the interval
  ``[estimate, estimate]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
from scipy.special import ndtr, ndtri

from ..errors import EmsrError
from ..settings import merge_layers

__all__ = [
    "BootstrapSettings",
    "Interval",
    "PairedDifference",
    "bootstrap_mean",
    "paired_bootstrap",
    "ties_with_best",
    "image_block_values",
    "segmentation_block_values",
]

METHODS = ("bca", "percentile")
INDEX_BUDGET = 2**22  # resample indices held at once (32 MiB of int64); more resamples go in row chunks


@dataclass
class BootstrapSettings:
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    method: str = "bca"

    @classmethod
    def merged(cls, *layers: dict, source: str = "bootstrap") -> "BootstrapSettings":
        s = merge_layers(cls, layers, source, "bootstrap")
        _check_settings(s.resamples, s.confidence, s.method, source)
        return s

    def kwargs(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    blocks: int
    method: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference(Interval):
    """Interval of mean(a - b); ``tied`` is True when it contains 0."""

    tied: bool = False


def _check_settings(resamples, confidence, method, where):
    if not isinstance(resamples, (int, np.integer)) or isinstance(resamples, bool) or resamples < 100:
        raise EmsrError(f"{where}: resamples must be an integer >= 100, got {resamples!r}")
    if not isinstance(confidence, (int, float, np.floating)) or not 0.0 < float(confidence) < 1.0:
        raise EmsrError(f"{where}: confidence must be a number between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if method not in METHODS:
        raise EmsrError(f"{where}: unknown bootstrap method {method!r} (known: {', '.join(METHODS)})")


def _as_values(values, name: str, where: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EmsrError(f"{where}: {name} must be numbers, got {type(values).__name__}") from None
    if x.ndim != 1:
        raise EmsrError(f"{where}: {name} must be one value per block (1-D), got shape {x.shape}")
    if x.size < 2:
        raise EmsrError(f"{where}: {name} has {x.size} block(s); a bootstrap needs at least 2")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise EmsrError(f"{where}: {name} has non-finite value {x[bad[0]]} at block {bad[0]} ({bad.size} in all); "
                        "a bootstrap needs finite block values")
    return x


def _as_weights(weights, n: int, where: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise EmsrError(f"{where}: {w.size} weights for {n} blocks")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise EmsrError(f"{where}: weights must be finite and > 0")
    return w


def _replicates(x: np.ndarray, w: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Weighted means of ``resamples`` bootstrap samples (rows of one seeded index matrix)."""
    rng = np.random.default_rng(seed)
    n = x.size
    wx = w * x
    out = np.empty(resamples)
    rows = max(1, INDEX_BUDGET // n)
    for r0 in range(0, resamples, rows):
        r1 = min(resamples, r0 + rows)
        idx = rng.integers(0, n, size=(r1 - r0, n))
        out[r0:r1] = wx[idx].sum(axis=1) / w[idx].sum(axis=1)
    return out


def _interval(x: np.ndarray, w: np.ndarray, resamples: int, confidence: float, seed: int,
              method: str) -> tuple[float, float, float]:
    est = float(np.dot(w, x) / w.sum())
    boot = _replicates(x, w, resamples, seed)
    if np.ptp(boot) <= 1e-12 * max(1.0, abs(est)):
        return est, est, est
    alpha = (1.0 - confidence) / 2.0
    if method == "percentile":
        lo_q, hi_q = alpha, 1.0 - alpha
    else:
        share = (np.count_nonzero(boot < est) + 0.5 * np.count_nonzero(boot == est)) / resamples
        z0 = float(ndtri(np.clip(share, 0.5 / resamples, 1.0 - 0.5 / resamples)))
        # Jackknife of the weighted mean: leave-one-out sums, no loop.
        loo = (np.dot(w, x) - w * x) / (w.sum() - w)
        d = loo.mean() - loo
        den = 6.0 * float(np.dot(d, d)) ** 1.5
        acc = float(np.sum(d**3)) / den if den > 0 else 0.0
        qs = []
        for z in (ndtri(alpha), ndtri(1.0 - alpha)):
            qs.append(float(ndtr(z0 + (z0 + z) / (1.0 - acc * (z0 + z)))))
        lo_q, hi_q = qs
    low, high = np.quantile(boot, [lo_q, hi_q])
    return est, float(low), float(high)


def bootstrap_mean(values, weights=None, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                   method: str = "bca", what: str = "bootstrap") -> Interval:
    """Confidence interval of the (weighted) mean of per-block ``values``; ``what`` prefixes errors."""
    _check_settings(resamples, confidence, method, what)
    x = _as_values(values, "block values", what)
    w = _as_weights(weights, x.size, what)
    est, lo, hi = _interval(x, w, int(resamples), float(confidence), seed, method)
    return Interval(est, lo, hi, float(confidence), int(resamples), x.size, method)


def paired_bootstrap(a, b, weights=None, *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
                     method: str = "bca", what: str = "paired bootstrap") -> PairedDifference:
    """Interval of the (weighted) mean of ``a - b`` over the same blocks, and whether it is a tie."""
    _check_settings(resamples, confidence, method, what)
    xa = _as_values(a, "first method's block values", what)
    xb = _as_values(b, "second method's block values", what)
    if xa.shape != xb.shape:
        raise EmsrError(f"{what}: the two methods have {xa.size} and {xb.size} blocks; a paired bootstrap needs the same blocks")
    w = _as_weights(weights, xa.size, what)
    est, lo, hi = _interval(xa - xb, w, int(resamples), float(confidence), seed, method)
    return PairedDifference(est, lo, hi, float(confidence), int(resamples), xa.size, method, tied=bool(lo <= 0.0 <= hi))


def ties_with_best(block_values: Mapping[str, np.ndarray], higher_is_better: bool, weights=None,
                   **kw) -> tuple[str, dict[str, PairedDifference]]:
    """The best method (by point estimate) and, per method, the paired difference method - best.

    The best method is compared with itself too (a degenerate [0, 0] interval, tied).  Every
    comparison uses the same seed, hence the same resampled blocks.
    """
    what = kw.pop("what", "ties_with_best")
    if not block_values:
        raise EmsrError(f"{what}: no methods to compare")
    means = {}
    for name, vals in block_values.items():
        x = _as_values(vals, f"{name}'s block values", what)
        w = _as_weights(weights, x.size, what)
        means[name] = float(np.dot(w, x) / w.sum())
    pick = max if higher_is_better else min
    best = pick(means, key=lambda k: means[k])
    return best, {name: paired_bootstrap(vals, block_values[best], weights, what=f"{what}: {name} vs {best}", **kw)
                  for name, vals in block_values.items()}


# ------------------------------------------------------------------ per-block values
def _slabs(depth: int, size: int, where: str) -> list[tuple[int, int]]:
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise EmsrError(f"{where}: block size must be a positive number of sections, got {size!r}")
    return [(z, min(z + size, depth)) for z in range(0, depth, size)]


def image_block_values(hr: np.ndarray, sr: np.ndarray, metric: str, sections_per_block: int = 1,
                       what: str = "image_block_values") -> tuple[np.ndarray, np.ndarray]:
    """Per-block (values, weights) of ``psnr`` or ``ssim``.

    A block is a slab of ``sections_per_block`` consecutive sections (the last one may be
    shorter); its value is the mean of its section values and its weight the number of
    sections, so the weighted mean of the blocks is exactly the reported metric (the mean over
    sections).  Slabs of several sections keep correlated neighbouring sections together.
    PSNR of an identical section is inf, which the bootstrap rejects with a one-line error.
    """
    from ..metrics import psnr_sections, ssim_sections

    funcs = {"psnr": psnr_sections, "ssim": ssim_sections}
    if metric not in funcs:
        raise EmsrError(f"{what}: no per-section values for metric {metric!r} (known: {', '.join(funcs)})")
    per_section = funcs[metric](hr, sr, what)
    slabs = _slabs(per_section.size, sections_per_block, what)
    values = np.array([per_section[z0:z1].mean() for z0, z1 in slabs])
    weights = np.array([z1 - z0 for z0, z1 in slabs], dtype=np.float64)
    return values, weights


def segmentation_block_values(gt, seg, *, slab: int, tile: int | None = None, resolution=None,
                              border_nm: float | None = None, threads: int | None = None,
                              what: str = "segmentation_block_values") -> tuple[dict[str, np.ndarray], np.ndarray, list]:
    """Per-block segmentation scores: ({score: values}, weights, blocks).

    Blocks: z-slabs of ``slab`` sections, cut into ``tile`` x ``tile`` pixel tiles in xy when
    ``tile`` is given (edge blocks may be smaller).  The block statistic is
    :func:`emsrbench.segment.scores.segmentation_scores` computed on the block alone: a neuron
    that crosses a block boundary is a separate object in each block, so VOI and ARAND of a
    block describe errors *within* the block, and the mean over blocks is not the
    whole-volume VOI/ARAND (neither is additive over blocks).  The interval is therefore the
    interval of the voxel-weighted mean block score, reported next to (not instead of) the
    whole-volume score.  Weights are the block's scored voxels (ground truth != 0 after the
    border mask); blocks with none are left out (their scores are undefined).

    With ``border_nm`` the CREMI border mask is computed once on the whole volume (per section,
    so exactly as the whole-volume score applies it) and then cropped, so a tile edge never
    creates or hides a masked boundary.  ``blocks`` lists ``(z0, z1, y0, y1, x0, x1)``.
    """
    from ..segment.scores import SCORE_KEYS, border_mask, segmentation_scores

    gt = np.asarray(gt)
    seg = np.asarray(seg)
    if gt.shape != seg.shape or gt.ndim != 3:
        raise EmsrError(f"{what}: ground truth {gt.shape} and segmentation {seg.shape} must be (z,y,x) volumes of one shape")
    if border_nm is not None:
        gt = gt.copy()
        gt[border_mask(gt, border_nm, resolution)] = 0
    depth, h, w = gt.shape
    if tile is not None and (not isinstance(tile, (int, np.integer)) or tile < 1):
        raise EmsrError(f"{what}: tile must be a positive number of pixels or None, got {tile!r}")
    ty = tx = tile or max(h, w)
    values: dict[str, list] = {k: [] for k in SCORE_KEYS}
    weights, blocks = [], []
    for z0, z1 in _slabs(depth, slab, what):
        for y0 in range(0, h, ty):
            for x0 in range(0, w, tx):
                box = (z0, z1, y0, min(y0 + ty, h), x0, min(x0 + tx, w))
                sl = np.s_[box[0]:box[1], box[2]:box[3], box[4]:box[5]]
                s = segmentation_scores(gt[sl], seg[sl], threads=threads, where=what)
                if s["voxels"] == 0:
                    continue
                for k in SCORE_KEYS:
                    values[k].append(s[k])
                weights.append(float(s["voxels"]))
                blocks.append(box)
    if len(blocks) < 2:
        raise EmsrError(f"{what}: {len(blocks)} block(s) with scored voxels; use smaller slabs or tiles")
    return {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}, np.asarray(weights), blocks
