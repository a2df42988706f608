"""Intervals that cannot be computed honestly are missing, with the reason.

Regression of the FIB-SEM crop (12 test sections, 37x203x219 at 40x10x10 nm, MALA): segmentation
intervals that excluded their own estimate ("RCAN 8x VOI split 3.8674 with [3.8638, 3.8638]").
Cause: where each section's piece of an object is its own segment, the test volume's VOI split
is the largest any slab resample reaches, every replicate lies below it, BCa's bias correction
hits its clip and returns the top replicate.
"""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from emsrbench.io import write_cremi
from emsrbench.stats import (
    BootstrapSettings,
    Replicates,
    bounds,
    interval,
    segmentation_replicates,
    sidecar,
    slab_tables,
)


def fib_sem_like(seed=0, depth=12, size=200):
    """Ground truth of ~40 neurites running through all sections (Voronoi cells extruded in z,
    a few ending half way) and a MALA-like segmentation whose z-linking failed: every section's
    piece of an object is a segment of its own, and three sections are split in two along x."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, size, (40, 2))
    yy, xx = np.mgrid[:size, :size]
    cells = ((yy[..., None] - centres[:, 0]) ** 2 + (xx[..., None] - centres[:, 1]) ** 2).argmin(-1) + 1
    gt = np.repeat(cells[None], depth, axis=0).astype(np.uint64)
    gt[depth // 2 :][gt[depth // 2 :] <= 5] += 100  # objects 1-5 end half way, others continue
    seg = gt + 1000 * np.arange(depth, dtype=np.uint64)[:, None, None]
    seg[[2, 3, 7], :, size // 2 :] += 100_000
    return gt, seg


def old_bca(rep: Replicates, confidence=0.95):
    """The interval as it was computed before the fix (z0 clipped to the resolution of B)."""
    from scipy.special import ndtr, ndtri

    boot, b = rep.replicates, rep.replicates.size
    share = (np.count_nonzero(boot < rep.estimate) + 0.5 * np.count_nonzero(boot == rep.estimate)) / b
    z0 = float(ndtri(np.clip(share, 0.5 / b, 1 - 0.5 / b)))
    d = rep.jackknife.mean() - rep.jackknife
    acc = float(np.sum(d**3)) / (6.0 * float(np.dot(d, d)) ** 1.5)
    alpha = (1 - confidence) / 2
    levels = [ndtr(z0 + (z0 + z) / (1 - acc * (z0 + z))) for z in (ndtri(alpha), ndtri(1 - alpha))]
    return tuple(np.quantile(boot, levels))


def test_fib_sem_shaped_case_reproduces_the_bug_and_reports_the_interval_missing():
    gt, seg = fib_sem_like()
    reps = segmentation_replicates(slab_tables(gt, seg), resamples=2000, seed=0)
    split = reps["voi_split"]
    # The cause: every resample (some slabs twice, some never) scores below the test volume.
    assert (split.replicates < split.estimate).all()
    low, high = old_bca(split)
    assert not low <= split.estimate <= high and high - low < 1e-3 * split.estimate  # wrong and absurdly narrow
    b = bounds(split)
    assert np.isnan(b.low) and np.isnan(b.high)
    assert b.missing.startswith("interval missing: bootstrap distribution degenerate (100.0% of 2000 resampled")
    assert np.isnan(interval(split)).all()


def test_every_interval_contains_its_estimate_or_is_missing():
    rng = np.random.default_rng(3)
    gt, seg = fib_sem_like(seed=1)
    cases = [
        segmentation_replicates(slab_tables(gt, seg, sections_per_slab=k), resamples=500, seed=s)
        for k in (1, 2, 4)
        for s in (0, 1)
    ]
    noisy = seg.copy()
    noisy[rng.random(seg.shape) < 0.02] = 7  # some salt: merges that vary with the slab
    cases.append(segmentation_replicates(slab_tables(gt, noisy), resamples=500, seed=0))
    for reps in cases:
        for method in ("bca", "percentile"):
            for r in reps.values():
                b = bounds(r, 0.95, method)
                assert b.missing or b.low <= r.estimate <= b.high, (b, r.estimate)
                assert bool(b.missing) == bool(np.isnan(b.low))


@pytest.mark.parametrize(
    "rep,why",
    [
        # every resample gives one value, not the estimate
        (Replicates(1.0, np.full(200, 2.0), np.full(5, 2.0)), "degenerate (0.0% of 200"),
        # 1 % of the replicates above the estimate: it lies in their tail
        (
            Replicates(0.0, np.r_[-np.linspace(1, 2, 198), 0.5, 0.6], -np.linspace(0.1, 1, 5)),
            "degenerate (99.0% of 200",
        ),
        (Replicates(float("nan"), np.zeros(200), np.zeros(5)), "estimate is not finite"),
        (Replicates(0.0, np.r_[np.nan, np.linspace(-1, 1, 199)], np.zeros(5)), "undefined on 1 of 200"),
    ],
)
def test_missing_intervals_say_why(rep, why):
    b = bounds(rep)
    assert np.isnan(b.low) and np.isnan(b.high) and why in b.missing and "\n" not in b.missing


def test_an_acceleration_that_folds_the_level_map_is_refused():
    """One of 200 blocks dominates the leave-one-out values (a = 0.165) and the estimate sits at
    the 99.9 % point of its replicates: at 99.9 % confidence 1 - a (z0 + z) < 0, where the BCa
    level map turns back on itself."""
    boot = np.r_[np.linspace(-3, -0.01, 9993), np.linspace(0.01, 1, 7)]
    rep = Replicates(0.0, boot, np.r_[np.zeros(199), -1.0])
    b = bounds(rep, 0.999)
    assert np.isnan(b.low) and b.missing.startswith("interval missing: BCa acceleration 0.165 too large for a 99.9% ")
    assert bounds(rep, 0.999, "percentile").low <= 0.0  # the percentile interval has no acceleration


def test_identical_methods_keep_their_zero_interval():
    b = bounds(Replicates(0.0, np.zeros(300), np.zeros(6)))
    assert (b.low, b.high, b.missing) == (0.0, 0.0, "")


def score_fib_sem_like(tmp_path, **intervals):
    from emsrbench.segment.stage import RowIdentity, score_volume

    gt, seg = fib_sem_like()
    gt_path, seg_path = tmp_path / "test.h5", tmp_path / "seg.h5"
    write_cremi(gt_path, np.zeros(gt.shape, np.uint8), gt, resolution=(40, 10, 10))
    with h5py.File(seg_path, "w") as f:
        f.attrs["stats"] = json.dumps({"thresholds": [0.5], "scoring": "mean", "device": "cpu", "flags": []})
        f["volumes/segmentations/0.5"] = seg
    settings = BootstrapSettings.merged({"resamples": 500, "seed": 0, **intervals})
    rows, _ = score_volume(
        seg_path,
        gt_path,
        row=RowIdentity(net="mala", method="rcan", display_name="RCAN", family="single-image", preset="quick", scale=8),
        intervals=settings,
        sidecar_path=tmp_path / "x8-bootstrap.npz",
    )
    return rows.set_index("metric"), sidecar.read(tmp_path / "x8-bootstrap.npz")


def assert_contains_or_missing(rows):
    """Every score's interval contains its value or is missing with the reason (the segment
    counts are plain columns without intervals)."""
    for m, r in rows.drop(index=["segments", "gt_objects"]).iterrows():
        assert np.isnan(r["ci_low"]) == np.isnan(r["ci_high"]), m
        if np.isnan(r["ci_low"]):
            assert "interval missing: " in r["note"], m
        else:
            assert r["ci_low"] <= r["value"] <= r["ci_high"], m  # [0, 0] where nothing varies (no merges)


def test_score_volume_reports_the_missing_interval_in_the_notes(tmp_path):
    """The job of the FIB-SEM crop's shape with its slabs of one section: NaN bounds and the
    reason in the note (the report then draws no error bar), not an interval that excludes the
    value."""
    rows, car = score_fib_sem_like(tmp_path, sections_per_slab=1)
    assert np.isnan(rows.loc["voi_split", "ci_low"]) and np.isnan(rows.loc["voi_split", "ci_high"])
    assert "interval missing: bootstrap distribution degenerate" in rows.loc["voi_split", "note"]
    assert "over 12 z-slabs of 1 section, 500 resamples" in rows.loc["voi_split", "note"]
    assert_contains_or_missing(rows)
    assert (car.blocks, car.sections_per_block) == (12, 1)


def test_automatic_slabs_follow_the_objects_and_are_recorded(tmp_path):
    rows, car = score_fib_sem_like(tmp_path)
    # objects span all 12 sections: floor 12, capped at 4 for >= 3 slabs
    note = rows.loc["voi_split", "note"]
    assert "over 3 z-slabs of 4 sections (auto: Politis-White" in note
    assert "floor 12 = median z-extent of GT objects, at most 4 for >= 3 slabs" in note
    assert_contains_or_missing(rows)
    assert (car.blocks, car.sections_per_block) == (3, 4)  # the length used, for the pairing check
