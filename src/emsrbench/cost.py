"""Cost of a super-resolution model: multiply-accumulates per output megapixel, peak memory.

MACs
----
Counted with PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` on one forward pass,
MACs = FLOPs / 2 (torch counts a multiply-accumulate as 2 FLOPs; bias additions are not
counted).  torch has formulas for convolutions (plain, grouped, transposed), matrix products
(mm, addmm, bmm, baddbmm, so ``Linear`` and attention written with matmul) and fused
scaled-dot-product / flex attention on CUDA.  Added here, with torch's own formulas:
the CPU kernel of scaled-dot-product attention (torch's sdpa formula), and
``torchvision::deform_conv2d`` (EDVR's deformable alignment), counted as the convolution it
performs (torch's conv formula); its bilinear sampling at the offsets and the mask product
are not counted.

Every op that ran is recorded.  An op whose name says it multiplies-and-accumulates (conv,
mm, matmul, linear, attention, einsum, rnn/lstm/gru, deform) but has no formula makes the count
a lower bound, and ``MacCount.uncounted`` / ``MacCount.note`` name it; it is never dropped
silently.  Interpolation (``upsample_*``, ``grid_sampler_*``) and element-wise ops are not
MACs and are not counted; ``note`` names the interpolation ops that ran.

Per output megapixel: the MACs of one LR tile, divided by the tile's output pixels / 1e6.
Tiled inference also recomputes the overlaps, so a run costs more per megapixel by the
tiling's overlap factor (``infer.py`` records that too); for models with global context
(attention, channel attention) the per-pixel cost also depends on the tile size.  What is
counted per tile is what inference runs: one window forward, or, for a model with the
multi-slice feature-reuse hook, ``section_features`` of one section plus ``forward_features``
of one window (``infer.count_output_section``).

Peak memory
-----------
:class:`PeakMemory` measures a block of code.  CUDA: ``torch.cuda.max_memory_allocated`` after
``reset_peak_memory_stats`` (tensors allocated by torch on the device, the weights included,
not the caching allocator's reserve or the CUDA context).  CPU: the growth of the process's
peak resident set size (Linux ``VmHWM``, reset at the start through ``/proc/self/clear_refs``)
over its resident size at the start, plus ``resident_bytes`` (the model's weights, resident
before the block, so that the figure means weights + working memory as on CUDA); this counts
every allocation of the process (torch, numpy, HDF5 buffers).  Where the peak cannot be reset
(not Linux), ``ru_maxrss`` growth is used, a lower bound, and the note says so.
"""

from __future__ import annotations

import re
import resource
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, sdpa_flop_count

__all__ = ["MacCount", "count_macs", "count_run", "model_bytes", "PeakMemory"]

MAC_OP = re.compile(
    r"conv|(^|[._])(bmm|mm|addmm|baddbmm|matmul|linear|einsum|tensordot)($|[._])|attention|lstm|gru|rnn|deform"
)
INTERPOLATION_OP = re.compile(r"upsample|grid_sampler|interp")
MIB = 2**20


@dataclass
class MacCount:
    macs: int  # multiply-accumulates of the forward pass
    by_op: dict[str, int] = field(default_factory=dict)  # counted MACs per op
    uncounted: dict[str, int] = field(default_factory=dict)  # MAC-bearing ops without a formula: calls
    interpolation: list[str] = field(default_factory=list)  # interpolation ops that ran (not MACs)

    @property
    def complete(self) -> bool:
        return not self.uncounted

    def __add__(self, other: "MacCount") -> "MacCount":
        """The count of both runs (e.g. the two parts of a feature-reuse forward)."""
        by_op, uncounted = Counter(self.by_op), Counter(self.uncounted)
        by_op.update(other.by_op)
        uncounted.update(other.uncounted)
        interpolation = sorted(set(self.interpolation) | set(other.interpolation))
        return MacCount(self.macs + other.macs, dict(by_op), dict(uncounted), interpolation)

    @property
    def note(self) -> str:
        parts = []
        if self.uncounted:
            ops = ", ".join(f"{k} ({v} calls)" for k, v in sorted(self.uncounted.items()))
            parts.append(f"lower bound: no MAC formula for {ops}")
        if "torchvision.deform_conv2d" in self.by_op:
            parts.append("deform_conv2d counted as its convolution (offset sampling not counted)")
        if self.interpolation:
            parts.append("interpolation not counted: " + ", ".join(sorted(self.interpolation)))
        return "; ".join(parts)


def _deform_conv2d_flop(x_shape, w_shape, offset_shape, mask_shape, bias_shape, *args, out_shape=None, **kwargs) -> int:
    """torchvision::deform_conv2d(input, weight, offset, mask, bias, ...): the FLOPs of the
    convolution it computes over the sampled values, by torch's own conv formula."""
    return conv_flop_count(list(x_shape), list(w_shape), list(out_shape))


def _sdpa_flop(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(list(query_shape), list(key_shape), list(value_shape))


def _custom_formulas() -> dict:
    formulas = {}
    # The CPU kernel of F.scaled_dot_product_attention has no formula in torch 2.14 although
    # its CUDA siblings do; same arguments (query, key, value, ...), so torch's sdpa formula.
    cpu_sdpa = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if cpu_sdpa is not None:
        formulas[cpu_sdpa] = _sdpa_flop
    if "torchvision" in sys.modules:  # only models that imported it can call its ops
        try:
            formulas[torch.ops.torchvision.deform_conv2d] = _deform_conv2d_flop
        except (AttributeError, RuntimeError):  # torchvision built without its C++ ops
            pass
    return formulas


class _OpRecorder(TorchDispatchMode):
    """Records every op that actually executes (entered outside FlopCounterMode, so it sees the
    ops the counter ran after its own decompositions, i.e. exactly what was or was not counted)."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[func._overloadpacket] += 1
        return func(*args, **(kwargs or {}))


def _op_name(packet) -> str:
    return str(packet).replace("::", ".")


@torch.no_grad()
def count_macs(model: nn.Module, *inputs: torch.Tensor) -> MacCount:
    """MACs of ``model(*inputs)`` (one forward pass, as run: device, dtype and autocast of the caller)."""
    return count_run(lambda: model(*inputs))


def count_run(fn: Callable[[], object]) -> MacCount:
    """MACs of everything ``fn()`` runs, as run (device, dtype, autocast and grad mode of the
    caller): a whole training step counts its forward passes, backward passes (torch has the
    backward formulas of the same ops) and optimiser updates (element-wise: no MACs)."""
    recorder = _OpRecorder()
    counter = FlopCounterMode(display=False, custom_mapping=_custom_formulas())
    with recorder, counter:
        fn()
    counted = counter.flop_registry
    by_op: dict[str, int] = {}
    for packet, flops in counter.get_flop_counts().get("Global", {}).items():
        by_op[_op_name(packet)] = int(flops) // 2
    uncounted, interp = {}, []
    for packet, n in recorder.calls.items():
        name = _op_name(packet)
        if packet in counted:
            continue
        if MAC_OP.search(name):
            uncounted[name] = n
        elif INTERPOLATION_OP.search(name):
            interp.append(name)
    return MacCount(int(counter.get_total_flops()) // 2, by_op, uncounted, interp)


def model_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and buffers."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    hwm, rss = _status_kib("VmHWM"), _status_kib("VmRSS")
    return hwm is not None and rss is not None


def _maxrss_kib() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r // 1024 if sys.platform == "darwin" else r  # bytes on macOS, KiB on Linux


class PeakMemory:
    """``with PeakMemory(device, resident_bytes) as pm: ...`` then ``pm.mib`` and ``pm.note``."""

    def __init__(self, device: torch.device, resident_bytes: int = 0):
        self.device = torch.device(device)
        self.resident_bytes = int(resident_bytes)
        self.mib: float | None = None
        self.note = ""

    def __enter__(self) -> "PeakMemory":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._reset = _reset_peak_rss()
            self._base_kib = _status_kib("VmRSS") if self._reset else _maxrss_kib()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.mib = torch.cuda.max_memory_allocated(self.device) / MIB
            self.note = "peak CUDA memory allocated by torch (weights + activations)"
            return
        if self._reset:
            peak_kib = _status_kib("VmHWM") or 0
            self.note = "CPU: peak RSS growth during inference + model weights"
        else:
            peak_kib = _maxrss_kib()
            self.note = (
                "CPU: growth of the process's lifetime peak RSS + model weights (lower bound: peak could not be reset)"
            )
        self.mib = max(0, peak_kib - self._base_kib) / 1024 + self.resident_bytes / MIB
