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
from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.train import TrainJob, TrainSettings, fit

RCAN = load_method(METHODS_DIR / "rcan")  # one folder: other method folders may be mid-edit
TINY = {"num_feat": 8, "num_group": 1, "num_block": 1, "squeeze_factor": 4}


def job_for(tmp_path: Path, train_file: Path, name: str, **settings) -> TrainJob:
    base = {"iterations": 12, "batch_size": 2, "patch_size": 4, "checkpoint_every": 4, "lr": 1e-3, "log_every": 1}
    return TrainJob(
        method=RCAN,
        scale=8,
        preset="quick",
        model_params=TINY,
        settings=TrainSettings.merged({**base, **settings}),
        train_files=[str(train_file)],
        out_path=tmp_path / name / "model.pt",
        ckpt_dir=tmp_path / name / "ckpt",
        threads=1,
    )


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


def test_checkpoints_load_with_weights_only(tmp_path, degraded_x8):
    job = job_for(tmp_path, degraded_x8, "w", ema_decay=0.9, lr_schedule="constant")
    assert fit(job, max_steps=3) is None
    state = torch.load(job.ckpt_dir / "last.pt", weights_only=True)
    assert {"step", "elapsed", "model", "objective", "ema"} <= set(state)
    assert {"optimizer", "scheduler"} == set(state["objective"])


def test_ema_is_saved_and_resumes_exactly(tmp_path, degraded_x8):
    plain = job_for(tmp_path, degraded_x8, "plain")
    fit(plain)
    whole = job_for(tmp_path, degraded_x8, "whole", ema_decay=0.9)
    fit(whole)
    broken = job_for(tmp_path, degraded_x8, "broken", ema_decay=0.9)
    fit(broken, max_steps=5)
    fit(broken)
    assert_identical(weights(whole.out_path), weights(broken.out_path))
    # What is saved is the average, not the last iterate (which equals the plain run's).
    assert any(not torch.equal(weights(plain.out_path)[k], weights(whole.out_path)[k]) for k in weights(plain.out_path))


def test_checkpoint_without_fingerprint_is_set_aside(tmp_path, degraded_x8, capfd):
    """A checkpoint of an older emsrbench records no fingerprint: nothing says what it was made
    from, so it is moved aside and training starts at step 0."""
    whole = job_for(tmp_path, degraded_x8, "whole")
    fit(whole)
    old = job_for(tmp_path, degraded_x8, "old")
    fit(old, max_steps=5)
    state = torch.load(old.ckpt_dir / "last.pt")
    del state["fingerprint"]
    torch.save(state, old.ckpt_dir / "last.pt")
    fit(old)
    assert "records no fingerprint" in capfd.readouterr().err
    assert list((old.ckpt_dir / "stale").glob("last-*.pt"))
    assert_identical(weights(whole.out_path), weights(old.out_path))


def test_constant_schedule_keeps_the_learning_rate():
    from emsrbench.train import make_scheduler

    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=1e-3)
    sched = make_scheduler(opt, TrainSettings.merged({"iterations": 10, "lr_schedule": "constant"}))
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr() == [1e-3]
    with pytest.raises(EmsrError, match="lr_schedule"):
        TrainSettings.merged({"lr_schedule": "step"})


def test_stage_settings_split_the_iterations():
    stages = {
        "one": {"iterations": 1000, "lr": 2e-4},
        "two": {"iterations": 400, "lr": 1e-4, "lr_schedule": "constant"},
    }
    st = TrainSettings.merged({"iterations": 1400, "batch_size": 12, "stages": stages})
    one, two = st.stage("one"), st.stage("two")
    assert (one.iterations, two.iterations) == (1000, 400)  # as given when they add up
    assert one.lr == 2e-4 and two.lr == 1e-4 and two.lr_schedule == "constant" and one.lr_schedule == "cosine"
    assert one.batch_size == two.batch_size == 12 and one.stages == {} == two.stages
    # A smoke-test override of the total scales the stages in proportion, every stage at least 1.
    small = TrainSettings.merged({"stages": stages}, {"iterations": 20})
    assert small.stage_iterations() == {"one": 14, "two": 6}
    assert TrainSettings.merged({"stages": stages}, {"iterations": 2}).stage_iterations() == {"one": 1, "two": 1}
    for total in range(2, 60):
        split = TrainSettings.merged(
            {"stages": {"a": {"iterations": 7}, "b": {"iterations": 1}, "c": {"iterations": 3}}},
            {"iterations": max(total, 3)},
        ).stage_iterations()
        assert sum(split.values()) == max(total, 3) and min(split.values()) >= 1
    with pytest.raises(EmsrError, match="no stage 'three'"):
        st.stage("three")
    # A later layer (config.train_override) wins over the stages' own values; earlier layers do not.
    over = TrainSettings.merged({"batch_size": 3, "lr": 5.0}, {"stages": stages}, {"lr": 1e-2, "iterations": 7})
    assert over.stage("one").lr == over.stage("two").lr == 1e-2 and over.stage("two").lr_schedule == "constant"
    assert sum(over.stage_iterations().values()) == 7 and over.stage("one").batch_size == 3
    assert TrainSettings.merged({"lr": 5.0}, {"stages": stages}).stage("one").lr == 2e-4


def test_stage_settings_errors():
    with pytest.raises(EmsrError, match=r"stages.one: unknown train setting 'iters'"):
        TrainSettings.merged({"stages": {"one": {"iterations": 3, "iters": 3}}})
    with pytest.raises(EmsrError, match=r"stages.one: needs iterations"):
        TrainSettings.merged({"stages": {"one": {"lr": 1e-3}}})
    with pytest.raises(EmsrError, match="cannot be split"):
        TrainSettings.merged({"iterations": 1, "stages": {"a": {"iterations": 1}, "b": {"iterations": 1}}})
    with pytest.raises(EmsrError, match=r"stages.a.*loss"):
        TrainSettings.merged({"stages": {"a": {"iterations": 1, "loss": "huber"}}}).stage("a")


def test_harness_objective_takes_no_objective_settings(tmp_path, degraded_x8):
    with pytest.raises(EmsrError, match="objective"):
        fit(job_for(tmp_path, degraded_x8, "obj", objective={"gan_weight": 0.1}))


def test_custom_objective_stage_runs_in_the_harness_loop(tmp_path, degraded_x8):
    """A method's own objective (here: MSE with SGD, owning an extra tensor) gets the same
    seeding, checkpoints and resume, and can start from a given model."""
    from emsrbench.train import Objective

    class SGDObjective(Objective):
        def setup(self, job, model, settings, device):
            super().setup(job, model, settings, device)
            self.opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=0.9)
            self.seen = torch.zeros(())

        def step(self, lr_b, hr_b, step):
            loss = torch.mean((self.forward(lr_b, hr_b) - hr_b) ** 2)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            self.seen += 1
            return {"loss": loss.item(), "seen": float(self.seen)}

        def state_dict(self):
            return {"opt": self.opt.state_dict(), "seen": self.seen}

        def load_state_dict(self, state):
            self.opt.load_state_dict(state["opt"])
            self.seen = state["seen"].clone()

    def start():
        torch.manual_seed(5)
        return RCAN.module().build(8, **TINY)

    outs = []
    for name, stops in (("whole", [None]), ("broken", [7, None])):
        job = job_for(tmp_path, degraded_x8, name)
        for stop in stops:
            obj = SGDObjective()
            fit(
                job,
                stop,
                objective=obj,
                model=start(),
                ckpt_dir=tmp_path / name / "stage2",
                out_path=tmp_path / name / "s2.pt",
                stage="two",
                meta={"stage": "two"},
                prior_seconds=100.0,
            )
        assert float(obj.seen) == 12
        meta = torch.load(tmp_path / name / "s2.pt", weights_only=True)
        assert meta["stage"] == "two" and meta["train_seconds"] > 100
        outs.append(meta["state_dict"])
    assert_identical(*outs)


def test_worker_processes_give_the_same_training(tmp_path, degraded_x8):
    """Batches depend on (seed, step) only: cut in two worker processes they are the same, and
    the weights bit-identical on CPU."""
    main = job_for(tmp_path, degraded_x8, "main", loader_workers=0)
    workers = job_for(tmp_path, degraded_x8, "workers", loader_workers=2)
    fit(main)
    fit(workers)
    assert_identical(weights(main.out_path), weights(workers.out_path))
    with pytest.raises(EmsrError, match="loader_workers must be an integer >= 0 or null"):
        TrainSettings.merged({"loader_workers": -1})


def test_a_non_finite_loss_is_caught_when_the_device_check_is_deferred(tmp_path, degraded_x8):
    """Off the CPU the finiteness check stays on the device until the loop reads it (every
    log_every steps, before a checkpoint); the error still names the first bad step and no
    checkpoint holds weights a NaN went through."""
    from emsrbench.train import L1Objective

    class NaNFromStep3(L1Objective):
        def setup(self, job, model, settings, device):
            super().setup(job, model, settings, device)
            self.defer_finite_checks = True  # as on a GPU

        def step(self, lr_b, hr_b, step):
            return super().step(lr_b * float("nan") if step >= 3 else lr_b, hr_b, step)

    job = job_for(tmp_path, degraded_x8, "nan", log_every=5, checkpoint_every=4)
    with pytest.raises(EmsrError, match="training loss became nan at step 3"):
        fit(job, objective=NaNFromStep3())
    assert not (job.ckpt_dir / "last.pt").exists() and not job.out_path.exists()
