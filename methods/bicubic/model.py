"""Bicubic upsampling (MATLAB imresize convention), the reference lower bound."""

import torch
from torch import nn

from emsrbench.resize import imresize


class Bicubic(nn.Module):
    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        return imresize(lr, self.scale, antialias=False).clamp(0.0, 1.0)


def build(scale: int) -> nn.Module:
    return Bicubic(scale)
