"""The harness trainer, one idea per module:

- :mod:`.settings`: :class:`TrainSettings` (defaults, layers, per-stage settings);
- :mod:`.schedules`: learning-rate schedules;
- :mod:`.sampling`: :class:`PatchSampler` and the validation patches;
- :mod:`.objectives`: what is optimised (:class:`Objective`, :class:`AdamObjective`, :class:`L1Objective`);
- :mod:`.ema`: the weights' moving average;
- :mod:`.loop`: :class:`TrainJob`, the resumable, fingerprinted loop :func:`fit`, the model
  file (:func:`save_model`) and :func:`run`.

This package's namespace is the training API of method folders (``import emsrbench.train as
harness``; ``harness.fit``, ``harness.L1Objective``, ...).
"""

from .ema import EMA
from .loop import (
    NOT_SHAPING,
    TrainJob,
    count_parameters,
    fit,
    run,
    save_model,
    trained_file_matches,
    training_fingerprint,
)
from .objectives import AdamObjective, L1Objective, Objective
from .sampling import VAL_PATCHES, PatchSampler, validation_psnr
from .schedules import CosineRestartLR, make_scheduler
from .settings import TrainSettings

__all__ = [
    "EMA",
    "NOT_SHAPING",
    "TrainJob",
    "count_parameters",
    "fit",
    "run",
    "save_model",
    "trained_file_matches",
    "training_fingerprint",
    "AdamObjective",
    "L1Objective",
    "Objective",
    "VAL_PATCHES",
    "PatchSampler",
    "validation_psnr",
    "CosineRestartLR",
    "make_scheduler",
    "TrainSettings",
]
