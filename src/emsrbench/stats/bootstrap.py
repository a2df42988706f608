"""Bootstrap confidence intervals over test blocks, and paired comparisons between methods.

Definitions
-----------
* A *block* is a unit of the test volume that is resampled as a whole: a section or a slab of
  ``k`` consecutive sections (the last one may be shorter).  ``n`` blocks.
* A *resample* draws ``n`` blocks with replacement.  It is described by its *multiplicities*:
  how many times each block was drawn (a row of the ``B x n`` matrix of
  :func:`multiplicities`).  All resamples come from one ``numpy.random.Generator(PCG64(seed))``
  index matrix, so the same seed and number of blocks give the same resamples for every
  statistic and every method: the replicates of two methods can be subtracted (a paired
  bootstrap).
* A *statistic* maps a multiplicity matrix ``M`` (rows: resamples, columns: blocks, float) to
  one value per row and per score (a dict).  The estimate is the statistic of the all-ones row
  (every block once: the test volume itself), the replicates those of the ``B`` resamples, the
  jackknife values those of the ``n`` leave-one-block-out rows (``1 - I``).  Two statistics:

  - :class:`WeightedMean` of per-block values (image metrics: a block's value is the mean of
    its sections, its weight the number of sections, so the estimate is the mean over
    sections that the leaderboard reports);
  - :class:`TableScores`, the whole-volume segmentation scores (VOI split/merge/sum, ARAND,
    CREMI score): the contingency table of a resampled volume (the drawn slabs concatenated
    along z) is the sum of the slab tables weighted by the multiplicities, and every score is
    a function of that table.  Its estimate is exactly the reported whole-volume score.

* Interval (:func:`bounds`, :func:`interval`): BCa (bias-corrected and accelerated, Efron
  1987) by default, percentile on request, from (estimate, replicates, jackknife).  The bias
  correction uses the share of replicates below the estimate (ties count half).  Every replicate
  equal to the estimate (e.g. identical methods) gives ``[estimate, estimate]``.  An interval
  that cannot be computed honestly is **missing** (NaN bounds and the reason): a non-finite
  value; a *degenerate* bootstrap distribution, i.e. fewer than ``(1 - confidence) / 2`` of the
  replicates on one side of the estimate.  That happens to whole-volume segmentation scores:
  where a segmentation gives each section's piece of an object its own segment (MALA on a
  12-section FIB-SEM crop), the test volume's VOI split is the *largest* any resample reaches
  (a resample repeats some slabs, so an object's pieces are fewer and less even), every
  replicate lies below it, the bias correction ``z0`` hits its clip and BCa returns the top
  replicate: an interval that excludes its own estimate (``[3.8638, 3.8638]`` around 3.8674
  on that crop).  The resamples then do not describe the estimate and no correction makes
  that interval honest, so none is given.
* Paired comparison of methods A and B over the same blocks: the interval of the statistic
  ``A - B`` whose replicates and jackknife values are the differences of A's and B's (same
  resamples), and the p-value of "A - B = 0" from inverting that interval (:func:`p_value`).
  Against the best method of a column the p-values are Holm-corrected over the column's
  comparisons (:func:`compare_to_best`); ``tied`` means **not shown to differ** at that
  family-wise level, not "equal".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

import numpy as np
from scipy import sparse
from scipy.special import ndtr, ndtri

from ..errors import EmsrError
from ..settings import merge_layers
from .blocklength import AUTO, block_length_setting

__all__ = [
    "BootstrapSettings",
    "Bounds",
    "Interval",
    "PairedDifference",
    "Replicates",
    "TableScores",
    "WeightedMean",
    "bootstrap_statistic",
    "bootstrap_mean",
    "bounds",
    "compare_to_best",
    "holm",
    "image_block_values",
    "interval",
    "mean_replicates",
    "multiplicities",
    "paired_bootstrap",
    "paired_interval",
    "p_value",
    "section_blocks",
    "segmentation_replicates",
    "slab_tables",
    "ties_with_best",
]

METHODS = ("bca", "percentile")
INDEX_BUDGET = 2**22  # resample indices drawn at once (32 MiB of int64); more resamples go in row chunks
CELL_BUDGET = 2**23  # (gt, seg) pairs x resamples held at once by TableScores (64 MiB per float64 array)
TABLE_SCORES = ("voi_split", "voi_merge", "voi_sum", "arand", "cremi_score")


@dataclass
class BootstrapSettings:
    """``metrics.intervals`` of the config: the bootstrap and its blocks.

    ``sections_per_block``: sections per block of the image metrics; ``sections_per_slab``:
    sections per z-slab of the segmentation scores: a positive number, or ``auto`` (the
    default) for a length chosen from the test volume (:mod:`emsrbench.stats.blocklength`).
    """

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    method: str = "bca"
    sections_per_block: int | str = AUTO
    sections_per_slab: int | str = AUTO

    @classmethod
    def merged(cls, *layers: dict, source: str = "bootstrap") -> "BootstrapSettings":
        s = merge_layers(cls, layers, source, "bootstrap")
        _check_settings(s.resamples, s.confidence, s.method, source)
        for key in ("sections_per_block", "sections_per_slab"):
            setattr(s, key, block_length_setting(getattr(s, key), f"{source}: {key}"))
        return s

    def with_lengths(
        self, sections_per_block: int | None = None, sections_per_slab: int | None = None
    ) -> "BootstrapSettings":
        """A copy with block lengths resolved (``auto`` replaced by the lengths used), as the
        sidecars record them: two methods are paired only over the same blocks."""
        return replace(
            self,
            sections_per_block=self.sections_per_block if sections_per_block is None else sections_per_block,
            sections_per_slab=self.sections_per_slab if sections_per_slab is None else sections_per_slab,
        )

    def kwargs(self) -> dict:
        """The keyword arguments of :func:`bootstrap_mean` / :func:`paired_bootstrap`."""
        return {"resamples": self.resamples, "confidence": self.confidence, "seed": self.seed, "method": self.method}


@dataclass(frozen=True)
class Bounds:
    """An interval's bounds, or NaN bounds and why (``missing``: "" when there is an interval)."""

    low: float
    high: float
    missing: str = ""


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    blocks: int
    method: str
    missing: str = ""  # why low / high are NaN ("" when there is an interval)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference(Interval):
    """Interval of the statistic of A minus that of B and the test of "A - B = 0".

    ``p_value``: the two-sided bootstrap p-value (:func:`p_value`); ``p_holm``: Holm-adjusted
    over the comparisons of its family (:func:`compare_to_best`: one column); ``tied``: **not
    shown to differ** at the family-wise level, ``p_holm > 1 - confidence``.  Tied does not
    mean equal: with 12 correlated sections a real difference can stay unshown.
    """

    tied: bool = False
    p_value: float = float("nan")
    p_holm: float = float("nan")


@dataclass(frozen=True, eq=False)
class Replicates:
    """A statistic's value on the test volume, on each resample and on each leave-one-block-out."""

    estimate: float
    replicates: np.ndarray  # (B,)
    jackknife: np.ndarray  # (n,)

    @property
    def blocks(self) -> int:
        return int(self.jackknife.size)

    def __sub__(self, other: "Replicates") -> "Replicates":
        if self.replicates.shape != other.replicates.shape or self.jackknife.shape != other.jackknife.shape:
            raise EmsrError(
                f"paired bootstrap: {self.replicates.size} resamples of {self.blocks} blocks against "
                f"{other.replicates.size} of {other.blocks}; a paired bootstrap needs the same resamples"
            )
        return Replicates(
            self.estimate - other.estimate, self.replicates - other.replicates, self.jackknife - other.jackknife
        )


# ------------------------------------------------------------------ checks
def _check_settings(resamples, confidence, method, where):
    if not isinstance(resamples, (int, np.integer)) or isinstance(resamples, bool) or resamples < 100:
        raise EmsrError(f"{where}: resamples must be an integer >= 100, got {resamples!r}")
    if not isinstance(confidence, (int, float, np.floating)) or not 0.0 < float(confidence) < 1.0:
        raise EmsrError(f"{where}: confidence must be a number between 0 and 1 (e.g. 0.95), got {confidence!r}")
    if method not in METHODS:
        raise EmsrError(f"{where}: unknown bootstrap method {method!r} (known: {', '.join(METHODS)})")


def _check_block_size(size, where: str) -> None:
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
        raise EmsrError(f"{where}: block size must be a positive number of sections, got {size!r}")


def _as_values(values, name: str, where: str) -> np.ndarray:
    try:
        x = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EmsrError(f"{where}: {name} must be numbers, got {type(values).__name__}") from None
    if x.ndim != 1:
        raise EmsrError(f"{where}: {name} must be one value per block (1-D), got shape {x.shape}")
    if x.size < 2:
        raise EmsrError(f"{where}: {name} has {x.size} block(s); a bootstrap needs at least 2")
    bad = np.flatnonzero(~np.isfinite(x))
    if bad.size:
        raise EmsrError(
            f"{where}: {name} has non-finite value {x[bad[0]]} at block {bad[0]} ({bad.size} in all); "
            "a bootstrap needs finite block values"
        )
    return x


def _as_weights(weights, n: int, where: str) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n,):
        raise EmsrError(f"{where}: {w.size} weights for {n} blocks")
    if not (np.isfinite(w).all() and (w > 0).all()):
        raise EmsrError(f"{where}: weights must be finite and > 0")
    return w


# ------------------------------------------------------------------ resamples
def multiplicities(blocks: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, blocks) int32: how often each block is drawn in each resample.

    Row ``r`` counts the indices of row ``r`` of ``Generator(PCG64(seed)).integers(0, blocks,
    (resamples, blocks))``, drawn in row chunks of at most :data:`INDEX_BUDGET` indices (the
    same numbers as one draw).  Same seed and ``blocks``: same resamples.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    out = np.zeros((resamples, blocks), dtype=np.int32)
    rows = max(1, INDEX_BUDGET // blocks)
    for r0 in range(0, resamples, rows):
        r1 = min(resamples, r0 + rows)
        idx = rng.integers(0, blocks, size=(r1 - r0, blocks))
        idx += (np.arange(r1 - r0) * blocks)[:, None]
        out[r0:r1] = np.bincount(idx.ravel(), minlength=(r1 - r0) * blocks).reshape(r1 - r0, blocks)
    return out


Statistic = Callable[[np.ndarray], dict]


def _evaluate(statistic, m: np.ndarray) -> dict:
    rows = max(1, int(getattr(statistic, "max_rows", m.shape[0]) or m.shape[0]))
    parts: dict[str, list] = {}
    for r0 in range(0, m.shape[0], rows):
        for k, v in statistic(np.asarray(m[r0 : r0 + rows], dtype=np.float64)).items():
            parts.setdefault(k, []).append(np.asarray(v, dtype=np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def bootstrap_statistic(statistic: Statistic, blocks: int, resamples: int, seed: int) -> dict[str, Replicates]:
    """Estimate, replicates and jackknife of every score of ``statistic`` (see the module doc).

    ``statistic(M)`` takes a float (rows, ``blocks``) multiplicity matrix and returns
    ``{score: (rows,) values}``; an optional ``max_rows`` attribute bounds the rows per call.
    """
    if blocks < 2:
        raise EmsrError(f"bootstrap: {blocks} block(s); a bootstrap needs at least 2")
    est = _evaluate(statistic, np.ones((1, blocks)))
    boot = _evaluate(statistic, multiplicities(blocks, resamples, seed))
    jack = _evaluate(statistic, 1.0 - np.eye(blocks))
    return {k: Replicates(float(est[k][0]), boot[k], jack[k]) for k in est}


def _share_below(boot: np.ndarray, x: float) -> float:
    """Share of the replicates below ``x``, ties counted half."""
    return (np.count_nonzero(boot < x) + 0.5 * np.count_nonzero(boot == x)) / boot.size


def _acceleration(jack: np.ndarray) -> float:
    """BCa acceleration from the leave-one-block-out values (Efron 1987, eq. 6.6)."""
    d = jack.mean() - jack
    den = 6.0 * float(np.dot(d, d)) ** 1.5
    return float(np.sum(d**3)) / den if den > 0 else 0.0


def _bca_levels(z0: float, acc: float, alpha: float) -> tuple[float, float] | None:
    """The BCa percentile levels of a central ``1 - 2 alpha`` interval; None where the
    acceleration folds the level map back (``1 - a (z0 + z) <= 0``)."""
    levels = []
    for z in (ndtri(alpha), ndtri(1.0 - alpha)):
        den = 1.0 - acc * (z0 + z)
        if den <= 0:
            return None
        levels.append(float(ndtr(z0 + (z0 + z) / den)))
    return levels[0], levels[1]


def _percent(confidence: float) -> str:
    return f"{100.0 * confidence:.4g}%"


def _missing(reason: str) -> Bounds:
    return Bounds(float("nan"), float("nan"), f"interval missing: {reason}")


def _degenerate(share: float, rep: Replicates, confidence: float) -> Bounds:
    return _missing(
        f"bootstrap distribution degenerate ({share:.1%} of {rep.replicates.size} resampled values below "
        f"the estimate {rep.estimate:.6g}, outside their central {_percent(confidence)}; the resamples "
        "do not describe this estimate)"
    )


def bounds(rep: Replicates, confidence: float = 0.95, method: str = "bca") -> Bounds:
    """The BCa or percentile interval, or NaN bounds and the reason (see the module doc).

    Missing when a value is not finite, when every resample gives one value other than the
    estimate, when fewer than ``(1 - confidence) / 2`` of the resamples lie on one side of the
    estimate (the bias correction would then pick the extreme replicates and exclude the
    estimate: the FIB-SEM crop's "[4.0412, 4.0419]" around a VOI split of 4.0257), when the BCa
    acceleration is too large for the level map, and, as last guards, when the interval does
    not contain its estimate or has zero width although the replicates vary.
    """
    est, boot, jack = rep.estimate, rep.replicates, rep.jackknife
    if not np.isfinite(est):
        return _missing("the estimate is not finite")
    undefined = int(np.count_nonzero(~np.isfinite(boot)))
    if undefined or not np.isfinite(jack).all():
        return _missing(f"the score is undefined on {undefined} of {boot.size} resamples or a leave-one-block-out")
    tol = 1e-12 * max(1.0, abs(est))
    if np.ptp(boot) <= tol:
        if abs(float(boot[0]) - est) <= tol:  # no variation at all, e.g. two identical methods
            return Bounds(est, est)
        return _degenerate(_share_below(boot, est), rep, confidence)
    alpha = (1.0 - confidence) / 2.0
    share = _share_below(boot, est)
    if not alpha <= share <= 1.0 - alpha:
        return _degenerate(share, rep, confidence)
    if method == "percentile":
        levels = (alpha, 1.0 - alpha)
    else:
        acc = _acceleration(jack)
        levels = _bca_levels(float(ndtri(share)), acc, alpha)
        if levels is None:
            return _missing(
                f"BCa acceleration {acc:.3g} too large for a {_percent(confidence)} interval "
                f"(one of the {jack.size} blocks dominates the leave-one-out values)"
            )
    low, high = (float(v) for v in np.quantile(boot, levels))
    if not low <= est <= high:
        return _missing(f"the interval [{low:.6g}, {high:.6g}] excludes its estimate {est:.6g}")
    if high - low <= tol:  # both levels fall in one atom of a few-valued distribution (e.g. 3 slabs)
        return _missing(
            f"the interval has zero width though the {boot.size} resampled values vary "
            f"({np.unique(boot).size} distinct): too few blocks ({jack.size}) to resolve its tails"
        )
    return Bounds(low, high)


def interval(rep: Replicates, confidence: float = 0.95, method: str = "bca") -> tuple[float, float]:
    """(low, high) of :func:`bounds`; NaN when the interval is missing."""
    b = bounds(rep, confidence, method)
    return b.low, b.high


def p_value(rep: Replicates, method: str = "bca") -> float:
    """Two-sided bootstrap p-value of "the statistic is 0": the smallest ``1 - confidence`` at
    which the interval of :func:`bounds` excludes 0 (the interval inverted; Efron & Tibshirani
    1993, ch. 15).  Resolution ``1 / B``; 0 where 0 lies beyond every BCa level."""
    est, boot = rep.estimate, rep.replicates
    tol = 1e-12 * max(1.0, abs(est))
    if np.ptp(boot) <= tol:  # the same value on every resample: 0 or certainly not 0
        return 1.0 if abs(est) <= tol else 0.0
    b = boot.size
    w = float(ndtri(np.clip(_share_below(boot, 0.0), 0.5 / b, 1.0 - 0.5 / b)))
    if method == "bca":
        z0 = float(ndtri(np.clip(_share_below(boot, est), 0.5 / b, 1.0 - 0.5 / b)))
        acc = _acceleration(rep.jackknife)
        w -= z0
        if 1.0 + acc * w <= 0:
            return 0.0
        w = w / (1.0 + acc * w) - z0  # the normal quantile z whose BCa bound is 0
    return float(2.0 * ndtr(-abs(w)))


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm (1979) step-down adjusted p-values of one family of tests.

    A NaN p-value (a comparison without an interval) stays NaN but counts in the family as a
    test that is never rejected, so it makes the others' correction stricter, never looser.
    """
    m = len(p_values)
    order = sorted(p_values, key=lambda k: (np.isnan(p_values[k]), p_values[k]))
    out, running = {}, 0.0
    for i, name in enumerate(order):
        p = p_values[name]
        if np.isnan(p):
            out[name] = float("nan")
            continue
        running = max(running, min(1.0, (m - i) * p))
        out[name] = running
    return out


def _interval(rep: Replicates, confidence: float, resamples: int, method: str) -> Interval:
    b = bounds(rep, confidence, method)
    return Interval(rep.estimate, b.low, b.high, float(confidence), int(resamples), rep.blocks, method, b.missing)


def paired_interval(a: Replicates, b: Replicates, confidence: float = 0.95, method: str = "bca") -> PairedDifference:
    """Interval of A - B from two statistics' replicates on the same resamples, its p-value
    and the tie of this one comparison (``p > 1 - confidence``; no interval: not tied)."""
    d = a - b
    iv = bounds(d, confidence, method)
    p = p_value(d, method) if not iv.missing else float("nan")
    return PairedDifference(
        d.estimate,
        iv.low,
        iv.high,
        float(confidence),
        int(d.replicates.size),
        d.blocks,
        method,
        iv.missing,
        tied=bool(p > 1.0 - confidence),
        p_value=p,
        p_holm=p,
    )


# ------------------------------------------------------------------ the weighted mean
class WeightedMean:
    """``sum(m * w * x) / sum(m * w)`` per row of multiplicities ``m``: the mean over sections
    when ``x`` are section-mean block values and ``w`` their numbers of sections."""

    def __init__(self, values: np.ndarray, weights: np.ndarray, name: str = "mean"):
        self.wx = weights * values
        self.w = weights
        self.name = name
        self.max_rows = max(1, INDEX_BUDGET // values.size)

    def __call__(self, m: np.ndarray) -> dict:
        return {self.name: (m * self.wx).sum(axis=1) / (m * self.w).sum(axis=1)}


def mean_replicates(
    values, weights=None, *, resamples: int = 2000, seed: int = 0, what: str = "bootstrap"
) -> Replicates:
    """Replicates of the (weighted) mean of per-block ``values``."""
    x = _as_values(values, "block values", what)
    w = _as_weights(weights, x.size, what)
    return bootstrap_statistic(WeightedMean(x, w), x.size, int(resamples), seed)["mean"]


def bootstrap_mean(
    values,
    weights=None,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "bca",
    what: str = "bootstrap",
) -> Interval:
    """Confidence interval of the (weighted) mean of per-block ``values``; ``what`` prefixes errors."""
    _check_settings(resamples, confidence, method, what)
    rep = mean_replicates(values, weights, resamples=resamples, seed=seed, what=what)
    return _interval(rep, confidence, resamples, method)


def paired_bootstrap(
    a,
    b,
    weights=None,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    method: str = "bca",
    what: str = "paired bootstrap",
) -> PairedDifference:
    """Interval of the (weighted) mean of ``a`` minus that of ``b`` over the same blocks, and the tie."""
    _check_settings(resamples, confidence, method, what)
    xa = _as_values(a, "first method's block values", what)
    xb = _as_values(b, "second method's block values", what)
    if xa.shape != xb.shape:
        raise EmsrError(
            f"{what}: the two methods have {xa.size} and {xb.size} blocks; a paired bootstrap needs the same blocks"
        )
    ra = mean_replicates(xa, weights, resamples=resamples, seed=seed, what=what)
    rb = mean_replicates(xb, weights, resamples=resamples, seed=seed, what=what)
    return paired_interval(ra, rb, confidence, method)


def compare_to_best(
    reps: Mapping[str, Replicates],
    higher_is_better: bool,
    confidence: float = 0.95,
    method: str = "bca",
    what: str = "compare_to_best",
) -> tuple[str, dict[str, PairedDifference]]:
    """The best method by estimate (first one on equal estimates) and, per method, method - best.

    The m - 1 comparisons of the others with the best are one family: their p-values are
    Holm-corrected, so "tied" means not shown to differ from the best at the family-wise level
    ``1 - confidence`` (the chance that any method of the column is wrongly marked as
    different stays below it).  The best itself: a [0, 0] difference, tied, p 1.
    """
    if not reps:
        raise EmsrError(f"{what}: no methods to compare")
    sign = 1.0 if higher_is_better else -1.0
    best = max(reps, key=lambda k: sign * reps[k].estimate)
    diffs = {name: paired_interval(r, reps[best], confidence, method) for name, r in reps.items()}
    adjusted = holm({name: d.p_value for name, d in diffs.items() if name != best})
    alpha = 1.0 - confidence
    return best, {
        name: d if name == best else replace(d, p_holm=adjusted[name], tied=bool(adjusted[name] > alpha))
        for name, d in diffs.items()
    }


def ties_with_best(
    block_values: Mapping[str, np.ndarray], higher_is_better: bool, weights=None, **kw
) -> tuple[str, dict[str, PairedDifference]]:
    """The best method (by point estimate) and, per method, the paired difference method - best.

    The best method is compared with itself too (a degenerate [0, 0] interval, tied).  Every
    comparison uses the same seed, hence the same resampled blocks.
    """
    what = kw.pop("what", "ties_with_best")
    if not block_values:
        raise EmsrError(f"{what}: no methods to compare")
    resamples, confidence, seed, method = (
        kw.get("resamples", 2000),
        kw.get("confidence", 0.95),
        kw.get("seed", 0),
        kw.get("method", "bca"),
    )
    _check_settings(resamples, confidence, method, what)
    reps = {
        name: mean_replicates(v, weights, resamples=resamples, seed=seed, what=f"{what}: {name}")
        for name, v in block_values.items()
    }
    sizes = {r.blocks for r in reps.values()}
    if len(sizes) > 1:
        raise EmsrError(f"{what}: the methods have {sorted(sizes)} blocks; a paired bootstrap needs the same blocks")
    return compare_to_best(reps, higher_is_better, confidence, method, what)


# ------------------------------------------------------------------ image blocks
def _slabs(depth: int, size: int, where: str) -> list[tuple[int, int]]:
    _check_block_size(size, where)
    return [(z, min(z + size, depth)) for z in range(0, depth, size)]


def section_blocks(
    per_section: np.ndarray, sections_per_block: int = 1, what: str = "section_blocks"
) -> tuple[np.ndarray, np.ndarray]:
    """(values, weights) of blocks of ``sections_per_block`` consecutive sections: the mean of
    the block's section values, and its number of sections (the weighted mean of the blocks is
    the mean over sections)."""
    per_section = np.asarray(per_section, dtype=np.float64)
    slabs = _slabs(per_section.size, sections_per_block, what)
    values = np.array([per_section[z0:z1].mean() for z0, z1 in slabs])
    weights = np.array([z1 - z0 for z0, z1 in slabs], dtype=np.float64)
    return values, weights


def image_block_values(
    hr: np.ndarray, sr: np.ndarray, metric: str, sections_per_block: int = 1, what: str = "image_block_values"
) -> tuple[np.ndarray, np.ndarray]:
    """Per-block (values, weights) of ``psnr`` or ``ssim`` (see :func:`section_blocks`).

    PSNR of an identical section is inf, which the bootstrap rejects with a one-line error.
    """
    from ..metrics import psnr_sections, ssim_sections

    funcs = {"psnr": psnr_sections, "ssim": ssim_sections}
    if metric not in funcs:
        raise EmsrError(f"{what}: no per-section values for metric {metric!r} (known: {', '.join(funcs)})")
    return section_blocks(funcs[metric](hr, sr, what), sections_per_block, what)


# ------------------------------------------------------------------ segmentation: whole-volume scores
def slab_tables(
    gt,
    seg,
    *,
    sections_per_slab: int = 1,
    resolution=None,
    border_nm: float | None = None,
    threads: int | None = None,
    what: str = "slab_tables",
):
    """Contingency tables (:class:`emsrbench.segment.scores.Contingency`) of the z-slabs of
    ``sections_per_slab`` sections, CREMI border mask applied per section as on the whole volume.

    ``gt`` / ``seg`` are (z, y, x) arrays or datasets of one shape.  Their sum is the
    whole volume's table.
    """
    from ..segment.scores import contingency

    shape_g, shape_s = tuple(getattr(gt, "shape", np.shape(gt))), tuple(getattr(seg, "shape", np.shape(seg)))
    if shape_g != shape_s or len(shape_g) != 3:
        raise EmsrError(
            f"{what}: ground truth {shape_g} and segmentation {shape_s} must be (z,y,x) volumes of one shape"
        )
    return [
        contingency(gt[z0:z1], seg[z0:z1], resolution=resolution, border_nm=border_nm, threads=threads, where=what)
        for z0, z1 in _slabs(shape_g[0], sections_per_slab, what)
    ]


def _sum_xlogx(x: np.ndarray) -> np.ndarray:
    """Column sums of x * log2(x), 0 log 0 = 0."""
    lg = np.zeros_like(x)
    np.log2(x, out=lg, where=x > 0)
    lg *= x
    return lg.sum(axis=0)


class TableScores:
    """Whole-volume VOI split/merge/sum, ARAND and CREMI score of a resampled volume.

    ``tables``: one contingency table per slab (ground truth 0 dropped).  The (gt, seg) pairs of
    all slabs are unified into a sparse pairs x slabs count matrix ``C``; a row ``m`` of
    multiplicities gives the table ``C @ m`` of the volume made of the drawn slabs, and its
    marginals (segment sizes) by summing pairs over the gt or the seg label (sparse indicator
    matrices).  The scores follow :func:`emsrbench.segment.scores.scores_from_table`:
    ``voi_split = (sum_i a_i log a_i - sum_ij n_ij log n_ij) / N`` (bits),
    ``voi_merge`` likewise with the segment sizes ``b_j``, ARAND from the pair counts
    ``sum n**2 - N``.  A resample without scored voxels gives NaN.
    """

    def __init__(self, tables):
        tables = [t.scored() for t in tables]
        slab = (
            np.concatenate([np.full(t.counts.size, k, np.int64) for k, t in enumerate(tables)])
            if tables
            else np.zeros(0, np.int64)
        )
        g = np.concatenate([t.gt_ids for t in tables]) if tables else np.zeros(0, np.int64)
        s = np.concatenate([t.seg_ids for t in tables]) if tables else np.zeros(0, np.int64)
        c = np.concatenate([t.counts for t in tables]).astype(np.float64) if tables else np.zeros(0)
        gu, gi = np.unique(g, return_inverse=True)
        su, si = np.unique(s, return_inverse=True)
        pu, pi = np.unique(gi.astype(np.int64) * max(len(su), 1) + si, return_inverse=True)
        n_pairs, n_slabs = len(pu), len(tables)
        self.counts = sparse.csr_matrix((c, (pi, slab)), shape=(n_pairs, n_slabs))
        pair_gt, pair_seg = pu // max(len(su), 1), pu % max(len(su), 1)
        ones = np.ones(n_pairs)
        self.gt_of = sparse.csr_matrix((ones, (pair_gt, np.arange(n_pairs))), shape=(len(gu), n_pairs))
        self.seg_of = sparse.csr_matrix((ones, (pair_seg, np.arange(n_pairs))), shape=(len(su), n_pairs))
        self.slab_voxels = np.asarray(self.counts.sum(axis=0)).ravel()
        self.max_rows = max(1, CELL_BUDGET // max(n_pairs, 1))

    def __call__(self, m: np.ndarray) -> dict:
        n = np.asarray(self.counts @ m.T)  # pairs x rows: the resampled tables
        a = np.asarray(self.gt_of @ n)
        b = np.asarray(self.seg_of @ n)
        total = n.sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            nlogn = _sum_xlogx(n)
            voi_split = np.maximum((_sum_xlogx(a) - nlogn) / total, 0.0)
            voi_merge = np.maximum((_sum_xlogx(b) - nlogn) / total, 0.0)
            both = (n * n).sum(axis=0) - total
            den = 0.5 * ((a * a).sum(axis=0) - total) + 0.5 * ((b * b).sum(axis=0) - total)
            arand = np.where(den > 0, 1.0 - both / np.where(den > 0, den, 1.0), np.nan)
            voi_sum = voi_split + voi_merge
            cremi = np.sqrt(voi_sum * arand)
        empty = total == 0
        out = {"voi_split": voi_split, "voi_merge": voi_merge, "voi_sum": voi_sum, "arand": arand, "cremi_score": cremi}
        for v in out.values():
            v[empty] = np.nan
        return out


def segmentation_replicates(
    tables, *, resamples: int = 2000, seed: int = 0, what: str = "segmentation bootstrap"
) -> dict[str, Replicates]:
    """Replicates of the whole-volume scores (:data:`TABLE_SCORES`) from per-slab tables.

    Slabs without scored voxels (ground truth 0 everywhere after the border mask) are left out:
    they add nothing to any table, and which they are depends on the ground truth alone, so
    every method of one test volume keeps the same slabs.  Needs >= 2 slabs with scored voxels.
    """
    stat = TableScores(tables)
    keep = np.flatnonzero(stat.slab_voxels > 0)
    if keep.size < 2:
        raise EmsrError(
            f"{what}: {keep.size} z-slab(s) with scored voxels (ground truth != 0); "
            "a bootstrap needs at least 2 (use thinner slabs)"
        )
    if keep.size < len(tables):
        stat = TableScores([tables[k] for k in keep])
    return bootstrap_statistic(stat, keep.size, int(resamples), seed)
