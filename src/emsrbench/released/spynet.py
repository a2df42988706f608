"""SPyNet (POD's optical flow) in our naming.

The study's SPyNet file is BasicSR's ``spynet_sintel_final-3d2a1287.pth``: ``{"params": ...}``
with ``basic_module.{level}.basic_module.{0,2,4,6,8}`` convs, names our :class:`SpyNet` keeps.
basicsr's SpyNet loads that file strictly *before* it registers its ImageNet ``mean`` / ``std``
buffers, so the file has none; a model's state dict (the study's stage III file) has them.
Ours hard-codes the same constants, so where they are present their values are checked.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..nets.imagenet import IMAGENET_MEAN, IMAGENET_STD
from ..nets.spynet import LEVELS, SpyNet
from .checkpoint import Row, conv, meta_shapes, read_release, remap

IMAGENET = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD}
CONVS = (0, 2, 4, 6, 8)  # the five 7x7 convs of each basic module (ReLUs between)


def spynet_rows(buffers_required: bool) -> list[Row]:
    rows = []
    for level in range(LEVELS):
        for j in CONVS:
            rows += conv(f"basic_module.{level}.basic_module.{j}", f"basic_module.{level}.basic_module.{j}")
    for name, value in IMAGENET.items():
        # float32 as basicsr registers them (torch.Tensor of the Python floats)
        rows.append(
            Row(
                name,
                None,
                f"SPyNet's ImageNet input {name}, a constant in ours",
                (1, 3, 1, 1),
                torch.tensor(value, dtype=torch.float32).view(1, 3, 1, 1),
                optional=not buffers_required,
            )
        )
    return rows


def load_released_spynet(path: str | Path) -> dict:
    """BasicSR's SPyNet file as a state dict of our :class:`SpyNet` (any ``spynet_levels``:
    ours always holds all six basic modules)."""
    ours = meta_shapes(lambda: SpyNet(LEVELS))
    return remap(read_release(path), spynet_rows(buffers_required=False), ours, str(path), "SPyNet")
