"""The intervals of the tidy rows: image metrics over section blocks, segmentation scores over
z-slabs, each with the block length it used and a note saying how it was made or why it is
missing.

Both return the settings with the block length resolved (``auto`` replaced by the number of
sections used) for the job's sidecar: the tie marks pair two methods only when their sidecars
agree on it (:data:`emsrbench.stats.sidecar.PAIRING`).
"""

from __future__ import annotations

import re

import numpy as np

from .blocklength import BlockLength, image_block_length, slab_length
from .bootstrap import (
    BootstrapSettings,
    Replicates,
    bounds,
    mean_replicates,
    section_blocks,
    segmentation_replicates,
    slab_tables,
)

__all__ = ["block_lengths", "image_intervals", "interval_note", "slab_intervals"]

RowInterval = tuple[float, float, str]  # (ci_low, ci_high, note clause)


def interval_note(settings: BootstrapSettings, blocks: int, length: BlockLength, unit: str, what: str = "") -> str:
    """How an interval was made, for the ``note`` column: level, method, blocks and their
    length (and how it was chosen), resamples, seed."""
    return (
        f"{settings.confidence:.0%} {settings.method} bootstrap{what} over {blocks} {length.describe(unit)}, "
        f"{settings.resamples} resamples, seed {settings.seed}"
    )


def _row_interval(rep: Replicates, settings: BootstrapSettings, note: str) -> RowInterval:
    """The interval of one row; a missing one has NaN bounds and its reason before the note."""
    b = bounds(rep, settings.confidence, settings.method)
    return b.low, b.high, f"{b.missing}; {note}" if b.missing else note


def image_intervals(
    per_section: dict[str, np.ndarray], settings: BootstrapSettings | None, hr, what: str
) -> tuple[dict[str, RowInterval], dict[str, Replicates], BootstrapSettings | None]:
    """Per metric, (low, high, note) of the mean over sections, its replicates, and the settings
    with the block length used (from ``hr``, the HR test volume, when it is ``auto``).

    Blocks of consecutive sections are resampled (value: the mean of the block's sections,
    weight: its number of sections, so the estimate is the mean over sections); every metric
    uses the same resamples.  A metric with < 2 blocks or a non-finite section value gets no
    interval (the reason in the note) and no replicates.
    """
    if settings is None:
        return {}, {}, None
    length = image_block_length(settings.sections_per_block, hr)
    ci, reps = {}, {}
    for metric, values in per_section.items():
        values = np.asarray(values, dtype=np.float64)
        x, w = section_blocks(values, length.sections, f"{what} {metric}")
        if x.size < 2 or not np.isfinite(values).all():
            ci[metric] = (float("nan"), float("nan"), "interval missing: needs >= 2 blocks with finite values")
            continue
        reps[metric] = mean_replicates(x, w, resamples=settings.resamples, seed=settings.seed, what=f"{what} {metric}")
        ci[metric] = _row_interval(reps[metric], settings, interval_note(settings, x.size, length, "block"))
    return ci, reps, settings.with_lengths(sections_per_block=length.sections)


def slab_intervals(
    gt,
    seg,
    settings: BootstrapSettings | None,
    metrics,
    *,
    resolution=None,
    border_nm: float | None = None,
    threads: int | None = None,
    where: str = "slab_intervals",
) -> tuple[dict[str, Replicates], dict[str, RowInterval], BootstrapSettings | None]:
    """({metric: Replicates}, {metric: (low, high, note)}, settings with the slab length used)
    of the whole-volume scores ``metrics`` of ``seg`` against ``gt`` (arrays, datasets or
    z-sliceable views).

    The test volume is cut into z-slabs (``auto``: length from the ground truth); a resample
    draws as many slabs with replacement and its scores are those of the volume made of the
    drawn slabs (contingency tables summed), so the estimate is the reported score.  Fewer than
    2 slabs with scored voxels, an undefined score, or a degenerate bootstrap distribution: no
    interval, the reason in the note.
    """
    if settings is None:
        return {}, {}, None
    length = slab_length(settings.sections_per_slab, gt)
    used = settings.with_lengths(sections_per_slab=length.sections)
    tables = slab_tables(
        gt,
        seg,
        sections_per_slab=length.sections,
        resolution=resolution,
        border_nm=border_nm,
        threads=threads,
        what=where,
    )
    slabs = sum(t.scored().voxels > 0 for t in tables)
    if slabs < 2:
        why = (
            f"interval missing: {slabs} of the {len(tables)} {length.describe('z-slab')} hold scored voxels, "
            "a bootstrap needs >= 2"
        )
        return {}, {m: (float("nan"), float("nan"), why) for m in metrics}, used
    reps = segmentation_replicates(tables, resamples=settings.resamples, seed=settings.seed, what=where)
    reps = {m: reps[m] for m in metrics}
    ci = {
        m: _row_interval(r, settings, interval_note(settings, r.blocks, length, "z-slab", " of the whole-volume score"))
        for m, r in reps.items()
    }
    return reps, ci, used


# The phrase of interval_note that names the blocks, e.g. "over 3 blocks of 4 sections".
_BLOCKS = re.compile(r"bootstrap(?: of the whole-volume score)? over \d+ (blocks|z-slabs) of (\d+) sections?")
_KINDS = {"blocks": "image metrics", "z-slabs": "segmentation"}


def block_lengths(notes) -> str:
    """The block lengths the rows' ``notes`` name, for a legend: e.g. "image metrics: blocks of
    4 sections; segmentation: z-slabs of 4 sections" ("" when no note names one)."""
    found: dict[str, set[int]] = {}
    for note in notes:
        for unit, size in _BLOCKS.findall(str(note)):
            found.setdefault(unit, set()).add(int(size))
    parts = []
    for unit in sorted(found, key=list(_KINDS).index):
        sizes = " or ".join(str(k) for k in sorted(found[unit]))
        parts.append(f"{_KINDS[unit]}: {unit} of {sizes} section{'s' if sizes != '1' else ''}")
    return "; ".join(parts)
