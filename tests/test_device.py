"""Device choice: CUDA with bf16 autocast for training when present, CPU (full precision)
otherwise; metric-feeding inference in fp32 (TF32 off) unless a config opts in to bf16/fp16."""

import contextlib
import os

import pytest
import torch

from emsrbench import device
from emsrbench.errors import EmsrError


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


@pytest.mark.parametrize("device_type", ["cuda", "cpu"])
def test_inference_is_fp32_without_tf32_by_default_on_every_device(device_type):
    plan = device.precision_plan(device_type, "fp32")
    assert plan.autocast_dtype is None and plan.tf32_off


def test_reduced_precision_is_autocast_in_that_dtype():
    assert device.precision_plan("cuda", "bf16") == device.PrecisionPlan(torch.bfloat16, tf32_off=False)
    assert device.precision_plan("cuda", "fp16") == device.PrecisionPlan(torch.float16, tf32_off=False)
    assert device.precision_plan("cpu", "bf16") == device.PrecisionPlan(torch.bfloat16, tf32_off=False)
    ac = device.inference_precision(torch.device("cuda"), "fp16")
    assert isinstance(ac, torch.autocast) and ac.fast_dtype == torch.float16


def test_precision_errors_are_one_line_and_name_the_setting():
    with pytest.raises(
        EmsrError,
        match=r"^config segmentation.inference: precision must be one of fp32, bf16, fp16, "
        r"got 'fp64'$",
    ):
        device.precision_plan("cuda", "fp64", "config segmentation.inference")
    with pytest.raises(EmsrError, match=r"^config inference: precision fp16 needs a CUDA device, got cpu"):
        device.precision_plan("cpu", "fp16")


def test_fp32_inference_switches_tf32_off_and_restores_it():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        with device.inference_precision(torch.device("cpu")):
            assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
            y = torch.nn.Linear(3, 2)(torch.ones(1, 3))
        assert y.dtype == torch.float32
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        with device.inference_precision(torch.device("cpu"), "bf16"):
            assert torch.nn.Linear(3, 2)(torch.ones(1, 3)).dtype == torch.bfloat16
            assert torch.backends.cudnn.allow_tf32  # opting in to autocast leaves TF32 as it was
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_only_reduced_precision_is_flagged():
    assert device.precision_flag("fp32") == []
    [flag] = device.precision_flag("bf16", "segmentation inference")
    assert flag.startswith("flag: segmentation inference in bf16") and ";" not in flag
