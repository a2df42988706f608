"""VGG19 (the MPF mask's feature network) in our naming.

The study's VGG file is torchvision's ImageNet VGG19, ``vgg19-dcbb9e9d.pth`` (bare state dict:
``features.{i}`` convs, ``classifier.{0,3,6}`` linears), loaded strictly into
``torchvision.models.vgg19`` by model/VGG.py, which then keeps ``features[:36]`` in five
``nn.Sequential`` slices that keep torchvision's layer indices (``slice1.0``, ``slice1.2``,
``slice2.5``, ...): the names its stage III file carries under ``vgg.``.  Ours keeps
``features.{i}`` (all 16 convs with ``vgg_full``, else the two the mask runs, up to relu1_2).
"""

from __future__ import annotations

from pathlib import Path

from ..gpemsr.config import GPEMSRConfig
from ..gpemsr.mpf import mask_vgg
from ..nets.vgg19 import CONV_LAYERS, RELU1_2
from .checkpoint import Row, conv, meta_shapes, read_release, remap, unused

CONVS = tuple(CONV_LAYERS.values())  # conv layers of torchvision's vgg19.features, by layer index
RELU1_2_CONVS = tuple(i for i in CONVS if i < RELU1_2)  # the only convs the MPF mask runs
# model/VGG.py: slice s holds torchvision layers [start, end)
STUDY_SLICES = {1: (0, 4), 2: (4, 9), 3: (9, 18), 4: (18, 27), 5: (27, 36)}
# torchvision's classifier, which the study discards (and which we never build)
CLASSIFIER = {"classifier.0": (4096, 25088), "classifier.3": (4096, 4096), "classifier.6": (1000, 4096)}
PAST_RELU1_2 = "a VGG19 conv past relu1_2, which the MPF mask never runs (kept with vgg_full)"


def study_slice_name(i: int) -> str:
    """Where model/VGG.py keeps torchvision layer ``i``: ``slice{s}.{i}``."""
    return next(f"slice{s}.{i}" for s, (a, b) in STUDY_SLICES.items() if a <= i < b)


def feature_rows(cfg: GPEMSRConfig, study_slices: bool) -> list[Row]:
    """The 16 convs, named as in torchvision's file or (``study_slices``) in the study's module,
    to our ``features.{i}``; those our ``vgg_full=False`` network lacks are checked and dropped."""
    full = meta_shapes(lambda: mask_vgg(full=True))
    rows = []
    for i in CONVS:
        pair = conv(study_slice_name(i) if study_slices else f"features.{i}", f"features.{i}")
        rows += pair if (cfg.vgg_full or i in RELU1_2_CONVS) else unused(pair, full, PAST_RELU1_2)
    return rows


def classifier_rows() -> list[Row]:
    return [
        Row(
            f"{name}.{p}",
            None,
            "torchvision's classifier, unused by the MPF mask",
            shape if p == "weight" else shape[:1],
        )
        for name, shape in CLASSIFIER.items()
        for p in ("weight", "bias")
    ]


def load_released_vgg19(path: str | Path, cfg: GPEMSRConfig) -> dict:
    """torchvision's VGG19 file as a state dict of the MPF mask's VGG19 of ``cfg``."""
    ours = meta_shapes(lambda: mask_vgg(cfg.vgg_full))
    return remap(
        read_release(path), feature_rows(cfg, study_slices=False) + classifier_rows(), ours, str(path), "VGG19"
    )
