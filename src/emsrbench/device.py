"""Device choice and mixed precision: CUDA with bf16 autocast when present, CPU otherwise."""

from __future__ import annotations

import contextlib
import os

import torch


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast(device: torch.device):
    """bf16 autocast on CUDA (halves activation memory, tensor cores); full fp32 on CPU,
    where bf16 is slow and would break the CPU determinism the resume tests rely on."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
