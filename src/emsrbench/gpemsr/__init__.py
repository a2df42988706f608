"""GPEMSR (Shou et al., CVPR 2024): generative-prior EM super-resolution, as a library.

Stage I ``vqgan`` (VQGAN prior), stage II ``indexer`` (LR -> code indices), stage III
``model`` (MPF ``mpf``, POD ``pod`` with ``spynet``, 3DA ``tda``); settings, presets and
ablation variants in ``config``; parameter counts against the study's tables in ``params``.
"""

from .config import PRESETS, VARIANTS, GPEMSRConfig, make_config
from .indexer import Indexer, PriorNet
from .model import GPEMSR, attach_pretrained, build
from .vqgan import VQGAN, PatchDiscriminator

__all__ = [
    "PRESETS",
    "VARIANTS",
    "GPEMSRConfig",
    "make_config",
    "Indexer",
    "PriorNet",
    "GPEMSR",
    "attach_pretrained",
    "build",
    "VQGAN",
    "PatchDiscriminator",
]
