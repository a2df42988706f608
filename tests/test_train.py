"""Trainer: determinism, resume after a simulated and a real kill, SIGTERM checkpointing, errors."""

from __future__ import annotations

import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from emsrbench.errors import EmsrError
from emsrbench.methods import discover
from emsrbench.train import TrainJob, TrainSettings, fit

RCAN = discover()["rcan"]
TINY = {"num_feat": 8, "num_group": 1, "num_block": 1, "squeeze_factor": 4}


def job_for(tmp_path: Path, train_file: Path, name: str, **settings) -> TrainJob:
    base = {"iterations": 12, "batch_size": 2, "patch_size": 4, "checkpoint_every": 4, "lr": 1e-3, "log_every": 1}
    return TrainJob(method=RCAN, scale=8, preset="quick", model_params=TINY,
                    settings=TrainSettings.merged({**base, **settings}), train_files=[str(train_file)],
                    out_path=tmp_path / name / "model.pt", ckpt_dir=tmp_path / name / "ckpt", threads=1)


def weights(path: Path) -> dict:
    return torch.load(path)["state_dict"]


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_is_deterministic_and_records_metadata(tmp_path, degraded_x8):
    a, b = job_for(tmp_path, degraded_x8, "a"), job_for(tmp_path, degraded_x8, "b")
    a.val_files = [str(degraded_x8)]
    fit(a)
    fit(b)
    assert_identical(weights(a.out_path), weights(b.out_path))
    meta = torch.load(a.out_path)
    assert meta["method"] == "rcan" and meta["scale"] == 8 and meta["parameters"] > 0
    assert meta["iterations"] == 12 and meta["train_seconds"] > 0
    assert 5 < meta["val_psnr"] < 60  # validation on fixed patches does not disturb the training stream
    assert math.isnan(torch.load(b.out_path)["val_psnr"])  # no validation set given


def test_resume_after_simulated_kill_equals_uninterrupted(tmp_path, degraded_x8):
    whole = job_for(tmp_path, degraded_x8, "whole")
    fit(whole)
    broken = job_for(tmp_path, degraded_x8, "broken")
    assert fit(broken, max_steps=5) is None  # checkpoint written at step 5, then "killed"
    assert not broken.out_path.exists()
    state = torch.load(broken.ckpt_dir / "last.pt")
    assert state["step"] == 5
    fit(broken)  # the rerun resumes from step 5
    assert_identical(weights(whole.out_path), weights(broken.out_path))


RUNNER = """
import sys, json
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_train import job_for
from emsrbench.train import fit
job = job_for(Path({tmp!r}), Path({data!r}), "proc", iterations={iters}, checkpoint_every=1)
fit(job)
"""


def start_training(tmp_path, data, iters):
    code = RUNNER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path), data=str(data), iters=iters)
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(ckpt: Path, proc, min_step=3, timeout=120):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if ckpt.exists():
            try:
                if torch.load(ckpt)["step"] >= min_step:
                    return
            except Exception:  # being replaced right now
                pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    pytest.fail("no checkpoint appeared")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_resume_after_real_kill_equals_uninterrupted(tmp_path, degraded_x8, sig):
    iters = 400
    proc = start_training(tmp_path, degraded_x8, iters)
    ckpt = tmp_path / "proc" / "ckpt" / "last.pt"
    wait_for_checkpoint(ckpt, proc)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    killed_at = torch.load(ckpt)["step"]
    assert killed_at < iters, "training finished before it could be killed"
    if sig == signal.SIGTERM:  # SLURM preemption: checkpoint, then a non-zero exit to be requeued
        assert proc.returncode == 143
        assert "checkpointed" in proc.stderr.read()
    assert not (tmp_path / "proc" / "model.pt").exists()
    resumed = start_training(tmp_path, degraded_x8, iters)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert f"from step {killed_at}" in err
    whole = job_for(tmp_path, degraded_x8, "whole", iterations=iters, checkpoint_every=1)
    fit(whole)
    assert_identical(weights(whole.out_path), weights(tmp_path / "proc" / "model.pt"))


def test_settings_errors():
    with pytest.raises(EmsrError, match="unknown train setting 'iters'"):
        TrainSettings.merged({"iters": 3})
    with pytest.raises(EmsrError, match="loss"):
        TrainSettings.merged({"loss": "huber"})


def test_patch_larger_than_volume(tmp_path, degraded_x8):
    with pytest.raises(EmsrError, match="smaller than patch_size"):
        fit(job_for(tmp_path, degraded_x8, "big", patch_size=64))


def test_patch_sampler_stacks_neighbours_and_aligns_hr(degraded_x8):
    import numpy as np

    from emsrbench.train import PatchSampler

    sampler = PatchSampler([str(degraded_x8)], 8, slices=5)
    lr_b, hr_b = sampler.batch(np.random.default_rng(0), 16, 4, augment=True)
    assert lr_b.shape == (16, 5, 4, 4) and hr_b.shape == (16, 1, 32, 32)
    assert 0 <= lr_b.min() and lr_b.max() <= 1
    # Without augmentation the centre LR channel is the area average of its HR patch (how the fixture was made).
    lr_b, hr_b = sampler.batch(np.random.default_rng(1), 8, 4, augment=False)
    pooled = hr_b[:, 0].reshape(8, 4, 8, 4, 8).mean(dim=(2, 4))
    assert torch.allclose(lr_b[:, 2], torch.round(pooled * 255) / 255, atol=1e-6)
