"""Fingerprinted training state (issue #12): content digests, checkpoints that resume only
from the same inputs, finished stage files kept only for the same inputs, model files refused
by inference when planned for another job, pretrained files declared and recorded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_degraded

from emsrbench.errors import EmsrError
from emsrbench.fingerprint import Fingerprint, check_planned, file_digest, planned_job
from emsrbench.infer import InferSettings, infer_file
from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.pretrained import Pretrained
from emsrbench.train import TrainJob, TrainSettings, fit

RCAN = load_method(METHODS_DIR / "rcan")
TINY = {"num_feat": 8, "num_group": 1, "num_block": 1, "squeeze_factor": 4}


def job_for(tmp_path: Path, train_file: Path, name: str, **settings) -> TrainJob:
    base = {"iterations": 8, "batch_size": 2, "patch_size": 4, "checkpoint_every": 4, "lr": 1e-3}
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


def state_dict(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def other_volume(tmp_path, smooth_volume) -> Path:
    """The same shape as ``degraded_x8``, other content (a user's own data at the same path)."""
    return write_degraded(tmp_path / "other.h5", np.ascontiguousarray(smooth_volume[:, ::-1]), 8)


# -- digests ---------------------------------------------------------------------------------


def test_file_digest_is_the_sha256_and_is_cached_by_size_mtime_inode(tmp_path):
    import hashlib

    f = tmp_path / "vol.h5"
    f.write_bytes(b"abc" * 1000)
    assert file_digest(f) == hashlib.sha256(b"abc" * 1000).hexdigest()
    cache = tmp_path / ".vol.h5.sha256"
    assert cache.is_file()
    key, digest = cache.read_text().split()
    cache.write_text(f"{key} {'0' * 64}\n")  # a cache hit is used as it is
    assert file_digest(f) == "0" * 64
    tmp = tmp_path / "new.h5"  # rewritten as the workflow writes: a new file renamed over it
    tmp.write_bytes(b"xyz" * 1000)
    os.replace(tmp, f)
    assert file_digest(f) == hashlib.sha256(b"xyz" * 1000).hexdigest()


def test_file_digest_in_a_read_only_folder(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    (d / "w.pth").write_bytes(b"weights")
    d.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        if os.access(d, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert file_digest(d / "w.pth") == file_digest(d / "w.pth")
        assert not (d / ".w.pth.sha256").exists()
    finally:
        d.chmod(stat.S_IRWXU)


def test_changes_are_said_in_words():
    old = Fingerprint({"train": {"iterations": 20, "lr": 1e-3}, "data": {"train": ["a" * 64]}})
    new = Fingerprint({"train": {"iterations": 40, "lr": 1e-3}, "data": {"train": ["b" * 64]}})
    said = new.changes_from(old.record())
    assert "train.iterations 20 -> 40" in said and "data.train content changed" in said
    assert "lr" not in said
    assert "no fingerprint" in new.changes_from(None)
    assert new.matches(new.record()) and not new.matches(old.record())


# -- the trainer -------------------------------------------------------------------------------


@pytest.mark.parametrize("change", ["iterations", "lr", "seed", "data"])
def test_changed_inputs_set_the_checkpoint_aside_and_start_at_step_0(
    tmp_path, degraded_x8, other_volume, change, capfd
):
    """The new-user story: a finished (or unfinished) checkpoint of other settings or other
    data is never resumed; the result equals a fresh run of the new inputs."""
    changed = {"iterations": {"iterations": 12}, "lr": {"lr": 5e-4}, "seed": {"seed": 3}, "data": {}}[change]
    data = other_volume if change == "data" else degraded_x8
    first = job_for(tmp_path, degraded_x8, "run")
    fit(first)
    before = state_dict(first.out_path)
    first.out_path.unlink()  # Snakemake removes a job's output before rerunning it
    again = job_for(tmp_path, data, "run", **changed)
    fit(again)
    err = capfd.readouterr().err
    assert "was made from other inputs" in err and "training from step 0" in err
    expected = {
        "iterations": "train.iterations 8 -> 12",
        "lr": "train.lr 0.001 -> 0.0005",
        "seed": "train.seed 0 -> 3",
        "data": "data.train content changed",
    }[change]
    assert expected in err
    assert len(list((again.ckpt_dir / "stale").glob("last-*.pt"))) == 1
    fresh = job_for(tmp_path, data, "fresh", **changed)
    fit(fresh)
    assert same_weights(state_dict(again.out_path), state_dict(fresh.out_path))
    assert not same_weights(state_dict(again.out_path), before)


def test_unchanged_inputs_resume_and_unshaping_settings_may_change(tmp_path, degraded_x8, capfd):
    """checkpoint_every / log_every / device do not change the weights: a run may resume
    across them; the model file records its fingerprint."""
    whole = job_for(tmp_path, degraded_x8, "whole")
    fit(whole)
    broken = job_for(tmp_path, degraded_x8, "broken")
    assert fit(broken, max_steps=4) is None
    resumed = job_for(tmp_path, degraded_x8, "broken", checkpoint_every=2, log_every=1)
    fit(resumed)
    assert "resuming rcan x8 from step 4" in capfd.readouterr().err
    assert same_weights(state_dict(whole.out_path), state_dict(resumed.out_path))
    record = torch.load(whole.out_path, weights_only=True)["fingerprint"]
    assert record["components"]["train"]["iterations"] == 8 and len(record["digest"]) == 16


def test_a_finished_stage_file_is_kept_only_for_the_same_inputs(tmp_path, degraded_x8, other_volume, capfd):
    job = job_for(tmp_path, degraded_x8, "stage")
    fit(job)
    made = job.out_path.stat().st_mtime_ns
    fit(job_for(tmp_path, degraded_x8, "stage"))
    assert "is trained from these inputs already" in capfd.readouterr().err
    assert job.out_path.stat().st_mtime_ns == made
    fit(job_for(tmp_path, other_volume, "stage"))
    assert job.out_path.stat().st_mtime_ns != made


# -- inference refuses a model file planned for another job ------------------------------------


def planned(data: Path, iterations: int = 8) -> Fingerprint:
    return planned_job(
        "train",
        method="rcan",
        variant="",
        scale=8,
        preset="quick",
        model=TINY,
        train=[{"iterations": iterations}],
        inputs={"train": [str(data)], "val": []},
        pretrained={},
    )


def test_infer_refuses_a_model_planned_for_other_inputs(tmp_path, degraded_x8, other_volume):
    job = job_for(tmp_path, degraded_x8, "m")
    job.identity = planned(degraded_x8)
    fit(job)
    settings = InferSettings.merged({"tile": 16, "overlap": 4})
    out = tmp_path / "sr.h5"
    infer_file(
        RCAN, 8, TINY, settings, degraded_x8, out, model_file=job.out_path, threads=1, planned=planned(degraded_x8)
    )
    assert out.is_file()
    for other, said in [
        (planned(other_volume), "inputs.train content changed"),
        (planned(degraded_x8, 16), "train[0].iterations 8 -> 16"),
    ]:
        with pytest.raises(EmsrError, match="not the rcan x8 model this config plans") as err:
            infer_file(
                RCAN,
                8,
                TINY,
                settings,
                degraded_x8,
                tmp_path / "no.h5",
                model_file=job.out_path,
                threads=1,
                planned=other,
            )
        assert said in str(err.value) and "\n" not in str(err.value)
        assert not (tmp_path / "no.h5").exists()


def test_a_model_file_of_an_older_emsrbench_is_refused(tmp_path):
    with pytest.raises(EmsrError, match="records no fingerprint"):
        check_planned(tmp_path / "model.pt", None, Fingerprint({"a": 1}), "rcan x8 model")
    check_planned(tmp_path / "model.pt", None, None, "user weights")  # nothing planned: the file is the model


# -- pretrained files --------------------------------------------------------------------------


def test_pretrained_lookups_are_declared_and_recorded(tmp_path):
    p = Pretrained(tmp_path, declared=["vgg19"], who="realesrgan training")
    path, why = p.status("vgg19")
    assert path is None and "fetch_weights" in why and p.used == {"vgg19": "absent"}
    with pytest.raises(EmsrError, match="asked for pretrained 'spynet', which its rule does not declare"):
        p.status("spynet")
    assert Pretrained(tmp_path).state(["vgg19", "alexnet"]) == {"alexnet": "absent", "vgg19": "absent"}


def test_a_pretrained_file_changes_the_training_fingerprint(tmp_path, degraded_x8, monkeypatch):
    from emsrbench import pretrained as registry_module
    from emsrbench.train import training_fingerprint

    job = job_for(tmp_path, degraded_x8, "p")
    job.pretrained = Pretrained(tmp_path / "weights", declared=["spynet"])
    job.pretrained.status("spynet")
    absent = training_fingerprint(job, job.settings)
    weight = tmp_path / "weights" / job.pretrained.entry("spynet").file
    weight.parent.mkdir()
    weight.write_bytes(b"a stand-in spynet")
    digest = file_digest(weight)
    entry = job.pretrained.entry("spynet")
    monkeypatch.setitem(
        job.pretrained.entries,
        "spynet",
        registry_module.Weight(entry.name, entry.file, entry.url, digest, entry.used_by, ""),
    )
    job.pretrained.status("spynet")
    present = training_fingerprint(job, job.settings)
    assert "pretrained.spynet absent -> sha256" in present.changes_from(absent.record())


def test_a_methods_own_train_must_train_through_fit(tmp_path, degraded_x8):
    """A method's own train(job) is fingerprinted when it trains through fit(); a model file
    written any other way is refused, not trusted."""
    from types import SimpleNamespace

    from emsrbench.train import run, save_model

    def train_outside_fit(job):
        save_model(
            job,
            RCAN.module().build(8, **TINY),
            train_seconds=0.0,
            final_loss=0.0,
            threads=1,
            device=torch.device("cpu"),
        )

    job = job_for(tmp_path, degraded_x8, "own")
    job.method = SimpleNamespace(
        name="own", model_py=Path("methods/own/model.py"), module=lambda: SimpleNamespace(train=train_outside_fit)
    )
    with pytest.raises(EmsrError, match="without a training fingerprint; train each stage through emsrbench.train.fit"):
        run(job)
    job.method = SimpleNamespace(
        name="own",
        model_py=Path("methods/own/model.py"),
        module=lambda: SimpleNamespace(train=lambda j: fit(j, model=RCAN.module().build(8, **TINY))),
        slices=1,
    )
    run(job)
    assert torch.load(job.out_path, weights_only=True)["fingerprint"]["digest"]
