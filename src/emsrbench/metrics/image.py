"""PSNR and SSIM of uint8 EM volumes, per section and per volume.

Conventions
-----------
* Inputs are uint8 (z,y,x) volumes (a 2D array counts as one section) on the 0-255 scale;
  ``data_range`` is 255 whatever the image content, so numbers are comparable across datasets.
* Per-section values are what the study reports (EM sections are imaged, and often
  evaluated, independently); the volume PSNR pools the squared error over all voxels (it is
  *not* the mean of section PSNRs), the volume SSIM is the mean of section SSIMs.
* PSNR uses exact integer sums of squared errors; identical inputs give ``inf``.
* SSIM is Wang et al. (2004): 11-tap Gaussian window (sigma 1.5, truncated at 3.5 sigma),
  population (co)variances, K1 = 0.01, K2 = 0.03, 'reflect' boundary, and the mean taken over
  the map with a 5-pixel border dropped -- exactly ``skimage.metrics.structural_similarity(a, b,
  data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` per section,
  but computed on z-chunks of sections at once (a zero sigma along z keeps sections
  independent; chunks of about one 512x512 section measured fastest with scipy).
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as ndi

from ..errors import EmsrError

__all__ = ["psnr_from_mse", "psnr_sections", "psnr_volume", "ssim_sections", "ssim_volume", "check_pair"]

DATA_RANGE = 255.0
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5
SSIM_PAD = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)  # filter radius: 5, an 11x11 window
SSIM_K1, SSIM_K2 = 0.01, 0.03
CHUNK_VOXELS = 2**19  # voxels per z-chunk: ~10 float64 arrays of it stay cache-friendly (faster than bigger)


def check_pair(hr: np.ndarray, sr: np.ndarray, what: str = "") -> tuple[np.ndarray, np.ndarray]:
    """Validate an (HR, SR) pair of uint8 volumes; 2D inputs become one-section volumes.

    ``what`` (e.g. a file or method name) prefixes the error message.
    """
    prefix = f"{what}: " if what else ""
    for name, a in (("HR", hr), ("SR", sr)):
        if not isinstance(a, np.ndarray):
            raise EmsrError(f"{prefix}{name} must be a numpy array, got {type(a).__name__}")
        if a.dtype != np.uint8:
            raise EmsrError(f"{prefix}{name} must be uint8, got {a.dtype}")
        if a.ndim not in (2, 3):
            raise EmsrError(f"{prefix}{name} must be a (z,y,x) volume or a (y,x) section, got shape {a.shape}")
    if hr.shape != sr.shape:
        raise EmsrError(f"{prefix}HR shape {hr.shape} differs from SR shape {sr.shape}")
    if hr.size == 0:
        raise EmsrError(f"{prefix}empty volume, shape {hr.shape}")
    if hr.ndim == 2:
        hr, sr = hr[None], sr[None]
    return hr, sr


def _sse_sections(hr: np.ndarray, sr: np.ndarray) -> np.ndarray:
    """Exact per-section sums of squared errors (int64: 255^2 * 2^40 voxels would still fit)."""
    out = np.empty(hr.shape[0], dtype=np.int64)
    step = max(1, CHUNK_VOXELS // max(1, hr.shape[1] * hr.shape[2]))
    for s in range(0, hr.shape[0], step):
        d = hr[s : s + step].astype(np.int32) - sr[s : s + step].astype(np.int32)
        out[s : s + step] = np.einsum("zyx,zyx->z", d, d, dtype=np.int64)
    return out


def psnr_from_mse(mse, data_range: float = DATA_RANGE):
    """PSNR (dB) of a mean squared error (scalar or array) on a ``data_range`` scale; ``inf``
    where the error is 0. The one PSNR formula of the project (metrics, validation, panels)."""
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(np.float64(data_range) ** 2 / np.asarray(mse, dtype=np.float64))
    return float(out) if np.ndim(out) == 0 else out


def psnr_sections(hr: np.ndarray, sr: np.ndarray, what: str = "") -> np.ndarray:
    """PSNR (dB) of each section, float64; ``inf`` for identical sections."""
    hr, sr = check_pair(hr, sr, what)
    npix = hr.shape[1] * hr.shape[2]
    return psnr_from_mse(_sse_sections(hr, sr).astype(np.float64) / npix)


def psnr_volume(hr: np.ndarray, sr: np.ndarray, what: str = "") -> float:
    """PSNR (dB) of the whole volume from the MSE over all voxels."""
    hr, sr = check_pair(hr, sr, what)
    return float(psnr_from_mse(np.float64(_sse_sections(hr, sr).sum()) / hr.size))


def _ssim_chunk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    sigma = (0.0, SSIM_SIGMA, SSIM_SIGMA)

    def filt(a):
        return ndi.gaussian_filter(a, sigma=sigma, truncate=SSIM_TRUNCATE, mode="reflect")

    ux, uy = filt(x), filt(y)
    vx = filt(x * x) - ux * ux
    vy = filt(y * y) - uy * uy
    vxy = filt(x * y) - ux * uy
    c1, c2 = (SSIM_K1 * DATA_RANGE) ** 2, (SSIM_K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    p = SSIM_PAD
    return s[:, p:-p, p:-p].mean(axis=(1, 2), dtype=np.float64)


def ssim_sections(hr: np.ndarray, sr: np.ndarray, what: str = "") -> np.ndarray:
    """SSIM of each section (Wang et al. settings, see module docstring), float64."""
    hr, sr = check_pair(hr, sr, what)
    win = 2 * SSIM_PAD + 1
    if min(hr.shape[1:]) < win:
        prefix = f"{what}: " if what else ""
        raise EmsrError(f"{prefix}SSIM needs sections of at least {win}x{win} pixels, got {hr.shape[1]}x{hr.shape[2]}")
    out = np.empty(hr.shape[0], dtype=np.float64)
    step = max(1, CHUNK_VOXELS // (hr.shape[1] * hr.shape[2]))
    for s in range(0, hr.shape[0], step):
        out[s : s + step] = _ssim_chunk(hr[s : s + step], sr[s : s + step])
    return out


def ssim_volume(hr: np.ndarray, sr: np.ndarray, what: str = "") -> float:
    """Mean of the per-section SSIMs."""
    return float(ssim_sections(hr, sr, what).mean())
