"""Block lengths chosen from the test volume: Politis-White, the z-extent floor, the cap, and
that every method of a run gets the same blocks (paired tie marks) with the length in the notes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from emsrbench.errors import EmsrError
from emsrbench.stats import BootstrapSettings, image_block_length, politis_white, sidecar, slab_length
from emsrbench.stats.blocklength import median_z_extent
from emsrbench.stats.coverage import ar1
from emsrbench.stats.intervals import block_lengths, image_intervals


@pytest.mark.parametrize("rho,theory", [(0.5, 15.3), (0.8, 34.0)])
def test_politis_white_finds_the_nbb_length_of_a_long_ar1(rho, theory):
    """(G / g(0))^(2/3) n^(1/3) with G / g(0) = 2 rho / (1 - rho^2) for AR(1), n = 2000."""
    rng = np.random.default_rng(1)
    lengths = [politis_white(ar1(rng, rho, 2000)) for _ in range(5)]
    assert theory * 0.6 < np.median(lengths) < theory * 1.3, lengths


def test_politis_white_gives_single_sections_without_correlation_and_refuses_bad_input():
    rng = np.random.default_rng(2)
    assert np.median([politis_white(rng.normal(size=500)) for _ in range(5)]) < 1.0
    assert politis_white(np.full(12, 3.0)) == 0.0
    for bad, message in (([1.0, 2.0], "needs >= 3 finite values, got 2"), ([1.0, np.nan, 2.0, 3.0], "1 non-finite")):
        with pytest.raises(EmsrError, match=message) as info:
            politis_white(bad)
        assert "\n" not in str(info.value)


def drifting_volume(depth=12, size=48, seed=0):
    """An HR volume whose contrast and detail drift slowly along z (correlated sections)."""
    rng = np.random.default_rng(seed)
    z = np.arange(depth)[:, None, None]
    texture = rng.random((depth, size, size))
    vol = 60 + 8 * z + (40 + 6 * z) * texture
    return np.clip(vol, 0, 255).astype(np.uint8)


def test_image_blocks_auto_follow_the_hr_volume_and_stop_at_three_blocks(monkeypatch):
    import emsrbench.stats.blocklength as bl

    trend = image_block_length("auto", drifting_volume())
    assert trend.sections == 2 and trend.how == (
        "auto: Politis-White 1.6 on HR intensity, 1.6 on HR detail, at most 4 for >= 3 blocks"
    )
    assert image_block_length("auto", drifting_volume(depth=30)).sections == 6  # PW 6.3, cap 10
    white = image_block_length("auto", np.random.default_rng(0).integers(0, 256, (12, 48, 48), dtype=np.uint8))
    assert white.sections == 1 and white.how.startswith("auto: Politis-White 0.0 on HR intensity")
    assert image_block_length(3, drifting_volume()).sections == 3 and image_block_length(3, None).how == ""
    too_few = image_block_length("auto", drifting_volume(depth=2))
    assert (too_few.sections, too_few.how) == (1, "auto: 2 sections, too few to measure correlation")
    monkeypatch.setattr(bl, "politis_white", lambda series: 50.0)  # longer than the volume allows
    assert image_block_length("auto", drifting_volume()).sections == 4


def test_slabs_auto_are_at_least_the_objects_z_extent():
    gt = np.zeros((12, 20, 20), np.uint64)
    gt[:, :10, :10] = 1  # all 12 sections
    gt[2:5, 10:, :10] = 2  # 3 sections
    gt[4, 10:, 10:] = 3  # 1 section
    gt[6:11, :10, 10:] = 4  # 5 sections
    assert median_z_extent(gt) == 4.0  # extents 12, 3, 1, 5
    s = slab_length("auto", gt)
    assert s.sections == 4 and "floor 4 = median z-extent of GT objects, at most 4 for >= 3 slabs" in s.how
    gt[:, :10, :10] = 0  # extents 3, 1, 5: median 3
    assert slab_length("auto", gt).sections == 3
    per_section = np.arange(12, dtype=np.uint64)[:, None, None] * 10 + gt  # no id in two sections
    per_section[gt == 0] = 0
    assert median_z_extent(per_section) == 1.0
    assert slab_length(2, gt).sections == 2 and slab_length(2, gt).how == ""


def test_the_block_length_comes_from_the_hr_volume_so_methods_pair(tmp_path):
    """Two methods with differently correlated metric series get the same blocks (those of the
    HR volume), the sidecars record the length used, and their tie marks pair."""
    hr = drifting_volume()
    rng = np.random.default_rng(5)
    settings = BootstrapSettings.merged({"resamples": 300, "seed": 1})
    smooth = {"psnr": 25 + np.cumsum(rng.normal(0, 0.5, 12))}
    rough = {"psnr": 24 + rng.normal(0, 0.5, 12)}
    (ci_a, reps_a, used_a), (ci_b, reps_b, used_b) = (image_intervals(x, settings, hr, "t") for x in (smooth, rough))
    assert used_a.sections_per_block == used_b.sections_per_block == 2 and settings.sections_per_block == "auto"
    assert "over 6 blocks of 2 sections (auto: Politis-White 1.6 on HR intensity" in ci_a["psnr"][2]
    cars = []
    for name, reps, used in (("a", reps_a, used_a), ("b", reps_b, used_b)):
        path = tmp_path / f"{name}.npz"
        sidecar.write(path, reps, kind="image", method=name, scale=8, settings=used)
        cars.append(sidecar.read(path))
    assert cars[0].pairing() == cars[1].pairing() and cars[0].sections_per_block == 2
    marks = sidecar.tie_marks(cars, lambda m: 1)
    assert {marks[(m, "", 8, "psnr", "")][0] for m in "ab"} >= {"best"}
    with pytest.raises(EmsrError, match="block length 'auto' not resolved"):
        sidecar.write(tmp_path / "never.npz", reps_a, kind="image", method="a", scale=8, settings=settings)


def test_the_legends_name_the_block_length_and_the_holm_correction():
    from emsrbench.leaderboard import tie_legend
    from emsrbench.report import tables
    from emsrbench.report.data import Cell, Row

    notes = [
        "dB; 95% bca bootstrap over 3 blocks of 4 sections (auto: x), 2000 resamples, seed 0",
        "bits; 95% bca bootstrap of the whole-volume score over 4 z-slabs of 3 sections (auto: y), 2000",
        "",
    ]
    assert block_lengths(notes) == "image metrics: blocks of 4 sections; segmentation: z-slabs of 3 sections"
    assert block_lengths(pd.Series(["no interval here", None])) == ""
    md = tie_legend(pd.Series(notes))
    assert md.startswith(
        "≈ tied: not shown to differ from the best (paired block bootstrap, Holm-corrected over the column)"
    )
    assert md.endswith("Block length used: image metrics: blocks of 4 sections; segmentation: z-slabs of 3 sections.")
    rows = []
    for name, tie in (("A", "best"), ("B", "tied")):
        row = Row(name.lower(), name, "single-image", "quick", 8)
        row.cells[("psnr", "")] = Cell(22.0, notes[0], 21.5, 22.5, tie)
        rows.append(row)
    html = tables.leaderboard(rows, 8)
    assert "tied: not shown to differ from the best (paired block bootstrap, Holm-corrected over the column)" in html
    assert "Block length used: image metrics: blocks of 4 sections." in html
    assert "Measured coverage of a nominal 95 % interval" in html
