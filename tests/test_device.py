"""Device choice: CUDA with bf16 autocast when present, CPU (full precision) otherwise."""

import contextlib
import os

import torch

from emsrbench import device


def test_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device.pick_device().type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.pick_device().type == "cpu"
    assert device.pick_device("cpu").type == "cpu"


def test_autocast_is_bf16_on_cuda_and_off_on_cpu():
    assert isinstance(device.autocast(torch.device("cpu")), contextlib.nullcontext)
    ac = device.autocast(torch.device("cuda"))
    assert isinstance(ac, torch.autocast) and ac.fast_dtype == torch.bfloat16


def test_threads_follow_the_job(monkeypatch):
    before = torch.get_num_threads()
    try:
        assert device.set_threads(1) == 1
        monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
        assert device.set_threads(None) == 2
    finally:
        torch.set_num_threads(before)


def test_cpu_description_names_the_model_and_threads():
    from emsrbench.device import cpu_name, describe

    name = cpu_name()
    assert name and "\n" not in name
    if os.path.exists("/proc/cpuinfo") and "model name" in open("/proc/cpuinfo").read():
        assert name not in ("x86_64", "aarch64")  # the model, not just the architecture
    assert describe(torch.device("cpu")) == f"cpu:{name} x{torch.get_num_threads()} threads"
