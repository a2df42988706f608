"""Coverage of the interval of a mean over correlated sections, measured on synthetic AR(1) series.

Per-section values ``x_t = rho x_(t-1) + e_t`` (stationary, true mean 0) stand for a metric of
sections correlated along z.  :func:`coverage` is the share of series whose interval of the mean
contains 0, with blocks of one section (``single``) or of the automatic length (``auto``,
:func:`emsrbench.stats.blocklength.auto_block_length` on the series itself).
``benchmarks/interval_coverage.py`` prints the table; :data:`MEASURED` is its output, shown in the
report (:func:`coverage_sentence`) and re-measured by ``tests/test_stats_coverage.py``.
"""

from __future__ import annotations

import math

import numpy as np

from .blocklength import auto_block_length
from .bootstrap import bootstrap_mean, section_blocks

__all__ = ["MEASURED", "RULES", "ar1", "coverage", "coverage_sentence"]

RULES = ("single", "auto")

# Coverage of the nominal 95 % BCa interval, (rho, sections) -> (single, auto): the output of
# `benchmarks/interval_coverage.py --reps 2000 --resamples 1000`.  With 12 sections no block
# length reaches 95 %: 12 sections correlated at rho 0.8 hold about as much information as 1-2
# independent ones, and 3 blocks of 4 sections cannot estimate a variance.
MEASURED = {
    (0.0, 12): (0.911, 0.911),
    (0.0, 50): (0.939, 0.936),
    (0.5, 12): (0.679, 0.686),
    (0.5, 50): (0.733, 0.807),
    (0.8, 12): (0.414, 0.452),
    (0.8, 50): (0.480, 0.693),
}


def ar1(rng: np.random.Generator, rho: float, n: int) -> np.ndarray:
    """A stationary AR(1) series of unit innovations (the first value from the stationary law)."""
    x = np.empty(n)
    x[0] = rng.normal() / math.sqrt(1.0 - rho * rho)
    e = rng.normal(size=n)
    for t in range(1, n):
        x[t] = rho * x[t - 1] + e[t]
    return x


def _block_length(series: np.ndarray, rule: str) -> int:
    return 1 if rule == "single" else auto_block_length({"series": series}).sections


def coverage(
    rho: float, n: int, reps: int, resamples: int, rules=RULES, confidence: float = 0.95, seed: int = 0
) -> dict[str, dict]:
    """Per block rule: ``coverage`` (share of intervals containing the true mean 0; a missing
    interval does not cover), ``missing`` (share) and mean block ``length``.  Every rule sees the
    same ``reps`` series and the same bootstrap seeds, so the rules' difference is paired."""
    rng = np.random.default_rng([seed, int(round(rho * 100)), n])
    tally = {rule: {"coverage": 0, "missing": 0, "length": 0} for rule in rules}
    for r in range(reps):
        x = ar1(rng, rho, n)
        for rule in rules:
            k = _block_length(x, rule)
            values, weights = section_blocks(x, k)
            iv = bootstrap_mean(values, weights, resamples=resamples, confidence=confidence, seed=r)
            t = tally[rule]
            t["length"] += k
            t["missing"] += bool(iv.missing)
            t["coverage"] += (not iv.missing) and iv.low <= 0.0 <= iv.high
    return {rule: {k: v / reps for k, v in t.items()} for rule, t in tally.items()}


def coverage_sentence() -> str:
    """The measured coverage at the default test size, for the report."""
    cells = ", ".join(f"rho {rho:g}: {MEASURED[(rho, 12)][1]:.0%}" for rho in (0.0, 0.5, 0.8))
    return (
        f"Measured coverage of a nominal 95 % interval of a mean over 12 sections with automatic blocks "
        f"(synthetic AR(1) series, benchmarks/interval_coverage.py): {cells}; over 50 sections "
        f"{MEASURED[(0.5, 50)][1]:.0%} and {MEASURED[(0.8, 50)][1]:.0%} at rho 0.5 and 0.8. The intervals are "
        "too narrow on correlated sections."
    )
