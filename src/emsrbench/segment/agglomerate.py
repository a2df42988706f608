"""The study's post-processing of predicted affinities: 2D fragments + waterz agglomeration.

1. Fragments (:func:`fragments`): per section, a seeded watershed (mahotas.cwatershed) on the
   xy boundary map ``1 - (aff_y + aff_x) / 2``; the seeds are the regional maxima of the
   distance transform of ``boundary < 0.5`` (mahotas: distance, regmax, label).  Fragment ids
   are unique across sections (consecutive, starting at 1).  A section without any seed (no
   pixel below the boundary threshold) becomes one fragment.  Sections are processed in
   threads (mahotas releases the GIL).
2. Agglomeration (:func:`agglomerate`): ``waterz.agglomerate`` on the fragments, mean-affinity
   scoring ``OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>`` at threshold 0.5 and a
   256-bin queue as in the study; ``scoring="quantile50"`` is MALA's 50 % histogram quantile.
   Both are prebuilt in waterz 0.10.1; any other C++ scoring string is compiled on first use
   (needs g++ and the boost headers, about 13 s, cached).

waterz traps handled here: affinities go in as float32, C-contiguous, (3, z, y, x); fragments
as uint64; waterz overwrites the fragments buffer at every threshold, so it gets a private
copy and every yielded segmentation is copied before the next threshold is computed.
"""

from __future__ import annotations

import contextlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from ..errors import EmsrError
from .scores import worker_threads

__all__ = [
    "SCORING_FUNCTIONS",
    "agglomerate",
    "as_uint32_labels",
    "boundary_map",
    "fragments",
    "iter_agglomerate",
    "segment",
]

SCORING_FUNCTIONS = {
    "mean": "OneMinus<MeanAffinity<RegionGraphType, ScoreValue>>",
    "quantile50": "OneMinus<HistogramQuantileAffinity<RegionGraphType, 50, ScoreValue, 256, false>>",
}
SCORING_FUNCTIONS["mala"] = SCORING_FUNCTIONS["quantile50"]
DEFAULT_THRESHOLDS = (0.5,)
DISCRETIZE_QUEUE = 256
BOUNDARY_THRESHOLD = 0.5


def _check_affs(affs, where: str) -> np.ndarray:
    affs = np.asarray(affs)
    if affs.ndim != 4 or affs.shape[0] < 3:
        raise EmsrError(f"{where}: affinities must have shape (3, z, y, x), got {affs.shape}")
    if affs.dtype.kind != "f":
        raise EmsrError(f"{where}: affinities must be floats in [0, 1], got dtype {affs.dtype}")
    affs = np.ascontiguousarray(affs[:3], dtype=np.float32)
    if not np.isfinite(affs.sum(dtype=np.float64)):
        raise EmsrError(f"{where}: affinities contain NaN or inf")
    return affs


def boundary_map(affs: np.ndarray) -> np.ndarray:
    """``1 - (aff_y + aff_x) / 2`` (z, y, x) float32: high on boundaries."""
    affs = np.asarray(affs)
    b = affs[1].astype(np.float32, copy=True)
    b += affs[2]
    b *= -0.5
    b += 1.0
    return b


def _section_fragments(boundary: np.ndarray, out: np.ndarray, threshold: float) -> int:
    """Seeded watershed of one section into ``out`` (ids 1..n); returns n (>= 1)."""
    import mahotas

    dist = mahotas.distance(boundary < threshold)
    seeds, n = mahotas.label(mahotas.regmax(dist))
    if n == 0:
        out[...] = 1
        return 1
    out[...] = mahotas.cwatershed(boundary, seeds)
    return int(n)


def fragments(
    affs: np.ndarray, threads: int | None = None, boundary_threshold: float = BOUNDARY_THRESHOLD
) -> np.ndarray:
    """2D seeded-watershed fragments (z, y, x) uint64 of affinities (3, z, y, x), ids from 1.

    ``threads`` sections are processed at a time (default: up to 2, the CPUs available).
    """
    affs = _check_affs(affs, "fragments")
    boundary = boundary_map(affs)
    depth = boundary.shape[0]
    out = np.zeros(boundary.shape, dtype=np.uint64)

    def run(z: int) -> int:
        return _section_fragments(boundary[z], out[z], boundary_threshold)

    workers = min(worker_threads(threads), depth)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            counts = list(pool.map(run, range(depth)))
    else:
        counts = [run(z) for z in range(depth)]
    offsets = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.uint64)
    for z in range(depth):
        if offsets[z]:
            out[z] += offsets[z]
    return out


@contextlib.contextmanager
def _stdout_silenced(enabled: bool = True):
    """Send file descriptor 1 to /dev/null (waterz's C++ code prints progress to it)."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _scoring(scoring: str) -> str:
    if scoring in SCORING_FUNCTIONS:
        return SCORING_FUNCTIONS[scoring]
    if isinstance(scoring, str) and "<" in scoring:
        return scoring  # a waterz C++ scoring type, compiled on first use
    raise EmsrError(
        f"agglomerate: unknown scoring {scoring!r}; "
        f"use one of {sorted(SCORING_FUNCTIONS)} or a waterz C++ scoring string"
    )


def _thresholds(thresholds) -> list[float]:
    if isinstance(thresholds, (int, float, np.integer, np.floating)):
        thresholds = [thresholds]
    try:
        values = [float(t) for t in thresholds]
    except (TypeError, ValueError):
        raise EmsrError(f"agglomerate: thresholds must be numbers, got {thresholds!r}") from None
    if not values or not all(np.isfinite(values)):
        raise EmsrError(f"agglomerate: thresholds must be one or more finite numbers, got {thresholds!r}")
    return values


def iter_agglomerate(
    affs: np.ndarray,
    fragments: np.ndarray,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    scoring: str = "mean",
    discretize_queue: int = DISCRETIZE_QUEUE,
    quiet: bool = True,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(threshold, segmentation)`` in increasing threshold order, each an own copy.

    Only one waterz state and the current copy are alive at a time: use this to score many
    thresholds of a big volume.  ``fragments`` is not modified.  ``quiet`` hides waterz's
    progress lines (printed by its C++ code to standard output).
    """
    import waterz

    affs = _check_affs(affs, "agglomerate")
    frags = np.asarray(fragments)
    if frags.shape != affs.shape[1:]:
        raise EmsrError(f"agglomerate: fragments shape {frags.shape} does not match the affinities' {affs.shape[1:]}")
    if frags.dtype.kind not in "ui":
        raise EmsrError(f"agglomerate: fragments must be integer labels, got dtype {frags.dtype}")
    frags = np.array(frags, dtype=np.uint64, order="C", copy=True)  # waterz writes into it
    values = sorted(set(_thresholds(thresholds)))
    gen = waterz.agglomerate(
        affs, values, fragments=frags, scoring_function=_scoring(scoring), discretize_queue=int(discretize_queue)
    )
    for t in values:
        with _stdout_silenced(quiet):
            seg = next(gen)
            seg = np.array(seg, copy=True)  # waterz overwrites its buffer at the next threshold
        yield t, seg
    gen.close()


def agglomerate(
    affs: np.ndarray,
    fragments: np.ndarray,
    thresholds: Sequence[float] | float = DEFAULT_THRESHOLDS,
    scoring: str = "mean",
    discretize_queue: int = DISCRETIZE_QUEUE,
    quiet: bool = True,
) -> list[np.ndarray]:
    """One segmentation (z, y, x) uint64 per threshold, in the order of ``thresholds``.

    Every returned array is independent (a repeated threshold gets its own copy).
    """
    wanted = _thresholds(thresholds)
    done = dict(iter_agglomerate(affs, fragments, wanted, scoring, discretize_queue, quiet))
    out, used = [], set()
    for t in wanted:
        out.append(done[t].copy() if t in used else done[t])
        used.add(t)
    return out


def segment(
    affs: np.ndarray,
    thresholds: Sequence[float] | float = DEFAULT_THRESHOLDS,
    scoring: str = "mean",
    discretize_queue: int = DISCRETIZE_QUEUE,
    threads: int | None = None,
    quiet: bool = True,
) -> list[np.ndarray]:
    """Fragments + agglomeration of affinities (3, z, y, x): one segmentation per threshold."""
    frags = fragments(affs, threads=threads)
    return agglomerate(affs, frags, thresholds, scoring, discretize_queue, quiet)


def as_uint32_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as uint32 (what waterz takes as ground truth), relabelled if ids do not fit.

    Ids that fit (0 <= id < 2**32) are kept; otherwise the ids are renumbered consecutively
    with 0 kept as 0 (the partition is unchanged, so scores are too).
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "ui":
        raise EmsrError(f"as_uint32_labels: labels must be integers, got dtype {labels.dtype}")
    if labels.size == 0:
        return labels.astype(np.uint32)
    lo, hi = labels.min(), labels.max()
    if int(lo) >= 0 and int(hi) <= np.iinfo(np.uint32).max:
        return labels.astype(np.uint32)
    import fastremap

    renum, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=False)
    if len(mapping) > np.iinfo(np.uint32).max:
        raise EmsrError(f"as_uint32_labels: {len(mapping)} labels do not fit uint32")
    return renum.astype(np.uint32)
