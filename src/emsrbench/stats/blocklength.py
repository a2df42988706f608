"""Block lengths of the bootstrap over test sections: from the config or chosen from the data.

Sections of an EM volume are correlated along z (contrast drift, objects spanning many
sections); resampling single sections then treats 12 correlated sections as 12 independent ones
and the interval is too narrow.  Blocks of consecutive sections keep that correlation inside a
block.  ``sections_per_block`` / ``sections_per_slab`` in ``metrics.intervals`` are a positive
number of sections or ``auto``:

* **Image metrics** (PSNR, SSIM, LPIPS): the automatic rule of Politis & White (2004), with the
  correction of Patton, Politis & White (2009), on per-section series of the **HR test volume**
  (:func:`detail_series`).  Our blocks are fixed and non-overlapping (NBB), so the constant is
  the NBB one, ``D = 2 g(0)^2`` (Lahiri 1999: NBB variance 3/2 of the moving-block one,
  ``4/3 g(0)^2``); it equals the stationary-bootstrap constant of PPW 2009.
* **Segmentation scores**: the same rule on the per-section ground-truth boundary density, with a
  floor of the median z-extent of the ground-truth objects: a slab thinner than the objects cuts
  every object, and the whole-volume score of drawn slabs depends on which of its pieces are drawn.

Why a series of the test volume and not of each method's metric: a paired comparison (tie
marks) needs the same blocks for both methods, and every method's sidecar must agree on them
(:data:`emsrbench.stats.sidecar.PAIRING`).  The HR test volume and its labels are the same in
every job of a run, so every method, scale and segmenter gets the same block length; and what
makes sections correlated (their content: contrast, detail, objects) is in the HR volume, not
in a method.

Either length is capped so that the volume holds at least :data:`MIN_BLOCKS` blocks: with fewer,
a resample can only repeat one of two blocks and no interval is meaningful.  On the default 12
test sections the cap is 4 sections (3 blocks).  There PW sees correlation only when it is
strong (its bound for a significant autocorrelation is 0.6 at n = 12) and usually gives single
sections; no block length makes an interval over 12 correlated sections reach its nominal
coverage (:data:`emsrbench.stats.coverage.MEASURED`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import EmsrError
from ..labels import boundary_pixels

__all__ = [
    "AUTO",
    "MIN_BLOCKS",
    "BlockLength",
    "auto_block_length",
    "block_length_setting",
    "boundary_density",
    "detail_series",
    "image_block_length",
    "median_z_extent",
    "politis_white",
    "slab_length",
]

AUTO = "auto"
MIN_BLOCKS = 3  # the automatic length leaves at least this many blocks (cap: sections // 3)
DETAIL_SIGMA = 1.0  # px: the Gaussian blur whose residual measures a section's fine detail
DETAIL_FLOOR = 1e-3  # grey levels^2 added before the log: a flat section gives a finite value


@dataclass(frozen=True)
class BlockLength:
    """Sections per block and how they were chosen (for the rows' notes)."""

    sections: int
    how: str  # "" when set in the config, else the rule and its numbers

    def describe(self, unit: str) -> str:
        """E.g. ``blocks of 4 sections (auto: ...)``, for the interval note."""
        plural = "s" if self.sections > 1 else ""
        return f"{unit}s of {self.sections} section{plural}" + (f" ({self.how})" if self.how else "")


def block_length_setting(value, where: str):
    """``value`` if it is ``auto`` or a positive integer, else a one-line error naming ``where``."""
    if value == AUTO:
        return value
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise EmsrError(f"{where}: block size must be a positive number of sections or '{AUTO}', got {value!r}")
    return int(value)


# ------------------------------------------------------------------ Politis-White
def _flat_top(t: np.ndarray) -> np.ndarray:
    """The trapezoidal flat-top lag window of Politis & White (2004)."""
    t = np.abs(t)
    return np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))


def _autocovariances(x: np.ndarray) -> np.ndarray:
    """Biased (divided by n) autocovariances at lags 0..n-1."""
    d = x - x.mean()
    n = d.size
    return np.array([float(np.dot(d[: n - k], d[k:])) / n for k in range(n)])


def _bandwidth(rho: np.ndarray, n: int) -> int:
    """PW's lag bandwidth M = 2 m^: m^ is the first lag after which K_N autocorrelations in a
    row are insignificant (|rho| < 2 sqrt(log10 n / n)); none found: m_max."""
    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    m_max = math.ceil(math.sqrt(n)) + k_n
    bound = 2.0 * math.sqrt(math.log10(n) / n)
    for m in range(0, n - k_n):
        if np.all(np.abs(rho[m + 1 : m + 1 + k_n]) < bound):
            return min(2 * m, m_max, n - 1)
    return min(m_max, n - 1)


def politis_white(series) -> float:
    """Politis-White (2004) / Patton-Politis-White (2009) block length (real, >= 0) of the
    non-overlapping block bootstrap of the mean of ``series``: ``(G / g(0))^(2/3) n^(1/3)``.

    ``G = sum_k w(k/M) |k| R(k)`` and ``g(0) = sum_k w(k/M) R(k)`` over ``|k| <= M`` with the
    flat-top window ``w``.  0 for a series without measurable correlation (M = 0) or a
    constant one; 0 as well when ``g(0) <= 0`` (negative correlation: single sections are then
    conservative, not optimistic).
    """
    x = np.asarray(series, dtype=np.float64).ravel()
    n = x.size
    if n < 3 or not np.isfinite(x).all():
        bad = np.count_nonzero(~np.isfinite(x))
        raise EmsrError(f"politis_white: needs >= 3 finite values, got {n} ({bad} non-finite)")
    acov = _autocovariances(x)
    if acov[0] <= 1e-12 * max(1.0, float(np.abs(x).max())) ** 2:
        return 0.0
    m = _bandwidth(acov / acov[0], n)
    if m == 0:
        return 0.0
    lags = np.arange(1, m + 1)
    w = _flat_top(lags / m)
    g0 = acov[0] + 2.0 * float(np.sum(w * acov[1 : m + 1]))
    big_g = 2.0 * float(np.sum(w * lags * acov[1 : m + 1]))
    if g0 <= 0:
        return 0.0
    return float((abs(big_g) / g0) ** (2.0 / 3.0) * n ** (1.0 / 3.0))


def _cap(sections: int) -> int:
    return max(1, sections // MIN_BLOCKS)


def _rounded(length: float) -> int:
    return max(1, int(round(length)))


# ------------------------------------------------------------------ the test volume's series
def _sections(labels):
    """The (y, x) sections of a (z, y, x) volume: an array, an HDF5 dataset or any z-sliceable
    view (e.g. :class:`emsrbench.segment.scores.PerSectionIds`), read one at a time."""
    for z in range(int(labels.shape[0])):
        yield np.asarray(labels[z : z + 1])[0]


def detail_series(hr) -> dict[str, np.ndarray]:
    """Per-section series of the HR test volume (z, y, x) that drive every method's per-section
    metric: mean intensity (contrast drift) and log10 of the mean squared residual of a
    Gaussian blur of ``DETAIL_SIGMA`` px (fine detail, where SR errors concentrate).  Read one
    section at a time: memory of a section, not of the volume."""
    if len(np.shape(hr)) != 3:
        raise EmsrError(f"detail_series: expected a (z, y, x) volume, got shape {np.shape(hr)}")
    intensity, detail = [], []
    for sec in _sections(hr):
        sec = sec.astype(np.float64)
        residual = sec - ndimage.gaussian_filter(sec, sigma=DETAIL_SIGMA)
        intensity.append(sec.mean())
        detail.append(np.log10(np.mean(residual * residual) + DETAIL_FLOOR))
    return {"intensity": np.array(intensity), "detail": np.array(detail)}


def _boundary_fraction(sec: np.ndarray) -> float:
    edge = boundary_pixels(sec)
    labelled = sec != 0
    return float((edge & labelled).sum()) / max(int(labelled.sum()), 1)


def boundary_density(gt) -> np.ndarray:
    """Per section, the fraction of labelled pixels (gt != 0) with a 4-neighbour of another
    label: how crowded with objects a section is, which is what makes it hard to segment."""
    return np.array([_boundary_fraction(sec) for sec in _sections(gt)])


def median_z_extent(gt) -> float:
    """Median over ground-truth objects (label != 0) of the number of sections from the first
    to the last one the object appears in; 0 without labels."""
    first, last = {}, {}
    for z, sec in enumerate(_sections(gt)):
        for label in np.unique(sec):
            if label:
                first.setdefault(label, z)
                last[label] = z
    if not first:
        return 0.0
    return float(np.median([last[k] - first[k] + 1 for k in first]))


# ------------------------------------------------------------------ the rules
def _too_short(sections: int) -> BlockLength:
    return BlockLength(1, f"auto: {sections} sections, too few to measure correlation")


def auto_block_length(series: dict[str, np.ndarray]) -> BlockLength:
    """The automatic length for per-section ``series`` of one volume (same length): the longest
    PW length among them (a block must span the dependence of whichever drives the metric),
    rounded, at least 1, at most sections // 3."""
    sections = len(next(iter(series.values())))
    if sections < 3:
        return _too_short(sections)
    pw = {name: politis_white(s) for name, s in series.items()}
    cap = _cap(sections)
    length = min(_rounded(max(pw.values())), cap)
    how = (
        "auto: Politis-White "
        + ", ".join(f"{v:.1f} on {k}" for k, v in pw.items())
        + f", at most {cap} for >= {MIN_BLOCKS} blocks"
    )
    return BlockLength(length, how)


def image_block_length(setting, hr) -> BlockLength:
    """Sections per block of the image metrics: the config's number, or ``auto`` from the HR
    test volume ``hr`` (z, y, x): :func:`auto_block_length` of its :func:`detail_series`."""
    if setting != AUTO:
        return BlockLength(int(setting), "")
    return auto_block_length({f"HR {k}": v for k, v in detail_series(hr).items()})


def slab_length(setting, gt) -> BlockLength:
    """Sections per z-slab of the segmentation scores: the config's number, or ``auto`` from
    the ground truth ``gt`` (z, y, x): the larger of the PW length of the per-section boundary
    density and the median z-extent of the objects, capped at sections // 3."""
    if setting != AUTO:
        return BlockLength(int(setting), "")
    sections = int(gt.shape[0])
    if sections < 3:
        return _too_short(sections)
    pw = politis_white(boundary_density(gt))
    extent = median_z_extent(gt)
    cap = _cap(sections)
    length = min(max(_rounded(pw), _rounded(extent)), cap)
    how = (
        f"auto: Politis-White {pw:.1f} on GT boundary density, floor {extent:g} = median z-extent of GT "
        f"objects, at most {cap} for >= {MIN_BLOCKS} slabs"
    )
    return BlockLength(length, how)
