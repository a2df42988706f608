"""Segmentation scores against ground truth: VOI split/merge, adapted Rand error, CREMI score.

Conventions (those of the study, waterz, scikit-image and CREMI)
----------------------------------------------------------------
* Only voxels with ground truth != 0 are scored; segmentation label 0 is an ordinary label.
* VOI in bits: ``voi_split = H(seg | gt)`` (over-segmentation), ``voi_merge = H(gt | seg)``
  (under-segmentation), ``voi_sum`` their sum.  ``skimage.metrics.variation_of_information(gt,
  seg, ignore_labels=[0])`` returns exactly ``(voi_split, voi_merge)``.
* Adapted Rand error as ``skimage.metrics.adapted_rand_error(gt, seg, ignore_labels=(0,))``
  (pairs of distinct voxels, alpha 0.5): ``arand`` equals skimage's value.  Precision and recall
  follow the SNEMI3D/CREMI definitions: ``arand_precision`` = pairs joined in both / pairs
  joined in ``seg`` (falls with false merges), ``arand_recall`` = pairs joined in both / pairs
  joined in ``gt`` (falls with false splits).  scikit-image (0.26) returns these two the other
  way round (its issue #6485): ``skimage(...)[1] == arand_recall``, ``[2] == arand_precision``.
* ``cremi_score = sqrt(voi_sum * arand)``.
* Empty overlap (no voxel with ground truth != 0, e.g. all-zero ground truth or a border mask
  that blanks everything): every score is NaN and ``voxels`` is 0, as in scikit-image.  A score
  whose pair count is 0 (every ground-truth or segment of one voxel) is NaN too (0/0).
* Ground truth labelled per section (ISBI 2012, many ssTEM stacks: ids never linked along z):
  scored as 3D, every segment that continues into the next section would count as a merge of
  distinct objects.  Such volumes are scored *per section*: the contingency table is the sum
  of the per-section tables with every (section, id) a distinct object, which is the 3D table
  of ground truth and segmentation relabelled so that ids are unique per section
  (:class:`PerSectionIds`; ground truth 0 stays 0, segmentation 0 becomes an ordinary id of
  its section).  The relabelling is one-to-one within a section, so the border mask and the
  ground truth 0 handling are unchanged, and slab tables of the relabelled volumes sum to it.
  :func:`gt_labels_mode` says which reading applies (config ``segmentation.gt_labels``).
* Optional CREMI border mask: per section, ground-truth voxels within ``border_nm`` (lateral
  distance, using the y/x resolution) of a ground-truth boundary are set to 0 (ignored), as the
  CREMI evaluation does; a boundary pixel is one whose 4-neighbourhood holds another label
  (the image edge is not a boundary), and boundary pixels themselves are always masked.

Speed
-----
The contingency table is computed in one streaming pass over z-chunks of both volumes (numpy,
HDF5 or zarr datasets: anything that slices), two chunks at a time in threads.  Per chunk, the
voxels are run-length encoded along the flattened order (a run ends where either volume
changes label, so neurites give runs tens of voxels long), and only the runs' (gt, seg) pairs
are hashed (fastremap.renumber: ids of any size, uint64 up to 2**64 - 1) and counted
(np.bincount with run lengths as weights).  Memory is bounded by the chunk, not the volume;
the per-chunk tables are merged at the end.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fastremap
import numpy as np
from scipy import ndimage

from ..errors import EmsrError
from ..labels import boundary_pixels

__all__ = [
    "Contingency",
    "GT_LABEL_MODES",
    "PerSectionIds",
    "border_mask",
    "contingency",
    "gt_labels_mode",
    "scores_from_table",
    "segmentation_scores",
    "SCORE_KEYS",
]

SCORE_KEYS = ("voi_split", "voi_merge", "voi_sum", "arand", "arand_precision", "arand_recall", "cremi_score")
CHUNK_VOXELS = 2**24  # voxels per z-chunk (at least one section): ~16 M, a few 100 MB of temporaries


@dataclass(frozen=True)
class Contingency:
    """The non-zero cells of a contingency table, sorted by (gt id, seg id).

    ``counts[k]`` voxels have ground truth ``gt_ids[k]`` and segmentation ``seg_ids[k]``.  Cells
    with ground truth 0 are kept (scores drop them); ids keep the dtypes of the inputs.
    """

    gt_ids: np.ndarray
    seg_ids: np.ndarray
    counts: np.ndarray  # int64

    @property
    def voxels(self) -> int:
        return int(self.counts.sum())

    def scored(self) -> "Contingency":
        """The cells with ground truth != 0."""
        keep = self.gt_ids != 0
        return Contingency(self.gt_ids[keep], self.seg_ids[keep], self.counts[keep])


# ------------------------------------------------------------------ input checks
def _check_labels(arr, name: str, where: str):
    shape = getattr(arr, "shape", None)
    dtype = getattr(arr, "dtype", None)
    if shape is None or dtype is None:
        arr = np.asarray(arr)
        shape, dtype = arr.shape, arr.dtype
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui" and dtype != np.bool_:
        raise EmsrError(f"{where}: {name} must hold integer labels, got dtype {dtype}")
    if len(shape) not in (2, 3):
        raise EmsrError(f"{where}: {name} must be a 2D (y,x) or 3D (z,y,x) label volume, got shape {tuple(shape)}")
    return arr, tuple(shape)


def _lateral_resolution(resolution, where: str) -> tuple[float, float]:
    if resolution is None:
        raise EmsrError(f"{where}: border_nm needs the resolution (z, y, x nm)")
    try:
        res = tuple(float(r) for r in np.asarray(resolution, dtype=float).ravel())
    except (TypeError, ValueError):
        raise EmsrError(f"{where}: resolution must be 3 positive numbers (z, y, x nm), got {resolution!r}") from None
    if len(res) not in (2, 3) or not all(math.isfinite(r) and r > 0 for r in res):
        raise EmsrError(f"{where}: resolution must be 3 positive numbers (z, y, x nm), got {resolution!r}")
    return res[-2], res[-1]


# ------------------------------------------------------------------ CREMI border mask
def border_mask(gt: np.ndarray, border_nm: float, resolution=(40.0, 4.0, 4.0)) -> np.ndarray:
    """Boolean mask of the ground-truth voxels that CREMI's border threshold ignores.

    Per section (axis 0 of a 3D array; a 2D array is one section): a pixel is on a boundary if
    one of its 4 neighbours has another label (the image edge is not a boundary, label 0 is a
    label like any other); masked are the boundary pixels and every pixel whose Euclidean
    distance in nm (y/x resolution) to the nearest boundary pixel is <= ``border_nm``.
    """
    ry, rx = _lateral_resolution(resolution, "border_mask")
    if border_nm is None or not math.isfinite(float(border_nm)) or float(border_nm) < 0:
        raise EmsrError(f"border_mask: border_nm must be a number >= 0, got {border_nm!r}")
    gt = np.asarray(gt)
    squeeze = gt.ndim == 2
    vol = gt[None] if squeeze else gt
    out = np.empty(vol.shape, dtype=bool)
    for z in range(vol.shape[0]):
        interior = ~boundary_pixels(vol[z])
        if interior.all():
            out[z] = False
            continue
        dist = ndimage.distance_transform_edt(interior, sampling=(ry, rx))
        out[z] = dist <= float(border_nm)
    return out[0] if squeeze else out


# ------------------------------------------------------------------ ground truth labelled per section
GT_LABEL_MODES = ("auto", "3d", "per_section")


def _section_ids(gt, z: int) -> np.ndarray:
    ids = np.unique(np.asarray(gt[z : z + 1]))
    return ids[ids != 0]


def gt_labels_mode(gt, setting: str = "auto", where: str = "gt_labels_mode") -> tuple[str, str]:
    """("3d" | "per_section", why) for the (z, y, x) ground truth ``gt`` (array or dataset).

    ``setting`` "3d" or "per_section" is taken as given.  "auto" reads the labels: per section
    when no non-zero id occurs in two sections and at least two sections are labelled (ids
    linked along z would repeat); otherwise 3D, also where it cannot tell (one labelled
    section), since then both readings score the same volume alike or nearly so.
    """
    if setting not in GT_LABEL_MODES:
        raise EmsrError(f"{where}: gt_labels must be one of {list(GT_LABEL_MODES)}, got {setting!r}")
    if setting != "auto":
        return setting, "set in the config"
    per_section = [_section_ids(gt, z) for z in range(int(gt.shape[0]))]
    labelled = sum(ids.size > 0 for ids in per_section)
    if labelled < 2:
        return "3d", f"auto: {labelled} labelled section(s), per-section labels cannot be told apart"
    ids = np.concatenate(per_section)
    shared = ids.size - np.unique(ids).size
    if shared:
        return "3d", "auto: ids continue across sections"
    return "per_section", f"auto: no id occurs in two of the {labelled} labelled sections"


class PerSectionIds:
    """A (z, y, x) label volume (array or z-sliceable dataset) seen with ids unique per section.

    Section ``z``'s ids are renumbered to 1..k (k <= pixels per section) and moved to
    ``z * pixels + 1 .. z * pixels + k``: disjoint between sections and at most the voxel
    count, so uint64 cannot overflow whatever the input ids.  ``background_zero``: 0 stays 0
    (the ground truth's unlabelled voxels); otherwise 0 is renumbered like any id (the
    segmentation's label 0 is an ordinary segment, of its section only).  Slicing along z
    (``view[z0:z1]``) gives the relabelled sections as a uint64 array, so the view streams
    through :func:`contingency` and the slab bootstrap like the volume itself.
    """

    dtype = np.dtype(np.uint64)

    def __init__(self, labels, background_zero: bool):
        self.labels = labels
        self.shape = tuple(int(n) for n in labels.shape)
        if len(self.shape) != 3:
            raise EmsrError(f"PerSectionIds: expected a (z, y, x) label volume, got shape {self.shape}")
        self.background_zero = background_zero

    @property
    def ndim(self) -> int:
        return 3

    def _section(self, sec: np.ndarray, z: int) -> np.ndarray:
        dense, _ = fastremap.renumber(sec, start=1, preserve_zero=self.background_zero, in_place=False)
        out = dense.astype(np.uint64)
        offset = np.uint64(z * self.shape[1] * self.shape[2])
        out[out != 0] += offset
        return out

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("PerSectionIds is read in z-ranges: view[z0:z1]")
        z0, z1, _ = key.indices(self.shape[0])
        block = np.asarray(self.labels[z0:z1])
        out = np.empty(block.shape, np.uint64)
        for i in range(block.shape[0]):
            out[i] = self._section(np.ascontiguousarray(block[i]), z0 + i)
        return out


# ------------------------------------------------------------------ contingency table
def _dense(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index per element into ``uniq``, ``uniq``): a hash-based relabelling to 0..n-1."""
    dense, mapping = fastremap.renumber(ids, start=0, preserve_zero=False, in_place=False)
    uniq = np.empty(len(mapping), dtype=ids.dtype)
    if len(mapping):
        keys = np.fromiter(mapping.keys(), dtype=ids.dtype, count=len(mapping))
        vals = np.fromiter(mapping.values(), dtype=np.int64, count=len(mapping))
        uniq[vals] = keys
    return dense, uniq


def _aggregate(g: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sum the weights ``w`` of equal (g, s) pairs; returns unique (g, s, sum) cells."""
    if len(g) == 0:
        return g[:0], s[:0], np.zeros(0, np.int64)
    gi, gu = _dense(g)
    si, su = _dense(s)
    ns = len(su)
    key = gi.astype(np.int64)
    key *= ns
    key += si
    if len(gu) * ns <= max(4 * len(key), 2**20):
        sums = np.bincount(key, weights=w, minlength=len(gu) * ns)
        cells = np.flatnonzero(sums)
        sums = sums[cells]
    else:
        ki, ku = _dense(key)
        sums = np.bincount(ki, weights=w, minlength=len(ku))
        cells = ku
    counts = np.rint(sums).astype(np.int64)
    return gu[cells // ns], su[cells % ns], counts


def _runs(g: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run-length encoding of the (g, s) pairs of two flat arrays: (g, s, length) per run."""
    n = g.size
    if n == 0:
        return g[:0], s[:0], np.zeros(0, np.float64)
    change = g[1:] != g[:-1]
    change |= s[1:] != s[:-1]
    starts = np.flatnonzero(change)
    del change
    starts += 1
    starts = np.concatenate([np.zeros(1, starts.dtype), starts])
    lengths = np.diff(starts, append=n).astype(np.float64)
    return g[starts], s[starts], lengths


def _chunk_table(gt, seg, z0: int, z1: int, mask_args) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = np.asarray(gt[z0:z1])
    s = np.asarray(seg[z0:z1])
    if mask_args is not None:
        border_nm, resolution = mask_args
        g = g.copy()
        g[border_mask(g, border_nm, resolution)] = 0
    g = np.ascontiguousarray(g).reshape(-1)
    s = np.ascontiguousarray(s).reshape(-1)
    if g.dtype == np.bool_:
        g = g.view(np.uint8)
    if s.dtype == np.bool_:
        s = s.view(np.uint8)
    return _aggregate(*_runs(g, s))


def worker_threads(threads: int | None) -> int:
    if threads is None:
        try:
            threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            threads = os.cpu_count() or 1
        threads = min(threads, 2)
    return max(1, int(threads))


def contingency(
    gt,
    seg,
    *,
    resolution=None,
    border_nm: float | None = None,
    chunk_voxels: int = CHUNK_VOXELS,
    threads: int | None = None,
    where: str = "contingency",
) -> Contingency:
    """The contingency table of ``gt`` and ``seg`` (same shape, integer labels of any size).

    ``gt``/``seg`` may be numpy arrays or datasets that slice along z (h5py, zarr); they are
    read in z-chunks of about ``chunk_voxels`` voxels, ``threads`` chunks at a time (default:
    up to 2).  With ``border_nm`` the CREMI border mask (see :func:`border_mask`) is applied to
    the ground truth first (its voxels become ground truth 0).  ``where`` prefixes errors.
    """
    gt, gshape = _check_labels(gt, "ground truth", where)
    seg, sshape = _check_labels(seg, "segmentation", where)
    if gshape != sshape:
        raise EmsrError(f"{where}: ground truth and segmentation shapes differ: {gshape} vs {sshape}")
    mask_args = None
    if border_nm is not None:
        if not isinstance(border_nm, (int, float, np.integer, np.floating)) or not border_nm >= 0:
            raise EmsrError(f"{where}: border_nm must be a number >= 0 (nm), got {border_nm!r}")
        mask_args = (float(border_nm), _lateral_resolution(resolution, where))
    if len(gshape) == 2:  # one section
        gt = gt[None] if isinstance(gt, np.ndarray) else np.asarray(gt)[None]
        seg = seg[None] if isinstance(seg, np.ndarray) else np.asarray(seg)[None]
        gshape = (1,) + gshape
    depth, plane = gshape[0], int(np.prod(gshape[1:]))
    step = max(1, int(chunk_voxels) // max(plane, 1))
    bounds = [(z, min(z + step, depth)) for z in range(0, depth, step)]
    workers = min(worker_threads(threads), len(bounds)) if bounds else 1
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            parts = list(pool.map(lambda b: _chunk_table(gt, seg, b[0], b[1], mask_args), bounds))
    else:
        parts = [_chunk_table(gt, seg, z0, z1, mask_args) for z0, z1 in bounds]
    gdt = np.dtype(getattr(gt, "dtype", np.int64))
    sdt = np.dtype(getattr(seg, "dtype", np.int64))
    if not parts:
        return Contingency(np.zeros(0, gdt), np.zeros(0, sdt), np.zeros(0, np.int64))
    if len(parts) == 1:
        g, s, c = parts[0]
    else:
        g, s, c = _aggregate(
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]).astype(np.float64),
        )
    order = np.lexsort((s, g))
    return Contingency(g[order], s[order], c[order])


# ------------------------------------------------------------------ scores
def _pairs(sizes: np.ndarray) -> int:
    """Sum of n * (n - 1) over ``sizes`` (ordered pairs of distinct voxels), exactly."""
    if sizes.size == 0:
        return 0
    total = int(sizes.sum())
    if total < 3_000_000_000:  # sum n**2 <= total**2 fits int64
        return int(np.dot(sizes, sizes)) - total
    big = sizes.astype(object)
    return int(big.dot(big)) - total


def _ratio(num: int, den: int) -> float:
    return float(num) / float(den) if den else math.nan


def scores_from_table(table: Contingency) -> dict:
    """Scores (see :data:`SCORE_KEYS`, plus ``voxels``) from a contingency table."""
    t = table.scored()
    n = t.counts
    total = int(n.sum())
    if total == 0:
        out = dict.fromkeys(SCORE_KEYS, math.nan)
        out["voxels"] = 0
        return out
    gi, gu = _dense(t.gt_ids)
    si, su = _dense(t.seg_ids)
    a = np.bincount(gi, weights=n, minlength=len(gu))  # gt segment sizes
    b = np.bincount(si, weights=n, minlength=len(su))  # seg segment sizes (over gt != 0)
    nf = n.astype(np.float64)
    p = nf / total
    logn = np.log2(nf)
    voi_split = float(-np.dot(p, logn - np.log2(a[gi])))
    voi_merge = float(-np.dot(p, logn - np.log2(b[si])))
    voi_split = max(voi_split, 0.0) + 0.0  # no -0.0 or rounding below 0 on perfect matches
    voi_merge = max(voi_merge, 0.0) + 0.0
    pairs_both = _pairs(n)
    pairs_gt = _pairs(np.rint(a).astype(np.int64))
    pairs_seg = _pairs(np.rint(b).astype(np.int64))
    precision = _ratio(pairs_both, pairs_seg)
    recall = _ratio(pairs_both, pairs_gt)
    den = 0.5 * pairs_gt + 0.5 * pairs_seg
    arand = 1.0 - pairs_both / den if den else math.nan
    voi_sum = voi_split + voi_merge
    cremi = math.sqrt(voi_sum * arand) if not math.isnan(arand) else math.nan
    return {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "voi_sum": voi_sum,
        "arand": arand,
        "arand_precision": precision,
        "arand_recall": recall,
        "cremi_score": cremi,
        "voxels": total,
    }


def segmentation_scores(
    gt,
    seg,
    resolution=None,
    border_nm: float | None = None,
    *,
    chunk_voxels: int = CHUNK_VOXELS,
    threads: int | None = None,
    where: str = "segmentation_scores",
) -> dict:
    """VOI split/merge/sum (bits), adapted Rand error, precision, recall and CREMI score.

    Returns a dict with :data:`SCORE_KEYS` and ``voxels`` (the number of scored voxels).
    ``border_nm`` (with ``resolution`` (z, y, x) nm) applies the CREMI border mask first.
    """
    table = contingency(
        gt, seg, resolution=resolution, border_nm=border_nm, chunk_voxels=chunk_voxels, threads=threads, where=where
    )
    return scores_from_table(table)
