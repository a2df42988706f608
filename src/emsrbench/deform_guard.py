"""The guard in front of every deformable convolution: offsets and masks must be finite.

torchvision 0.29's CPU ``deform_conv2d`` kills the process (SIGSEGV, exit 139, no message)
when an offset is NaN: its bounds test (``h <= -1 || height <= h``) is false for NaN, and
``floor(NaN)`` cast to an integer is INT_MIN on x86, so the kernel reads far outside the
input (an Inf offset is caught by the bounds test and only samples zero).  A network feeds NaN
offsets once its activations overflow (weights diverged in training, a corrupt weight file),
and the user would see a dead job.  :func:`guard_deformable_convs` puts :func:`check_offsets`
on the offset/mask conv of every deformable conv of a network (GPEMSR's POD, EDVR's PCD
through basicsr's ``DCNv2Pack``), so the forward raises :class:`NonFiniteOffsets`, one line
naming the module, instead.

Both kinds of module compute offsets and masks the DCNv2 way, from one conv: its output
(N, 3 G K, h, w) is the x/y offsets (first 2 G K channels) and the mask logits (last G K, a
sigmoid makes the mask, finite unless a logit is NaN).  Checking that conv's output leaves the
modules' own forwards untouched (basicsr's included).

On CUDA the check is skipped.  Reading a finiteness flag on the host is a device sync per
deformable conv (GPEMSR and EDVR run four per forward) and stalls the queue of kernels; and
``torch._assert_async`` would end in a device-side assert that poisons the CUDA context with
a message naming nothing.  The CUDA kernel does not need the guard: a NaN converted to an
integer is 0 on NVIDIA GPUs (PTX ``cvt``), so its reads stay in bounds and a NaN offset gives
NaN samples, which reach the output, where inference raises ``NonFiniteOutput`` naming the
section and training its non-finite-loss error (``tests/test_deform_guard.py`` runs this on
CUDA where there is one; no GPU was at hand when the guard was written).  On the CPU, already
synchronous, the check is one sum over the offset conv's output: 0.2-0.3 % of the time of the
deformable conv it guards (measured: 1 thread, AMD EPYC at load 3-4, batches of 20 x 32 x 32
and 20 x 64 x 64 features, 16 and 64 channels, 4 and 8 groups).  Meta tensors (shape-only MAC
counting) hold no values and are not checked.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import EmsrError

UNCHECKED_DEVICES = ("cuda", "meta")


class NonFiniteOffsets(EmsrError):
    """A deformable conv's offsets (or mask) hold NaN or Inf values; names the module."""


def check_offsets(offsets_and_mask: torch.Tensor, where: str) -> None:
    """Raise :class:`NonFiniteOffsets` if the DCNv2 offset conv output (N, 3 G K, h, w)
    makes a non-finite offset (NaN or Inf) or mask (a NaN logit); ``where`` names the module."""
    if offsets_and_mask.device.type in UNCHECKED_DEVICES:
        return
    # A sum is finite if every value is (NaN and Inf propagate): one pass without a bool copy,
    # 0.2-0.3 % of a deformable conv's time vs 8-9 % for isfinite().all().  A finite
    # sum that overflowed only sends the call to the exact counts below, which find nothing.
    if bool(torch.isfinite(offsets_and_mask.sum(dtype=torch.float32))):
        return
    n_offsets = offsets_and_mask.shape[1] // 3 * 2
    offsets, logits = offsets_and_mask[:, :n_offsets], offsets_and_mask[:, n_offsets:]
    problems = []
    nan, inf = int(torch.isnan(offsets).sum()), int(torch.isinf(offsets).sum())
    if nan or inf:
        problems.append(f"offsets hold {nan} NaN and {inf} Inf of {offsets.numel()} values")
    nan_mask = int(torch.isnan(logits).sum())
    if nan_mask:
        problems.append(f"mask holds {nan_mask} NaN of {logits.numel()} values")
    if problems:  # else only infinite mask logits, whose sigmoid is a finite 0 or 1
        raise NonFiniteOffsets(
            f"{where} (deformable conv): {'; '.join(problems)} - the activations before it overflowed "
            "(diverged or corrupt weights, or out-of-range input)"
        )


class _OffsetGuard:
    """Forward hook of an offset/mask conv (a class, not a closure: a guarded model pickles)."""

    def __init__(self, where: str):
        self.where = where

    def __call__(self, conv: nn.Module, args: tuple, output: torch.Tensor) -> None:
        check_offsets(output, self.where)


# Deformable conv modules and the attribute holding their offset/mask conv: GPEMSR's
# ModulatedDeformConv and basicsr's ModulatedDeformConvPack (EDVR's DCNv2Pack is one).
OFFSET_CONV_ATTRIBUTES = ("offset_conv", "conv_offset")


def offset_convs(model: nn.Module) -> dict[str, nn.Module]:
    """Qualified name -> offset/mask conv of every deformable conv in ``model``: a module whose
    class name says deformable, with one of OFFSET_CONV_ATTRIBUTES (tests/test_deform_guard.py
    checks that every method's network has a guard per deformable conv call)."""
    found = {}
    for name, mod in model.named_modules():
        kind = type(mod).__name__.lower()
        if "deform" in kind or "dcn" in kind:
            for attribute in OFFSET_CONV_ATTRIBUTES:
                if isinstance(getattr(mod, attribute, None), nn.Module):
                    found[name] = getattr(mod, attribute)
    return found


def is_guarded(conv: nn.Module) -> bool:
    return any(isinstance(hook, _OffsetGuard) for hook in conv._forward_hooks.values())


def guard_deformable_convs(model: nn.Module, network: str, path: str = "") -> None:
    """Check the offsets and masks of every deformable conv of ``model`` before the conv runs;
    errors name the module as "``network`` ``path``<its path in ``model``>", ``path`` being
    where ``model`` sits in the network (its state-dict prefix)."""
    for name, conv in offset_convs(model).items():
        if not is_guarded(conv):
            conv.register_forward_hook(_OffsetGuard(f"{network} {path}{name}"))
