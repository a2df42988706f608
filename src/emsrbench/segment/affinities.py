"""Affinity targets from labels, and class-balancing weights for the weighted MSE.

Conventions (Superhuman / PyTorch-connectomics lineage, and waterz)
-------------------------------------------------------------------
* Affinities are float32, shape (3, z, y, x), channels (z, y, x): ``affs[c]`` at voxel p is 1 if
  p and its predecessor along axis c (p - e_c) carry the same non-zero label, else 0; the first
  slice along each axis (no predecessor) is 0.  This is what ``waterz.agglomerate`` expects.
* Label borders are widened before the affinities are computed (Lee et al. 2017, as in
  PyTorch-connectomics' ``seg_widen_border``): in each section, a voxel whose 3x3 window
  (radius 1, 8-neighbourhood) holds a non-zero label other than its own is set to 0.  Both
  sides of a boundary lose one pixel, so two touching cells end up 2 pixels apart; label 0
  (background) widens nothing, and z is untouched.
* Class-balancing weights (per channel, over the voxels of the mask): positives weigh
  ``0.5 / fraction_positive`` and negatives ``0.5 / fraction_negative``, so that each class
  carries half of the total weight and the mean weight is 1; a weight is clipped at
  ``max_weight``, and a channel with one class only gets weight 1 everywhere.
"""

from __future__ import annotations

import numpy as np

from ..errors import EmsrError

__all__ = ["affinities_from_labels", "class_balance_weights", "widen_borders"]


def _as_volume(labels, name: str) -> tuple[np.ndarray, bool]:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uib":
        raise EmsrError(f"{name}: labels must be integers, got dtype {labels.dtype}")
    if labels.ndim == 2:
        return labels[None], True
    if labels.ndim != 3:
        raise EmsrError(f"{name}: labels must be a 2D (y,x) or 3D (z,y,x) volume, got shape {labels.shape}")
    return labels, False


def widen_borders(labels: np.ndarray, radius: int = 1) -> np.ndarray:
    """A copy of ``labels`` with label borders widened in each section (see module doc).

    A voxel becomes 0 if its (2*radius+1)^2 window in the section contains a non-zero label
    different from its own (the window is cut at the image edge).
    """
    vol, squeeze = _as_volume(labels, "widen_borders")
    radius = int(radius)
    if radius < 0:
        raise EmsrError(f"widen_borders: radius must be >= 0, got {radius}")
    out = vol.copy()
    _, h, w = vol.shape
    conflict = np.zeros(vol.shape, dtype=bool)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy, dx) <= (0, 0):  # each unordered offset once; marked on both sides
                continue
            # p = vol[y, x], q = vol[y + dy, x + dx] over the overlap
            ys_p, ys_q = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
            xs_p, xs_q = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
            p = vol[:, ys_p, xs_p]
            q = vol[:, ys_q, xs_q]
            differ = (p != q) & (p != 0) & (q != 0)
            conflict[:, ys_p, xs_p] |= differ
            conflict[:, ys_q, xs_q] |= differ
    out[conflict] = 0
    return out[0] if squeeze else out


def affinities_from_labels(labels: np.ndarray, widen: bool = True, radius: int = 1) -> np.ndarray:
    """Nearest-neighbour affinities (3, z, y, x) float32 of a label volume (see module doc).

    ``widen`` widens the label borders first (:func:`widen_borders` with ``radius``), as the
    training targets of the study's networks are made.  A 2D input counts as one section.
    """
    vol, _ = _as_volume(labels, "affinities_from_labels")
    if widen:
        vol = widen_borders(vol, radius)
    affs = np.zeros((3,) + vol.shape, dtype=np.float32)
    nz = vol != 0
    for c in range(3):
        cur = [slice(None)] * 3
        prev = [slice(None)] * 3
        cur[c] = slice(1, None)
        prev[c] = slice(None, -1)
        same = (vol[tuple(cur)] == vol[tuple(prev)]) & nz[tuple(cur)]
        affs[(c,) + tuple(cur)] = same
    return affs


def class_balance_weights(
    affs: np.ndarray, mask: np.ndarray | None = None, threshold: float = 0.5, max_weight: float = 50.0
) -> np.ndarray:
    """Per-voxel weights for a class-balanced (weighted) MSE on affinity targets.

    ``affs``: (..., C, z, y, x) targets; statistics are taken per leading index and channel over
    the last three axes.  ``mask`` (broadcastable to ``affs``; non-zero = counted) restricts the
    statistics and zeroes the weights outside.  Returns float32 of the shape of ``affs``.
    """
    affs = np.asarray(affs)
    if affs.ndim < 3:
        raise EmsrError(f"class_balance_weights: affinities must be at least 3D (..., z, y, x), got shape {affs.shape}")
    if not max_weight >= 1.0:
        raise EmsrError(f"class_balance_weights: max_weight must be >= 1, got {max_weight!r}")
    pos = affs > threshold
    m = np.ones(affs.shape, dtype=bool) if mask is None else np.broadcast_to(np.asarray(mask) != 0, affs.shape)
    axes = (-3, -2, -1)
    total = m.sum(axis=axes, keepdims=True).astype(np.float64)
    n_pos = (pos & m).sum(axis=axes, keepdims=True).astype(np.float64)
    n_neg = total - n_pos
    with np.errstate(divide="ignore", invalid="ignore"):
        w_pos = np.where(n_pos > 0, 0.5 * total / n_pos, 1.0)
        w_neg = np.where(n_neg > 0, 0.5 * total / n_neg, 1.0)
    one_class = (n_pos == 0) | (n_neg == 0)
    w_pos = np.where(one_class, 1.0, np.minimum(w_pos, max_weight))
    w_neg = np.where(one_class, 1.0, np.minimum(w_neg, max_weight))
    weights = np.where(pos, w_pos, w_neg).astype(np.float32)
    weights *= m
    return weights
