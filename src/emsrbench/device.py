"""Device choice and precision.

Training: CUDA with bf16 autocast when present, full fp32 on CPU (:func:`autocast`).
Inference that feeds a metric (SR volumes, segmentations, LPIPS): fp32 on every device by
default, TF32 off, so that CPU and GPU leaderboards compare; bf16 or fp16 autocast only when
a config asks for it (:func:`inference_precision`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from .errors import EmsrError

PRECISIONS = ("fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device):
    """Training: bf16 autocast on CUDA (halves activation memory, tensor cores); full fp32 on
    CPU, where bf16 is slow and would break the CPU determinism the resume tests rely on.
    Inference that feeds a metric uses :func:`inference_precision` instead."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def check_precision(precision, where: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a one-line error naming ``where``
    the setting came from."""
    if precision not in PRECISIONS:
        raise EmsrError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class PrecisionPlan:
    """What inference at one precision does on one device type."""

    autocast_dtype: torch.dtype | None  # None: no autocast, the model's own fp32
    tf32_off: bool  # TF32 matmuls and cuDNN convolutions switched off while inferring


def precision_plan(device_type: str, precision: str, where: str = "config inference") -> PrecisionPlan:
    """fp32: no autocast and no TF32 (cuDNN convolutions use TF32 by default on Ampere and
    later GPUs, which would make GPU scores differ from CPU ones); bf16 / fp16: autocast with
    that dtype, TF32 settings as they are. fp16 on CPU is an error: CPU fp16 autocast is slow
    and does not compute what a GPU's fp16 does, so its scores would stand for neither."""
    check_precision(precision, where)
    if precision == "fp16" and device_type != "cuda":
        raise EmsrError(f"{where}: precision fp16 needs a CUDA device, got {device_type} (use fp32 or bf16)")
    dtype = AUTOCAST_DTYPES[precision]
    return PrecisionPlan(dtype, tf32_off=dtype is None)


@contextlib.contextmanager
def _without_tf32():
    """TF32 of CUDA matmuls and cuDNN convolutions off, restored on exit (the flags are
    process-wide: a training loop in the same process keeps its own)."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn


def inference_precision(device: torch.device, precision: str = "fp32", where: str = "config inference"):
    """Context of a metric-feeding forward pass at ``precision`` (:func:`precision_plan`);
    ``where``: the settings the precision came from, for the error message."""
    plan = precision_plan(device.type, precision, where)
    if plan.autocast_dtype is not None:
        return torch.autocast(device.type, dtype=plan.autocast_dtype)
    return _without_tf32() if plan.tf32_off else contextlib.nullcontext()


def precision_flag(precision: str, what: str = "inference") -> list[str]:
    """The flag of a row whose volume was inferred at a reduced precision (none for fp32): its
    scores do not compare with the fp32 rows of other methods or devices."""
    if precision == "fp32":
        return []
    return [f"flag: {what} in {precision} autocast, not comparable with fp32 rows"]


def set_threads(threads: int | None) -> int:
    """Use the cores the job was given (Snakemake ``threads``/SLURM cpus), not the machine's."""
    n = threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or os.cpu_count() or 1
    torch.set_num_threads(max(1, int(n)))
    return torch.get_num_threads()


def cpu_name() -> str:
    """The CPU model (Linux /proc/cpuinfo), else what the platform module knows."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return f"cpu:{cpu_name()} x{torch.get_num_threads()} threads"
