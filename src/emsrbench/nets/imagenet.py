"""ImageNet input statistics: what torchvision's VGG19 and basicsr's SPyNet were trained on."""

from __future__ import annotations

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_rgb(grey: torch.Tensor) -> torch.Tensor:
    """Grey images (B, 1, H, W) in [0, 1] as ImageNet-normalised RGB (B, 3, H, W): the grey
    channel replicated to three, minus ImageNet's mean, over its std."""
    mean = torch.tensor(IMAGENET_MEAN, device=grey.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=grey.device).view(1, 3, 1, 1)
    return (grey.expand(-1, 3, -1, -1) - mean) / std
