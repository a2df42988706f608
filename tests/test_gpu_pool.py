"""The local GPU pool (make bench GPUS=N): each job claims its own cards through lock files
that the kernel releases when the job's process ends; jobs without a GPU see none."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from emsrbench import gpu_pool
from emsrbench.errors import EmsrError

HOLD = """
import sys, time
from emsrbench import gpu_pool
env = {"EMSR_GPUS": sys.argv[1], "EMSR_GPU_LOCKS": sys.argv[2]}
print(gpu_pool.assign(int(sys.argv[3]), env), flush=True)
time.sleep(float(sys.argv[4]))
"""


def job(locks, size: int, gpus: int, hold: float) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", HOLD, str(size), str(locks), str(gpus), str(hold)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_concurrent_jobs_get_different_cards_and_a_finished_job_frees_its_card(tmp_path):
    first, second = job(tmp_path, 2, 1, 4), job(tmp_path, 2, 1, 4)
    seen = {first.stdout.readline().strip(), second.stdout.readline().strip()}
    assert seen == {"0", "1"}
    t0 = time.monotonic()
    third = job(tmp_path, 2, 1, 0)  # waits for a card, gets the first one given back
    assert third.stdout.readline().strip() in {"0", "1"}
    assert time.monotonic() - t0 > 1.0
    for p in (first, second, third):
        p.wait(timeout=30)
    crashed = job(tmp_path, 2, 2, 30)
    assert crashed.stdout.readline().strip() == "0,1"
    crashed.kill()  # a killed job's cards come back without any clean-up
    crashed.wait()
    assert job(tmp_path, 2, 2, 0).stdout.readline().strip() == "0,1"


def test_jobs_without_a_gpu_see_none_and_slurm_or_no_pool_leave_devices_alone(tmp_path):
    env = {"EMSR_GPUS": "2", "EMSR_GPU_LOCKS": str(tmp_path)}
    assert gpu_pool.assign(0, env) == "" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert gpu_pool.assign(1, {}) is None
    slurm = {**env, "SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3"}
    assert gpu_pool.assign(1, slurm) is None and slurm["CUDA_VISIBLE_DEVICES"] == "3"


def test_pool_errors_are_one_line(tmp_path):
    with pytest.raises(EmsrError, match="EMSR_GPUS='two': expected the number of GPUs"):
        gpu_pool.assign(1, {"EMSR_GPUS": "two"})
    with pytest.raises(EmsrError, match="asks for 3 GPUs, the pool"):
        gpu_pool.claim(3, 2, tmp_path)
    holder = job(tmp_path, 1, 1, 10)
    assert holder.stdout.readline().strip() == "0"
    with pytest.raises(EmsrError, match="no 1 of the 1 GPUs free after 1 s"):
        gpu_pool.claim(1, 1, tmp_path, wait_seconds=1)
    holder.kill()
    holder.wait()
