"""Statistics over test blocks: bootstrap confidence intervals and paired method comparisons."""

from . import bootstrap
from .blocklength import BlockLength, image_block_length, politis_white, slab_length

# Every public name of bootstrap, listed once, in its __all__.
from .bootstrap import *  # noqa: F403

__all__ = ["BlockLength", "image_block_length", "politis_white", "slab_length", *bootstrap.__all__]
