"""Bootstrap intervals: nominal coverage on known distributions, paired ties, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emsrbench.errors import EmsrError
from emsrbench.stats import (BootstrapSettings, bootstrap_mean, image_block_values, paired_bootstrap,
                             segmentation_block_values, ties_with_best)
from emsrbench.segment.scores import segmentation_scores


def coverage(draw, true_mean, confidence, method, reps=400, n=60):
    rng = np.random.default_rng(2024)
    hits = 0
    for r in range(reps):
        iv = bootstrap_mean(draw(rng, n), resamples=1000, confidence=confidence, seed=r, method=method)
        hits += iv.low <= true_mean <= iv.high
    return hits / reps


def binomial_tolerance(p, reps=400, sigmas=3.0):
    return sigmas * math.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize("method,draw,true_mean", [
    # Skewed block values (gamma, shape 2, mean 1), like the PSNR of a few bad sections.
    ("bca", lambda rng, n: rng.gamma(2.0, 0.5, n), 1.0),
    ("percentile", lambda rng, n: rng.normal(3.0, 2.0, n), 3.0),
])
def test_interval_covers_the_true_mean_at_the_nominal_rate(method, draw, true_mean):
    cov = coverage(draw, true_mean, 0.95, method)
    assert abs(cov - 0.95) <= binomial_tolerance(0.95), cov


def test_coverage_follows_the_confidence_setting():
    cov = coverage(lambda rng, n: rng.normal(0.0, 1.0, n), 0.0, 0.80, "bca")
    assert abs(cov - 0.80) <= binomial_tolerance(0.80), cov


def test_interval_contains_the_mean_and_shrinks_with_more_blocks():
    rng = np.random.default_rng(0)
    small = bootstrap_mean(rng.normal(5, 1, 20))
    large = bootstrap_mean(rng.normal(5, 1, 2000))
    assert small.low < small.estimate < small.high
    assert (large.high - large.low) < (small.high - small.low) / 5
    # Standard error of a mean of 2000 unit-variance values: 0.0224; a 95 % interval is ~4 of them.
    assert large.high - large.low == pytest.approx(4 * 1 / math.sqrt(2000), rel=0.1)


def test_weights_give_the_mean_over_sections():
    values = np.array([10.0, 20.0, 40.0])
    weights = np.array([1.0, 1.0, 2.0])
    assert bootstrap_mean(values, weights).estimate == pytest.approx(27.5)


def test_deterministic_for_a_fixed_seed_and_different_for_another():
    x = np.random.default_rng(1).normal(size=40)
    a, b = bootstrap_mean(x, seed=3), bootstrap_mean(x, seed=3)
    assert a == b
    assert bootstrap_mean(x, seed=4) != a
    d1, d2 = paired_bootstrap(x, x * 0.9, seed=3), paired_bootstrap(x, x * 0.9, seed=3)
    assert d1 == d2


def test_chunked_resampling_gives_the_same_replicates(monkeypatch):
    import emsrbench.stats.bootstrap as bs

    x = np.random.default_rng(2).gamma(2.0, size=50)
    whole = bootstrap_mean(x, resamples=500, seed=9)
    monkeypatch.setattr(bs, "INDEX_BUDGET", 50 * 7)  # 7 rows at a time
    assert bootstrap_mean(x, resamples=500, seed=9) == whole


def test_identical_methods_are_tied_and_clearly_different_ones_are_not():
    rng = np.random.default_rng(5)
    a = rng.normal(25.0, 3.0, 50)  # per-section PSNR: large block-to-block variation
    same = paired_bootstrap(a, a.copy())
    assert same.tied and same.low == same.high == same.estimate == 0.0
    better = a + 0.3 + rng.normal(0, 0.1, 50)  # 0.3 dB better on every block
    diff = paired_bootstrap(better, a)
    assert not diff.tied and diff.low > 0.2 and diff.estimate == pytest.approx(0.3, abs=0.05)
    # Unpaired intervals of the two overlap heavily: pairing is what separates them.
    ia, ib = bootstrap_mean(a), bootstrap_mean(better)
    assert ib.low < ia.high
    noisy = a + rng.normal(0, 1.0, 50)  # same mean, no systematic difference
    assert paired_bootstrap(noisy, a).tied


def test_ties_with_best():
    rng = np.random.default_rng(6)
    base = rng.normal(20.0, 2.0, 40)
    values = {"good": base + 1.0, "twin": base + 1.0 + rng.normal(0, 0.05, 40), "bad": base}
    best, comp = ties_with_best(values, higher_is_better=True)
    assert best in ("good", "twin")
    assert comp[best].tied and comp[best].estimate == 0.0
    assert comp["good"].tied and comp["twin"].tied and not comp["bad"].tied
    best, comp = ties_with_best(values, higher_is_better=False)  # e.g. LPIPS
    assert best == "bad" and not comp["good"].tied


@pytest.mark.parametrize("call,message", [
    (lambda: bootstrap_mean([]), "0 block"),
    (lambda: bootstrap_mean([1.0]), "1 block"),
    (lambda: bootstrap_mean([1.0, float("nan"), 2.0]), "non-finite value nan at block 1"),
    (lambda: bootstrap_mean([1.0, float("inf")]), "non-finite value inf"),
    (lambda: bootstrap_mean([[1.0, 2.0]]), "1-D"),
    (lambda: bootstrap_mean([1.0, 2.0], [1.0]), "1 weights for 2 blocks"),
    (lambda: bootstrap_mean([1.0, 2.0], [1.0, 0.0]), "weights must be finite and > 0"),
    (lambda: bootstrap_mean([1.0, 2.0], resamples=10), "resamples must be an integer >= 100"),
    (lambda: bootstrap_mean([1.0, 2.0], confidence=95), "confidence must be a number between 0 and 1"),
    (lambda: bootstrap_mean([1.0, 2.0], method="bc"), "unknown bootstrap method 'bc'"),
    (lambda: paired_bootstrap([1.0, 2.0, 3.0], [1.0, 2.0]), "3 and 2 blocks"),
    (lambda: ties_with_best({}, True), "no methods"),
    (lambda: BootstrapSettings.merged({"resample": 100}), "unknown bootstrap setting 'resample'"),
])
def test_input_errors_are_one_line(call, message):
    with pytest.raises(EmsrError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


def test_settings_pass_through():
    s = BootstrapSettings.merged({"resamples": 500}, {"seed": 7})
    x = np.arange(10.0)
    assert bootstrap_mean(x, **s.kwargs()) == bootstrap_mean(x, resamples=500, seed=7)


def test_image_block_values_average_to_the_reported_metric():
    from emsrbench.metrics import psnr_sections, ssim_sections

    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (7, 24, 24), dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-20, 21, hr.shape), 0, 255).astype(np.uint8)
    for metric, func in (("psnr", psnr_sections), ("ssim", ssim_sections)):
        per_section = func(hr, sr)
        v1, w1 = image_block_values(hr, sr, metric)
        np.testing.assert_allclose(v1, per_section)
        v3, w3 = image_block_values(hr, sr, metric, sections_per_block=3)
        assert w3.tolist() == [3, 3, 1]
        assert bootstrap_mean(v3, w3).estimate == pytest.approx(per_section.mean())
    with pytest.raises(EmsrError, match="metric 'lpips'"):
        image_block_values(hr, sr, "lpips")
    with pytest.raises(EmsrError, match="block size"):
        image_block_values(hr, sr, "psnr", sections_per_block=0)


def test_segmentation_blocks_are_the_metric_on_each_block():
    rng = np.random.default_rng(1)
    gt = np.repeat(np.repeat(rng.integers(1, 6, (4, 4, 4)), 8, axis=1), 8, axis=2).astype(np.uint64)  # 4x32x32
    seg = gt.copy()
    seg[2:, :16, :] += 100  # split in the lower half of z only: slab 2 has split errors, slab 1 none
    values, weights, blocks = segmentation_block_values(gt, seg, slab=2)
    assert blocks == [(0, 2, 0, 32, 0, 32), (2, 4, 0, 32, 0, 32)]
    assert values["voi_split"][0] == 0.0 and values["voi_split"][1] > 0
    expect = segmentation_scores(gt[2:], seg[2:])
    assert values["voi_split"][1] == pytest.approx(expect["voi_split"])
    assert weights.tolist() == [2 * 32 * 32, 2 * 32 * 32]
    values, weights, blocks = segmentation_block_values(gt, seg, slab=4, tile=16)
    assert len(blocks) == 4 and blocks[3] == (0, 4, 16, 32, 16, 32)
    assert values["arand"][3] == pytest.approx(segmentation_scores(gt[:, 16:, 16:], seg[:, 16:, 16:])["arand"])


def test_segmentation_blocks_mask_borders_on_the_whole_volume_and_skip_empty_blocks():
    from emsrbench.segment.scores import border_mask

    gt = np.ones((2, 16, 32), np.uint32)
    gt[:, :, 15:] = 2  # a boundary between x=14 and x=15
    gt[1] = 0  # second section unlabelled: its blocks have no scored voxels
    seg = gt.copy()
    values, weights, blocks = segmentation_block_values(gt, seg, slab=1, tile=15, resolution=(40, 4, 4), border_nm=8)
    # The boundary sits on the tile edge x=15: masked as on the whole volume, not hidden by the crop.
    masked = border_mask(gt, 8, (40, 4, 4))
    assert [b[0] for b in blocks] == [0] * 6  # 2 x 3 tiles of section 0, none of section 1
    assert weights.sum() == np.count_nonzero((gt != 0) & ~masked)
    with pytest.raises(EmsrError, match="1 block"):
        segmentation_block_values(gt, seg, slab=2)
    with pytest.raises(EmsrError, match="one shape"):
        segmentation_block_values(gt, seg[:1], slab=1)


def test_evaluate_attaches_section_bootstrap_intervals_to_psnr_and_ssim(tmp_path, degraded_x8):
    """The evaluate step's PSNR/SSIM rows carry the interval of bootstrap_mean over the test
    sections' own values (same seed, same numbers); other rows carry none; without settings
    no row does; the leaderboard reader keeps them."""
    import h5py

    from emsrbench.evaluate import evaluate
    from emsrbench.infer import InferSettings, infer_file
    from emsrbench.leaderboard import read_tidy
    from emsrbench.methods import discover
    from emsrbench.metrics import psnr_sections, ssim_sections

    bicubic = discover()["bicubic"]
    sr_path = tmp_path / "sr.h5"
    infer_file(bicubic, 8, {}, InferSettings.merged({}), degraded_x8, sr_path)
    settings = BootstrapSettings.merged({"resamples": 500, "seed": 3})
    rows = evaluate(bicubic, 8, "quick", sr_path, degraded_x8, None, intervals=settings).set_index("metric")
    with h5py.File(degraded_x8) as f, h5py.File(sr_path) as g:
        hr, sr = f["volumes/raw"][:], g["volumes/raw"][:]
    for metric, per_section in [("psnr", psnr_sections(hr, sr)), ("ssim", ssim_sections(hr, sr))]:
        ci = bootstrap_mean(per_section, **settings.kwargs())
        assert (rows.loc[metric, "ci_low"], rows.loc[metric, "ci_high"]) == (ci.low, ci.high)
        assert ci.low <= rows.loc[metric, "value"] <= ci.high
        assert "bootstrap over 6 sections, 500 resamples, seed 3" in rows.loc[metric, "note"]
    assert rows.loc[["psnr_volume", "parameters"], "ci_low"].isna().all()

    plain = evaluate(bicubic, 8, "quick", sr_path, degraded_x8, None)
    assert plain["ci_low"].isna().all() and not plain["note"].str.contains("bootstrap").any()
    rows.reset_index().to_csv(tmp_path / "m.csv", index=False)
    back = read_tidy([tmp_path / "m.csv"]).set_index("metric")
    assert back.loc["psnr", "ci_high"] == rows.loc["psnr", "ci_high"]
