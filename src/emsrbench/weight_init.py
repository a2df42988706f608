"""Initialisation that makes a basicsr residual SR network start as its interpolation base.

With PyTorch's default init (what basicsr's EDVR and BasicVSR keep) the signal shrinks at
every layer: at initialisation a quick-preset network's output depends on its input to ~1e-5
of its magnitude, and the learned residual over the bilinear base stays at zero for the first
several hundred iterations, beyond a CPU budget of a few hundred (measured on the phantom).
Kaiming-normal (fan-in) convs carry the signal, and a zero ``conv_last`` makes the first
output exactly the base, so training only ever adds to it.
"""

from __future__ import annotations

from torch import nn

from .compat import basicsr_arch


def start_at_base(model: nn.Module, skip_prefixes: tuple[str, ...] = ()) -> None:
    """basicsr's ``default_init_weights`` (Kaiming-normal, fan-in, zero bias) for every plain
    and modulated-deformable conv outside basicsr's residual blocks, which keep their
    0.1-scaled Kaiming init; deformable offset/mask convs keep their zero init (zero offsets
    = a plain conv at the start); submodules under ``skip_prefixes`` (a pretrained flow
    network) are left alone; ``conv_last`` is zeroed."""
    ResidualBlockNoBN = basicsr_arch("arch_util", "ResidualBlockNoBN")
    default_init_weights = basicsr_arch("arch_util", "default_init_weights")
    in_blocks = {id(m) for blk in model.modules() if isinstance(blk, ResidualBlockNoBN) for m in blk.modules()}
    for name, mod in model.named_modules():
        if id(mod) in in_blocks or name.rsplit(".", 1)[-1] == "conv_offset" or name.startswith(skip_prefixes):
            continue
        if isinstance(mod, nn.Conv2d):
            default_init_weights(mod, 1)
        elif type(mod).__name__ == "DCNv2Pack":
            nn.init.kaiming_normal_(mod.weight)
            nn.init.zeros_(mod.bias)
    nn.init.zeros_(model.conv_last.weight)
    nn.init.zeros_(model.conv_last.bias)
