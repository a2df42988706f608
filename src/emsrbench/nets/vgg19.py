"""VGG19 features: torchvision's ``vgg19().features`` (configuration "E", no batch norm), the
one implementation behind GPEMSR's MPF mask and contextual loss and Real-ESRGAN's perceptual
loss.

The classifier (120 M parameters) is never built. Slicing the ``nn.Sequential`` keeps
torchvision's layer indices, so parameter names are torchvision's own (``features.0.weight``,
...): the registry's ``vgg19`` file (torchvision's ImageNet VGG19) loads directly, and model
files that hold the network (GPEMSR's stage III) keep the keys they had.

Layers are named as in the VGG papers (``conv3_4``, ``relu3_4``, ``pool3``; :data:`LAYERS`
maps a name to its index). A *depth* counts layers from the input: ``features[:depth]``;
:func:`depth_through` gives the depth that ends with a named layer. The input is whatever the
caller chose (GPEMSR's mask feeds the grey image replicated to RGB without normalisation, the
losses feed :func:`emsrbench.nets.imagenet.imagenet_rgb`); what to train and what to freeze is
the caller's too: the stack starts frozen.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import nn

from ..errors import EmsrError

CONFIG = torchvision.models.vgg.cfgs["E"]  # VGG19: conv widths per block, "M" for a max pool


def _layer_names(config) -> dict[str, int]:
    """``conv{block}_{k}`` and ``relu{block}_{k}`` per conv, ``pool{block}`` per pool."""
    names: dict[str, int] = {}
    block, k = 1, 0
    for entry in config:
        if entry == "M":
            names[f"pool{block}"] = len(names)
            block, k = block + 1, 0
        else:
            k += 1
            names[f"conv{block}_{k}"] = len(names)
            names[f"relu{block}_{k}"] = len(names)
    return names


LAYERS = _layer_names(CONFIG)  # conv1_1: 0, relu1_1: 1, conv1_2: 2, relu1_2: 3, pool1: 4, ... pool5: 36
CONV_LAYERS = {name: i for name, i in LAYERS.items() if name.startswith("conv")}


def depth_through(name: str) -> int:
    """The depth whose last layer is ``name``: ``features[:depth_through("relu1_2")]`` ends at relu1_2."""
    if name not in LAYERS:
        raise EmsrError(f"VGG19: no layer '{name}' (known: {', '.join(LAYERS)})")
    return LAYERS[name] + 1


RELU1_2 = depth_through("relu1_2")  # 4: GPEMSR's mask reads relu1_2
RELU3_4 = depth_through("relu3_4")  # 18: GPEMSR's contextual loss reads relu3_4
ALL_CONVS = depth_through("relu5_4")  # 36: all 16 convs (the study's VGG19 module, without the last pool)


class VGG19Features(nn.Module):
    """``features[:depth]`` of torchvision's VGG19, frozen; ``forward`` runs ``output`` layers
    (default: all it holds).

    GPEMSR holds all 16 convs (the study's module, whose parameters its tables count) but runs
    only to relu1_2; ``output`` says so once instead of at every call.
    """

    def __init__(self, depth: int = ALL_CONVS, output: int | None = None):
        super().__init__()
        if not 1 <= depth <= len(LAYERS):
            raise EmsrError(f"VGG19: depth {depth} outside 1..{len(LAYERS)} (layers of its feature stack)")
        # The whole stack is built, then sliced: the random initialisation draws from the
        # generator exactly as torchvision's VGG19 does, whatever the depth.
        layers = torchvision.models.vgg.make_layers(CONFIG, batch_norm=False)
        self.features = layers[:depth]
        for m in self.features:  # torchvision's VGG init, for when no pretrained file exists
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
        self.output = self._checked_depth(depth if output is None else output)
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | Path, depth: int) -> VGG19Features:
        """``features[:depth]`` with every tensor from torchvision's VGG19 file at ``path``:
        built on the meta device (no random initialisation, the generator untouched), then
        the file's tensors are taken as they are."""
        with torch.device("meta"):
            vgg = cls(depth)
        vgg.load(path, assign=True)
        return vgg

    def load(self, path: str | Path, assign: bool = False) -> None:
        """Weights from a torchvision VGG19 file (``features.{i}.*``; the classifier is ignored)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise EmsrError(f"{path}: not a torchvision VGG19 checkpoint (no {missing[0]})")
        self.load_state_dict({k: state[k] for k in own}, assign=assign)

    def _checked_depth(self, depth: int) -> int:
        if not 1 <= depth <= len(self.features):
            raise EmsrError(f"VGG19: features[:{depth}] asked of a stack of {len(self.features)} layers")
        return depth

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """``features[:depth](x)`` (default: ``output`` layers)."""
        for i in range(self._checked_depth(self.output if depth is None else depth)):
            x = self.features[i](x)
        return x

    def taps(self, x: torch.Tensor, layers) -> dict[int, torch.Tensor]:
        """The outputs of the layers at the given indices, in one pass up to the last of them.
        Each is a copy: a conv's output is overwritten by the in-place ReLU after it."""
        wanted = set(layers)
        out = {}
        for i in range(self._checked_depth(max(wanted) + 1)):
            x = self.features[i](x)
            if i in wanted:
                out[i] = x.clone()
        return out
