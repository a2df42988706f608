"""MATLAB-compatible bicubic ``imresize`` in torch: one implementation for degradation and baseline.

The SR literature builds its LR inputs with MATLAB's ``imresize(img, 1/s, 'bicubic')`` and
uses the same call (with ``s``) as the bicubic baseline, so both must reproduce MATLAB, not
``torch.nn.functional.interpolate`` (different kernel support, no antialiasing, different
boundary handling).  MATLAB's algorithm, per dimension:

* cubic convolution kernel with ``a = -0.5`` (Keys), support 4 input pixels;
* when shrinking (``scale < 1``) with antialiasing, the kernel is stretched by ``1/scale``
  (support ``4/scale``) and its amplitude scaled by ``scale`` so it low-passes as it resamples;
* output size ``ceil(scale * size)``; output pixel ``x`` (1-based) samples the input at
  ``u = x/scale + 0.5*(1 - 1/scale)``, which aligns pixel *edges* (not centres) of the grids;
* each output row of weights is normalised to sum 1, so a constant image stays constant;
* out-of-range taps are mirrored with half-sample symmetry (``... 2 1 | 1 2 ... n | n n-1 ...``),
  MATLAB's ``aux = [1:n, n:-1:1]`` index folding, which also works when the kernel is wider
  than the image;
* dimensions are processed in order of increasing scale (H first when equal, as the sort in
  MATLAB is stable).

Each 1-D resampling is a dense (out, in) matrix built once per (size, scale) and applied as a
matmul, so a whole batch of sections is resized in two GEMMs on CPU or GPU.  Arithmetic is
float throughout with no rounding between passes.  (MATLAB itself, given a *uint8* image,
returns uint8 from each pass, i.e. rounds the intermediate; this implementation follows the
float convention of the Python ports such as basicsr's, which differ from MATLAB-on-uint8 by
at most one grey level.)
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["imresize", "imresize_np", "resize_matrix"]


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    return (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1) + (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * (
        (ax > 1) & (ax <= 2)
    )


@lru_cache(maxsize=64)
def _matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> np.ndarray:
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width /= scale
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1.0 - 1.0 / scale)
    left = np.floor(u - kernel_width / 2.0)
    taps = int(math.ceil(kernel_width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # 1-based input indices
    dist = u[:, None] - idx
    w = scale * _cubic(dist * scale) if shrink else _cubic(dist)
    w /= w.sum(axis=1, keepdims=True)
    # MATLAB's symmetric index folding: aux = [1:n, n:-1:1]; idx = aux(mod(idx-1, 2n) + 1)
    m = np.mod(idx.astype(np.int64) - 1, 2 * in_len)
    src = np.where(m < in_len, m, 2 * in_len - 1 - m)
    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], src.shape)
    np.add.at(mat, (rows, src), w)  # taps folded onto the same pixel add up
    mat.setflags(write=False)
    return mat


def resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool = True) -> np.ndarray:
    """The (out_len, in_len) float64 matrix of one MATLAB bicubic 1-D resampling (read-only)."""
    if in_len < 1 or out_len < 1:
        raise ValueError(f"imresize: lengths must be positive, got in={in_len}, out={out_len}")
    if not scale > 0:
        raise ValueError(f"imresize: scale must be positive, got {scale}")
    return _matrix(int(in_len), int(out_len), float(scale), bool(antialias))


def _out_len(n: int, scale: float) -> int:
    return int(math.ceil(n * scale))


def imresize(
    x: torch.Tensor,
    scale: float,
    antialias: bool = True,
    out_shape: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Resize the last two dims of a float tensor exactly as MATLAB ``imresize(x, scale, 'bicubic')``.

    ``x`` has shape (..., H, W); leading dims (sections, channels) are batched.  The result
    has x's dtype and device and is not rounded or clipped (bicubic overshoots).
    ``out_shape`` only overrides MATLAB's ``ceil(scale*size)`` (which for a non-dyadic scale
    such as 1/3 can land one pixel off in floating point); the sampling grid stays that of
    ``scale``.
    """
    if not isinstance(x, torch.Tensor) or not x.is_floating_point():
        raise TypeError("imresize: expected a floating-point torch.Tensor")
    if x.ndim < 2:
        raise ValueError(f"imresize: expected shape (..., H, W), got {tuple(x.shape)}")
    scale = float(scale)
    h, w = x.shape[-2:]
    oh, ow = out_shape if out_shape is not None else (_out_len(h, scale), _out_len(w, scale))
    mh = torch.tensor(resize_matrix(h, oh, scale, antialias), device=x.device, dtype=x.dtype)
    mw = torch.tensor(resize_matrix(w, ow, scale, antialias), device=x.device, dtype=x.dtype)
    out = torch.matmul(mh, x)  # H pass: (oh, H) @ (..., H, W)
    return torch.matmul(out, mw.T)  # W pass: (..., oh, W) @ (W, ow)


def imresize_np(img: np.ndarray, scale: float, antialias: bool = True, out_shape=None) -> np.ndarray:
    """numpy wrapper of :func:`imresize`: (..., H, W) in any real dtype, float64 out."""
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float64))
    with torch.no_grad():
        return imresize(t, scale, antialias=antialias, out_shape=out_shape).numpy()
