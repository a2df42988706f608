"""Statistics over test blocks: bootstrap confidence intervals and paired method comparisons."""

from .bootstrap import (
    BootstrapSettings,
    Interval,
    PairedDifference,
    bootstrap_mean,
    image_block_values,
    paired_bootstrap,
    segmentation_block_values,
    ties_with_best,
)

__all__ = [
    "BootstrapSettings",
    "Interval",
    "PairedDifference",
    "bootstrap_mean",
    "image_block_values",
    "paired_bootstrap",
    "segmentation_block_values",
    "ties_with_best",
]
