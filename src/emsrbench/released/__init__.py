"""Loaders for the study's released weight files: each maps a release's state-dict keys and
shapes to ours through an explicit table (``checkpoint.Row`` lists, one module per network
family) and returns a state dict for our network, ready for ``load_state_dict``.

==========================  =====================================  =================================
study's file                loader                                 our network
==========================  =====================================  =================================
``stage1.pth``              :func:`load_released_stage1`           ``gpemsr.VQGAN``
``stage2_x{8,16}.pth``      :func:`load_released_stage2`           ``gpemsr.Indexer``
``stage3_x{8,16}.pth``      :func:`load_released_stage3`           ``gpemsr.GPEMSR``
``vgg19-dcbb9e9d.pth``      :func:`load_released_vgg19`            ``nets.vgg19.VGG19Features``
``spynet_sintel_final-      :func:`load_released_spynet`           ``nets.spynet.SpyNet``
3d2a1287.pth``
==========================  =====================================  =================================
"""

from .fusion import load_released_stage3
from .indexer import load_released_stage2
from .spynet import load_released_spynet
from .vgg19 import load_released_vgg19
from .vqgan import load_released_stage1

__all__ = [
    "load_released_spynet",
    "load_released_stage1",
    "load_released_stage2",
    "load_released_stage3",
    "load_released_vgg19",
]
