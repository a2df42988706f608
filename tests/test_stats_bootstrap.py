"""Bootstrap intervals: nominal coverage on known distributions, paired ties, determinism, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from emsrbench.errors import EmsrError
from emsrbench.segment.scores import segmentation_scores
from emsrbench.stats import (
    BootstrapSettings,
    bootstrap_mean,
    image_block_values,
    interval,
    paired_bootstrap,
    ties_with_best,
)


def coverage(draw, true_mean, confidence, method, reps=400, n=60):
    rng = np.random.default_rng(2024)
    hits = 0
    for r in range(reps):
        iv = bootstrap_mean(draw(rng, n), resamples=1000, confidence=confidence, seed=r, method=method)
        hits += iv.low <= true_mean <= iv.high
    return hits / reps


def binomial_tolerance(p, reps=400, sigmas=3.0):
    return sigmas * math.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize(
    "method,draw,true_mean",
    [
        # Skewed block values (gamma, shape 2, mean 1), like the PSNR of a few bad sections.
        ("bca", lambda rng, n: rng.gamma(2.0, 0.5, n), 1.0),
        ("percentile", lambda rng, n: rng.normal(3.0, 2.0, n), 3.0),
    ],
)
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


@pytest.mark.parametrize(
    "call,message",
    [
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
    ],
)
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


def labelled_volumes(depth=6, seed=1):
    """Ground truth of neurites continuing through z (some crossing slab borders), with unlabelled
    pixels, and a segmentation with splits and merges that vary from section to section."""
    rng = np.random.default_rng(seed)
    gt = np.repeat(np.repeat(rng.integers(0, 7, (1, 5, 5)), 6, axis=1), 6, axis=2).repeat(depth, axis=0)
    gt[depth // 2 :, :12] += 10  # objects change half way
    gt = gt.astype(np.uint64)
    seg = gt // 2  # merges
    seg[rng.random(gt.shape) < 0.1] += 50  # speckle: splits
    seg[1, :, 15:] += 200  # one section split in half
    return gt, seg.astype(np.uint64)


def drawn_volume(vol, slabs, counts):
    """The volume made of the drawn slabs, each repeated as often as it was drawn."""
    return np.concatenate([vol[z0:z1] for (z0, z1), c in zip(slabs, counts) for _ in range(c)])


@pytest.mark.parametrize("slab", [1, 2])
def test_segmentation_replicates_are_whole_volume_scores_of_the_drawn_slabs(slab):
    from skimage.metrics import adapted_rand_error, variation_of_information

    from emsrbench.stats import multiplicities, segmentation_replicates, slab_tables

    gt, seg = labelled_volumes()
    reps = segmentation_replicates(slab_tables(gt, seg, sections_per_slab=slab), resamples=200, seed=5)
    whole = segmentation_scores(gt, seg)
    for k in ("voi_split", "voi_merge", "voi_sum", "arand", "cremi_score"):
        assert reps[k].estimate == pytest.approx(whole[k], abs=1e-9)  # the reported whole-volume score
        assert reps[k].replicates.shape == (200,) and reps[k].jackknife.shape == (6 // slab,)
    slabs = [(z, z + slab) for z in range(0, 6, slab)]
    counts = multiplicities(len(slabs), 200, 5)
    for r in (0, 1, 57, 199):
        g, s = drawn_volume(gt, slabs, counts[r]), drawn_volume(seg, slabs, counts[r])
        split, merge = variation_of_information(g, s, ignore_labels=[0])
        ours = segmentation_scores(g, s)
        assert reps["voi_split"].replicates[r] == pytest.approx(split, abs=1e-9)
        assert reps["voi_merge"].replicates[r] == pytest.approx(merge, abs=1e-9)
        assert reps["arand"].replicates[r] == pytest.approx(adapted_rand_error(g, s, ignore_labels=(0,))[0], abs=1e-9)
        assert reps["cremi_score"].replicates[r] == pytest.approx(ours["cremi_score"], abs=1e-9)
    # leave-one-slab-out: the volume without that slab
    keep = [z for z in range(6) if not 2 * slab > z >= slab]
    assert reps["arand"].jackknife[1] == pytest.approx(segmentation_scores(gt[keep], seg[keep])["arand"], abs=1e-9)
    # The replicates vary (the segmentation errors are not uniform), so the interval is not degenerate.
    lo, hi = interval(reps["cremi_score"])
    assert lo < hi


def test_segmentation_replicates_apply_the_border_mask_per_section_and_skip_unlabelled_slabs():
    from emsrbench.stats import segmentation_replicates, slab_tables

    gt, seg = labelled_volumes()
    gt[4] = 0  # an unlabelled section: no scored voxel, left out of the resampling
    tables = slab_tables(gt, seg, resolution=(40, 4, 4), border_nm=8)
    reps = segmentation_replicates(tables, resamples=100, seed=0)
    whole = segmentation_scores(gt, seg, resolution=(40, 4, 4), border_nm=8)
    assert reps["voi_merge"].estimate == pytest.approx(whole["voi_merge"], abs=1e-9)
    assert reps["voi_merge"].blocks == 5
    gt[5] = 0  # the second slab of 4 sections (4 and 5) is unlabelled: one slab left
    with pytest.raises(EmsrError, match="1 z-slab"):
        segmentation_replicates(slab_tables(gt, seg, sections_per_slab=4), resamples=100)
    with pytest.raises(EmsrError, match="one shape"):
        slab_tables(gt, seg[:1])
    with pytest.raises(EmsrError, match="block size"):
        slab_tables(gt, seg, sections_per_slab=0)


def test_segmentation_bootstrap_is_deterministic_and_identical_methods_tie():
    from emsrbench.stats import compare_to_best, segmentation_replicates, slab_tables

    gt, seg = labelled_volumes()
    a = segmentation_replicates(slab_tables(gt, seg), resamples=300, seed=2)
    b = segmentation_replicates(slab_tables(gt, seg.copy()), resamples=300, seed=2)
    np.testing.assert_array_equal(a["arand"].replicates, b["arand"].replicates)
    c = segmentation_replicates(slab_tables(gt, seg), resamples=300, seed=3)
    assert not np.array_equal(a["arand"].replicates, c["arand"].replicates)
    worse = seg.copy()
    worse[:, :, ::2] += 1000  # splits every object in every section
    w = segmentation_replicates(slab_tables(gt, worse), resamples=300, seed=2)
    best, diffs = compare_to_best(
        {"a": a["cremi_score"], "b": b["cremi_score"], "worse": w["cremi_score"]}, higher_is_better=False
    )
    assert best == "a" and diffs["b"].tied and diffs["b"].low == diffs["b"].high == 0.0
    assert not diffs["worse"].tied and diffs["worse"].low > 0


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
        # auto block length: this smooth random volume has no z-correlation, so single sections
        assert (
            "bootstrap over 6 blocks of 1 section (auto: Politis-White" in rows.loc[metric, "note"]
            and "500 resamples, seed 3" in rows.loc[metric, "note"]
        )
    assert rows.loc[["psnr_volume", "parameters"], "ci_low"].isna().all()

    plain = evaluate(bicubic, 8, "quick", sr_path, degraded_x8, None)
    assert plain["ci_low"].isna().all() and not plain["note"].str.contains("bootstrap").any()
    rows.reset_index().to_csv(tmp_path / "m.csv", index=False)
    back = read_tidy([tmp_path / "m.csv"]).set_index("metric")
    assert back.loc["psnr", "ci_high"] == rows.loc["psnr", "ci_high"]
