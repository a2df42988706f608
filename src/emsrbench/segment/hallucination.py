"""Hallucination scores of a segmentation of SR output: invented and erased boundaries, orphans.

Definitions (per section, lateral only; the z resolution is not used)
----------------------------------------------------------------------
* Boundary crack: the edge between two 4-neighbouring pixels of one section whose labels
  differ.  The crack between (y, x) and (y, x+1) is a vertical segment of length ``ry`` nm,
  the one between (y, x) and (y+1, x) a horizontal segment of length ``rx`` nm (``ry, rx`` the
  y/x resolution).  The image edge is not a boundary.
* Boundary pixel: a pixel that owns a crack, owner being the pixel to the left of / above the
  crack.  Its boundary length is ``ry`` for a crack on its right plus ``rx`` for one below
  (so the length of a boundary is its crack length: exact for axis-parallel boundaries,
  up to sqrt(2) too long for 45-degree staircases, the same for every method).  Owning by
  one side keeps a boundary one pixel wide and makes a shifted boundary exactly ``d`` pixels
  away from the original.
* Reference = the ground truth, as the issue defines invented / erased structure against the
  ground truth.  Ground-truth label 0 is unlabelled: a ground-truth crack needs two distinct
  non-zero labels, and a crack of the candidate (SR) segmentation is only scored where both
  of its pixels have ground truth != 0 (whether it is invented there is unknown).  Candidate
  label 0 is an ordinary label, as in :mod:`emsrbench.segment.scores`.
* Distance: Euclidean distance in nm between pixel centres (``distance_transform_edt`` with
  ``sampling=(ry, rx)``), within the section.  A candidate boundary pixel is *matched* when
  some reference boundary pixel lies within ``tolerance_nm`` (inclusive, up to float rounding):
  a boundary shifted by ``d`` pixels along x is matched iff ``d * rx <= tolerance_nm``.
* ``invented_nm``: total length of scored candidate boundary pixels that are not matched
  (structure the SR segmentation draws where the ground truth has none).
  ``erased_nm``: total length of reference boundary pixels with no candidate boundary pixel
  (scored or not) within the tolerance (ground-truth structure the SR segmentation misses).
  ``boundary_precision = 1 - invented_nm / candidate_nm``, ``boundary_recall = 1 - erased_nm
  / reference_nm`` (length-weighted); with nothing to score (0 / 0) they are 1: nothing was
  invented, nothing was there to erase.  Each alone can be won by a degenerate segmentation
  (merging everything draws no boundary: precision 1; splitting every pixel: recall 1), so
  the ranked score is their harmonic mean ``boundary_f1 = 2 P R / (P + R)`` (0 when both are 0).
* Orphan segments: over the whole volume (segments are 3D), an SR segment has a counterpart
  when some segment of the HR segmentation (the same segmenter on the HR image) overlaps it
  with IoU >= ``iou`` (default 0.5, which makes the counterpart unique).  ``orphan_fraction``
  = SR segments without a counterpart / SR segments.  Label 0 is background in both (not a
  segment, never a counterpart).  It counts every SR segment that does not correspond to one
  HR segment: invented objects, but also pieces of split or merged ones; the boundary scores
  say which.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import EmsrError

__all__ = [
    "boundary_lengths",
    "boundary_scores",
    "boundary_error_maps",
    "boundary_error_lengths",
    "orphan_segments",
    "hallucination_scores",
]

REL_EPS = 1e-9  # tolerance slack for float rounding in the distance transform


def _lateral(resolution, where: str) -> tuple[float, float]:
    try:
        res = [float(r) for r in np.asarray(resolution, dtype=float).ravel()]
    except (TypeError, ValueError):
        res = []
    if len(res) not in (2, 3) or not all(math.isfinite(r) and r > 0 for r in res):
        raise EmsrError(f"{where}: resolution must be (z, y, x) or (y, x) positive nm, got {resolution!r}")
    return res[-2], res[-1]


def _volumes(reference, candidate, where: str) -> tuple[np.ndarray, np.ndarray]:
    ref, cand = np.asarray(reference), np.asarray(candidate)
    for name, a in (("ground truth", ref), ("SR segmentation", cand)):
        if a.dtype.kind not in "ui" or a.ndim not in (2, 3):
            raise EmsrError(f"{where}: {name} must be a 2D or 3D integer label array, got {a.dtype} {a.shape}")
    if ref.shape != cand.shape:
        raise EmsrError(f"{where}: ground truth {ref.shape} and SR segmentation {cand.shape} differ in shape")
    if ref.ndim == 2:
        ref, cand = ref[None], cand[None]
    return ref, cand


def _tolerance(tolerance_nm, where: str) -> float:
    if (
        isinstance(tolerance_nm, bool)
        or not isinstance(tolerance_nm, (int, float, np.integer, np.floating))
        or not math.isfinite(float(tolerance_nm))
        or tolerance_nm < 0
    ):
        raise EmsrError(f"{where}: tolerance_nm must be a number >= 0 (nm), got {tolerance_nm!r}")
    return float(tolerance_nm)


def _cracks(sec: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(right, down) label changes of one section; only where both pixels are ``valid``."""
    right = sec[:, :-1] != sec[:, 1:]
    down = sec[:-1, :] != sec[1:, :]
    if valid is not None:
        right &= valid[:, :-1] & valid[:, 1:]
        down &= valid[:-1, :] & valid[1:, :]
    return right, down


def _owned_length(right: np.ndarray, down: np.ndarray, ry: float, rx: float) -> np.ndarray:
    length = np.zeros((down.shape[0] + 1, right.shape[1] + 1))
    length[:, :-1] += right * ry
    length[:-1, :] += down * rx
    return length


def boundary_lengths(labels, resolution, ignore_zero: bool = False) -> np.ndarray:
    """Boundary length (nm) owned by each pixel, per section (see module docstring); a pixel is
    a boundary pixel where this is > 0.  ``ignore_zero``: label 0 is unlabelled (ground truth)."""
    ry, rx = _lateral(resolution, "boundary_lengths")
    lab = np.asarray(labels)
    vol = lab[None] if lab.ndim == 2 else lab
    out = np.empty(vol.shape)
    for z in range(vol.shape[0]):
        out[z] = _owned_length(*_cracks(vol[z], vol[z] != 0 if ignore_zero else None), ry, rx)
    return out[0] if lab.ndim == 2 else out


def _distance_to(boundary: np.ndarray, ry: float, rx: float) -> np.ndarray:
    if not boundary.any():
        return np.full(boundary.shape, np.inf)
    return ndimage.distance_transform_edt(~boundary, sampling=(ry, rx))


def _section(gt: np.ndarray, sr: np.ndarray, ry: float, rx: float, tol: float):
    """Per-section lengths and maps: (ref_len, cand_len (scored), invented map, erased map)."""
    labelled = gt != 0
    ref_len = _owned_length(*_cracks(gt, labelled), ry, rx)
    cand_all = _owned_length(*_cracks(sr, None), ry, rx)
    cand_len = _owned_length(*_cracks(sr, labelled), ry, rx)
    limit = tol * (1.0 + REL_EPS) + REL_EPS
    invented = (cand_len > 0) & (_distance_to(ref_len > 0, ry, rx) > limit)
    erased = (ref_len > 0) & (_distance_to(cand_all > 0, ry, rx) > limit)
    return ref_len, cand_len, invented, erased


def boundary_scores(gt, sr_seg, resolution, tolerance_nm: float, where: str = "boundary_scores") -> dict:
    """Invented / erased boundary length (nm), boundary precision and recall, totals and
    per-section arrays (``per_section``: invented_nm, erased_nm, candidate_nm, reference_nm)."""
    tol = _tolerance(tolerance_nm, where)
    ry, rx = _lateral(resolution, where)
    gt, sr = _volumes(gt, sr_seg, where)
    keys = ("invented_nm", "erased_nm", "candidate_nm", "reference_nm")
    per = {k: np.zeros(gt.shape[0]) for k in keys}
    for z in range(gt.shape[0]):
        ref_len, cand_len, invented, erased = _section(gt[z], sr[z], ry, rx, tol)
        per["invented_nm"][z] = cand_len[invented].sum()
        per["erased_nm"][z] = ref_len[erased].sum()
        per["candidate_nm"][z] = cand_len.sum()
        per["reference_nm"][z] = ref_len.sum()
    tot = {k: float(v.sum()) for k, v in per.items()}
    precision = 1.0 - tot["invented_nm"] / tot["candidate_nm"] if tot["candidate_nm"] else 1.0
    recall = 1.0 - tot["erased_nm"] / tot["reference_nm"] if tot["reference_nm"] else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        **tot,
        "boundary_precision": precision,
        "boundary_recall": recall,
        "boundary_f1": f1,
        "tolerance_nm": tol,
        "per_section": per,
    }


def boundary_error_lengths(
    gt, sr_seg, resolution, tolerance_nm: float, where: str = "boundary_error_lengths"
) -> tuple[np.ndarray, np.ndarray]:
    """(invented, erased) boundary length in nm owned by each pixel, 0 elsewhere, with the
    input's shape: summed over a window they give that window's share of ``invented_nm`` and
    ``erased_nm`` (the report's panels)."""
    tol = _tolerance(tolerance_nm, where)
    ry, rx = _lateral(resolution, where)
    squeeze = np.ndim(gt) == 2
    gt, sr = _volumes(gt, sr_seg, where)
    invented = np.zeros(gt.shape)
    erased = np.zeros(gt.shape)
    for z in range(gt.shape[0]):
        ref_len, cand_len, inv, era = _section(gt[z], sr[z], ry, rx, tol)
        invented[z] = np.where(inv, cand_len, 0.0)
        erased[z] = np.where(era, ref_len, 0.0)
    return (invented[0], erased[0]) if squeeze else (invented, erased)


def boundary_error_maps(
    gt, sr_seg, resolution, tolerance_nm: float, where: str = "boundary_error_maps"
) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (invented, erased) boundary-pixel maps with the input's shape, for pictures:
    invented = SR boundary pixels counted in ``invented_nm``, erased = ground-truth boundary
    pixels counted in ``erased_nm``."""
    invented, erased = boundary_error_lengths(gt, sr_seg, resolution, tolerance_nm, where)
    return invented > 0, erased > 0


def orphan_segments(hr_seg, sr_seg, iou: float = 0.5, where: str = "orphan_segments") -> dict:
    """SR segments with no HR segment of IoU >= ``iou`` (see module docstring)."""
    from .scores import contingency

    if isinstance(iou, bool) or not isinstance(iou, (int, float, np.floating)) or not 0.0 < iou <= 1.0:
        raise EmsrError(f"{where}: iou must be a number in (0, 1], got {iou!r}")
    hr, sr = _volumes(hr_seg, sr_seg, where)
    table = contingency(hr, sr, where=where)  # cells (hr id, sr id, voxels)
    h_ids, s_ids, n = table.gt_ids, table.seg_ids, table.counts.astype(np.float64)
    s_uniq, s_idx = np.unique(s_ids, return_inverse=True)
    h_uniq, h_idx = np.unique(h_ids, return_inverse=True)
    s_size = np.bincount(s_idx, weights=n, minlength=len(s_uniq))
    h_size = np.bincount(h_idx, weights=n, minlength=len(h_uniq))
    overlap = np.where(h_ids != 0, n / (s_size[s_idx] + h_size[h_idx] - n), 0.0)
    best = np.zeros(len(s_uniq))
    np.maximum.at(best, s_idx, overlap)
    is_segment = s_uniq != 0
    orphan = is_segment & (best < iou * (1.0 - REL_EPS))
    segments = int(is_segment.sum())
    return {
        "sr_segments": segments,
        "orphan_segments": int(orphan.sum()),
        "orphan_fraction": float(orphan.sum() / segments) if segments else 0.0,
        "orphan_ids": s_uniq[orphan],
        "iou": float(iou),
    }


def hallucination_scores(
    gt, sr_seg, hr_seg, resolution, tolerance_nm: float, iou: float = 0.5, where: str = "hallucination_scores"
) -> dict:
    """Boundary scores of ``sr_seg`` against the ground truth and its orphan fraction against
    ``hr_seg``; flat dict of numbers (no per-section arrays or ids)."""
    b = boundary_scores(gt, sr_seg, resolution, tolerance_nm, where)
    o = orphan_segments(hr_seg, sr_seg, iou, where)
    b.pop("per_section")
    o.pop("orphan_ids")
    return {**b, **o}
