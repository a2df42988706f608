"""Segmentation stage: affinity targets, the study's fragments + waterz agglomeration, scores.

``scores`` needs numpy/scipy/fastremap only; ``agglomerate`` imports mahotas and waterz when
fragments or segmentations are computed, so importing this package stays cheap.

The networks and the workflow stage import torch and are imported by name: ``superhuman`` and
``mala`` (the architectures and their presets), ``networks`` (one interface, model files),
``training`` (affinity sampler and weighted-MSE objective for :func:`emsrbench.train.fit`),
``blockwise`` (Gaussian-blended blockwise inference) and ``stage`` (segment a volume, score it).
"""

from .affinities import affinities_from_labels, class_balance_weights, widen_borders
from .agglomerate import (
    SCORING_FUNCTIONS,
    agglomerate,
    as_uint32_labels,
    boundary_map,
    fragments,
    iter_agglomerate,
    segment,
)
from .scores import SCORE_KEYS, Contingency, border_mask, contingency, scores_from_table, segmentation_scores

__all__ = [
    "SCORE_KEYS",
    "SCORING_FUNCTIONS",
    "Contingency",
    "affinities_from_labels",
    "agglomerate",
    "as_uint32_labels",
    "border_mask",
    "boundary_map",
    "class_balance_weights",
    "contingency",
    "fragments",
    "iter_agglomerate",
    "scores_from_table",
    "segment",
    "segmentation_scores",
    "widen_borders",
]
