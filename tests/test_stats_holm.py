"""Tie marks: bootstrap p-values from the inverted interval, Holm-corrected over a column."""

from __future__ import annotations

import numpy as np
import pytest

from emsrbench.stats import bounds, compare_to_best, holm, mean_replicates, p_value
from emsrbench.stats.sidecar import Sidecar, tie_marks


def test_holm_adjusts_step_down_and_keeps_missing_comparisons_in_the_family():
    adjusted = holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    # sorted d .005 x4 = .02, a .01 x3 = .03, c .03 x2 = .06, b .04 x1 -> .06 (monotone)
    assert adjusted == pytest.approx({"d": 0.02, "a": 0.03, "c": 0.06, "b": 0.06})
    with_missing = holm({"a": 0.02, "b": float("nan")})
    assert with_missing["a"] == pytest.approx(0.04) and np.isnan(with_missing["b"])  # m = 2, not 1
    assert holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}
    assert holm({}) == {}


@pytest.mark.parametrize("method", ["bca", "percentile"])
def test_p_value_is_the_level_at_which_the_interval_reaches_zero(method):
    """Inverting the interval: at confidence 1 - p the bound sits at 0, so a little wider
    contains 0 and a little narrower does not (up to the 1/B resolution of the replicates)."""
    rng = np.random.default_rng(0)
    base = rng.normal(25, 2, 40)
    checked = 0
    for _ in range(60):
        a = mean_replicates(base + rng.normal(0, 1, 40), resamples=2000, seed=1)
        b = mean_replicates(base + rng.uniform(0, 0.6) + rng.normal(0, 1, 40), resamples=2000, seed=1)
        p = p_value(b - a, method)
        if not 0.01 < p < 0.9:
            continue
        checked += 1
        wider, narrower = bounds(b - a, 1 - 0.8 * p, method), bounds(b - a, 1 - 1.2 * p, method)
        assert wider.low <= 0.0 <= wider.high and not narrower.low <= 0.0 <= narrower.high, p
    assert checked >= 20


def five_methods():
    """Per-section values (40 sections that vary a lot, shared) of the best method and four
    others: two clearly worse, and two "near" ones 0.05 under with noise, whose differences to
    the best come out at p 0.044 and 0.025 (seeded: shown to differ one at a time, not after
    correcting for the column's four comparisons)."""
    rng = np.random.default_rng(0)
    base = rng.normal(25.0, 3.0, 40)
    sections = {
        "best": base + 0.5 + rng.normal(0, 0.4, 40),
        "worse0": base - 1.0 + rng.normal(0, 0.4, 40),
        "worse1": base + 0.3 + rng.normal(0, 0.4, 40),
        "near0": base + 0.45 + rng.normal(0, 0.4, 40),
        "near1": base + 0.45 + rng.normal(0, 0.4, 40),
    }
    return {name: mean_replicates(x, resamples=2000, seed=3) for name, x in sections.items()}


def test_the_column_is_holm_corrected():
    reps = five_methods()
    best, diffs = compare_to_best(reps, higher_is_better=True)
    assert best == "best" and diffs["best"].tied and diffs["best"].p_value == 1.0
    for near in ("near0", "near1"):
        # one at a time shown to differ (p < 0.05, the 95 % interval excludes 0) ...
        assert diffs[near].p_value < 0.05 and diffs[near].high < 0
        # ... but not at the family-wise 5 % level of the column's four comparisons: tied
        assert diffs[near].p_holm > 0.05 and diffs[near].tied
    for worse in ("worse0", "worse1"):
        assert diffs[worse].p_holm < 0.01 and not diffs[worse].tied
    for name, d in diffs.items():
        if name != best:
            assert d.p_holm >= d.p_value and d.tied == (d.p_holm > 0.05)
    # a column of two: no correction, near1 is then shown to differ
    _, two = compare_to_best({k: reps[k] for k in ("best", "near1")}, higher_is_better=True)
    assert two["near1"].p_holm == two["near1"].p_value < 0.05 and not two["near1"].tied


def test_tie_marks_use_the_corrected_comparison():
    reps = five_methods()
    cars = [
        Sidecar("x", "image", name, "", 8, "", 3, 2000, 0.95, "bca", 40, 1, {"psnr": r}) for name, r in reps.items()
    ]
    marks = tie_marks(cars, lambda metric: 1)
    _, diffs = compare_to_best(reps, higher_is_better=True)
    for name, d in diffs.items():
        mark, diff = marks[(name, "", 8, "psnr", "")]
        assert mark == ("best" if name == "best" else "tied" if d.tied else "worse")
        assert diff.p_holm == d.p_holm
    assert marks[("near1", "", 8, "psnr", "")][0] == "tied" and marks[("worse1", "", 8, "psnr", "")][0] == "worse"
