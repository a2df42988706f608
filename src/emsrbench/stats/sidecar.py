"""Bootstrap sidecars and the tie marks computed from them.

Every ``evaluate`` job writes ``results/metrics/<method>/x<scale>-bootstrap.npz`` and every
``score_segmentation`` job ``results/segment/<net>/<method>/x<scale>-bootstrap.npz`` next to
its tidy CSV: per metric the estimate, the ``B`` bootstrap replicates and the ``n`` jackknife
values (:class:`emsrbench.stats.bootstrap.Replicates`), with the settings that made them (seed,
resamples, confidence, interval method, blocks, sections per block) and the row they belong to
(method, variant, scale, segmenter).  With intervals disabled the sidecar holds no metric.

Replicates of two sidecars drawn with the same seed over the same number of blocks come from the
same resamples, so their difference is a paired bootstrap of method A minus method B:
:func:`tie_marks` compares every method with the best one per scale x metric x segmenter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import EmsrError
from ..io import atomic_path
from .blocklength import AUTO
from .bootstrap import BootstrapSettings, PairedDifference, Replicates, compare_to_best

__all__ = ["Sidecar", "read", "tie_marks", "write"]

FORMAT = 1
META = (
    "format",
    "kind",
    "method",
    "variant",
    "scale",
    "segmenter",
    "seed",
    "resamples",
    "confidence",
    "ci_method",
    "blocks",
    "sections_per_block",
)
# Settings that must agree for two sidecars' replicates to be paired.
PAIRING = ("seed", "resamples", "blocks", "sections_per_block", "confidence", "ci_method")


@dataclass
class Sidecar:
    path: str
    kind: str  # "image" | "segmentation"
    method: str
    variant: str
    scale: int
    segmenter: str
    seed: int
    resamples: int
    confidence: float
    ci_method: str
    blocks: int
    sections_per_block: int
    reps: dict = field(default_factory=dict)  # metric -> Replicates

    def pairing(self) -> tuple:
        return tuple(getattr(self, k) for k in PAIRING)


def write(
    path: str | Path,
    reps: dict[str, Replicates],
    *,
    kind: str,
    method: str,
    scale: int,
    settings: BootstrapSettings | None,
    variant: str = "",
    segmenter: str = "",
) -> None:
    """Write the sidecar atomically; ``settings`` None (intervals disabled): no metric in it."""
    reps = reps if settings is not None else {}
    blocks = {r.blocks for r in reps.values()}
    if len(blocks) > 1:
        raise EmsrError(f"{path}: metrics with different numbers of blocks {sorted(blocks)} in one sidecar")
    s = settings or BootstrapSettings(sections_per_block=0, sections_per_slab=0)  # disabled: no blocks
    size = s.sections_per_block if kind == "image" else s.sections_per_slab
    if size == AUTO:  # the pairing check compares the lengths used, so they must be resolved here
        raise EmsrError(f"{path}: block length 'auto' not resolved (pass the settings the intervals used)")
    arrays = {
        "format": np.int64(FORMAT),
        "kind": np.str_(kind),
        "method": np.str_(method),
        "variant": np.str_(variant),
        "scale": np.int64(scale),
        "segmenter": np.str_(segmenter),
        "seed": np.int64(s.seed),
        "resamples": np.int64(s.resamples),
        "confidence": np.float64(s.confidence),
        "ci_method": np.str_(s.method),
        "blocks": np.int64(blocks.pop() if blocks else 0),
        "sections_per_block": np.int64(size),
        "metrics": np.array(sorted(reps), dtype=np.str_),
    }
    for name, r in reps.items():
        arrays[f"{name}.estimate"] = np.float64(r.estimate)
        arrays[f"{name}.replicates"] = np.asarray(r.replicates, np.float64)
        arrays[f"{name}.jackknife"] = np.asarray(r.jackknife, np.float64)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)


def read(path: str | Path) -> Sidecar:
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise EmsrError(f"{path}: not a readable bootstrap sidecar ({err})") from None
    missing = [k for k in META + ("metrics",) if k not in data]
    if missing:
        raise EmsrError(f"{path}: not a bootstrap sidecar (missing {', '.join(missing)})")
    if int(data["format"]) != FORMAT:
        raise EmsrError(
            f"{path}: bootstrap sidecar format {int(data['format'])}, this version reads {FORMAT} (rerun the job)"
        )
    reps = {}
    for name in data["metrics"].tolist():
        keys = [f"{name}.{k}" for k in ("estimate", "replicates", "jackknife")]
        if any(k not in data for k in keys):
            raise EmsrError(f"{path}: metric '{name}' lacks its estimate, replicates or jackknife")
        reps[name] = Replicates(float(data[keys[0]]), data[keys[1]], data[keys[2]])
    meta = {k: data[k].item() for k in META if k != "format"}
    return Sidecar(path=str(path), reps=reps, **{k: (str(v) if isinstance(v, str) else v) for k, v in meta.items()})


def tie_marks(
    sidecars: Iterable[Sidecar],
    direction: Callable[[str], int],
) -> dict[tuple, tuple[str, PairedDifference]]:
    """Per (method, variant, scale, metric, segmenter): ("best" | "tied" | "worse", method - best).

    ``sidecars``: the methods to compare (the caller leaves out reference and variant rows).
    Metrics are compared where ``direction(metric)`` is +1 (higher is better) or -1 (lower);
    0 is not ranked.  In each scale x metric x segmenter group (a column) the best method is the
    one with the best estimate; a method is ``tied`` when its paired difference to the best is
    **not shown to differ** from 0 at the family-wise level ``1 - confidence``: the p-values of
    the column's m - 1 comparisons with the best are Holm-corrected
    (:func:`emsrbench.stats.bootstrap.compare_to_best`).  A comparison without an interval
    (undefined or degenerate, :func:`emsrbench.stats.bootstrap.bounds`) gets no mark.  Sidecars
    of one group with different seed, resamples, blocks, block size (the length used, ``auto``
    resolved), confidence or interval method are refused (their replicates are not paired).
    """
    groups: dict[tuple, list[tuple[Sidecar, Replicates]]] = {}
    for sc in sidecars:
        for metric, rep in sc.reps.items():
            if direction(metric) and np.isfinite(rep.estimate):
                groups.setdefault((sc.scale, metric, sc.segmenter), []).append((sc, rep))
    out = {}
    for (scale, metric, segmenter), members in groups.items():
        first = members[0][0]
        for sc, _ in members[1:]:
            if sc.pairing() != first.pairing():
                diff = ", ".join(
                    f"{k} {getattr(first, k)} vs {getattr(sc, k)}"
                    for k in PAIRING
                    if getattr(first, k) != getattr(sc, k)
                )
                raise EmsrError(
                    f"{sc.path}: bootstrap settings differ from {first.path} ({diff}); "
                    "rerun both with the same metrics.intervals"
                )
        keys = {(sc.method, sc.variant): rep for sc, rep in members}
        if len(keys) < len(members):
            raise EmsrError(
                f"{members[-1][0].path}: {metric} of {members[-1][0].method} x{scale} appears in two sidecars"
            )
        best, diffs = compare_to_best(
            keys, direction(metric) > 0, first.confidence, first.ci_method, what=f"ties of {metric} x{scale}"
        )
        for (method, variant), d in diffs.items():
            if (method, variant) == best:
                mark = "best"
            elif d.missing:  # no honest interval (undefined score, degenerate bootstrap): not compared
                mark = ""
            else:
                mark = "tied" if d.tied else "worse"
            out[(method, variant, scale, metric, segmenter)] = (mark, d)
    return out
