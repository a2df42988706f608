"""GPEMSR (Shou et al., CVPR 2024) as a method folder: the network and its three training
stages live in the library, :mod:`emsrbench.gpemsr`; this file is the method contract.

``build(scale, preset, variant, **overrides)`` is the stage III network (the frozen stage I
decoder + codebook and stage II indexer inside it), which is what inference runs; its weights,
prior included, are in the stage III model file.  In the workflow the stages are three rules
(``workflow/rules/gpemsr.smk``, ``stage_rules: gpemsr`` in method.yaml); ``train(job)`` runs
all three in one job for the harness entry point (tests, ``emsrbench.train.run``).
"""

from __future__ import annotations

from emsrbench.gpemsr import training
from emsrbench.gpemsr.model import GPEMSR
from emsrbench.gpemsr.model import build as build_network


def build(scale: int, preset: str = "paper", variant: str = "full", **overrides) -> GPEMSR:
    return build_network(scale, preset, variant, **overrides)


def train(job) -> None:
    """Stages I-III in a row (stage files beside ``job.out_path``, resumable)."""
    training.train(job)
