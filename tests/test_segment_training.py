"""Affinity-network training through the harness loop: targets, augmentation, weighted MSE,
resume equal to an uninterrupted run, SIGTERM-free kill simulation, and the stage's files."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from emsrbench import phantom
from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.io import write_cremi
from emsrbench.segment import networks
from emsrbench.segment.affinities import affinities_from_labels
from emsrbench.segment.stage import AFF_KEY, SEG_KEY, RowIdentity, score_volume, segment_volume
from emsrbench.segment.training import AffinitySampler, train_segmenter

TINY = {"iterations": 6, "checkpoint_every": 2, "batch_size": 2, "log_every": 1}


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    raw, labels = phantom.generate((6, 96, 96), seed=3)
    path = tmp_path_factory.mktemp("seg") / "train-0.h5"
    write_cremi(path, raw, labels, resolution=(40, 4, 4))
    return path, raw, labels


@pytest.fixture
def tiny_presets(monkeypatch):
    """Narrow networks and small blocks so that a few training steps take seconds."""
    from emsrbench.segment import mala, superhuman

    sh = {
        **superhuman.PRESETS["quick"],
        "model": {"filters": [3, 4]},
        "block": [4, 32, 32],
        "infer": {"block": [8, 96, 96], "stride": [8, 96, 96], "pad": [1, 0, 0]},
    }
    ma = {
        **mala.PRESETS["quick"],
        "model": {"fmaps": [2, 3], "z_kernels": [3, 1]},
        "block": [2, 20, 20],
        "infer": {"block": [6, 38, 38], "stride": None, "pad": [0, 0, 0]},
    }
    monkeypatch.setitem(superhuman.PRESETS, "quick", sh)
    monkeypatch.setitem(mala.PRESETS, "quick", ma)


def test_sampler_targets_are_widened_label_affinities(volume):
    path, raw, labels = volume
    sampler = AffinitySampler([str(path)], (4, 40, 40), (2, 20, 20))
    rng = np.random.default_rng(1)
    x, t = sampler.sample(rng, augment=False)
    assert x.shape == (4, 40, 40) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert t.shape == (6, 2, 20, 20)
    # Recover where the block was cut (the raw context is 1 x 10 x 10) and compare with the
    # affinities of the whole labelled volume: identical away from the volume's first voxels.
    hits = [
        (z, y, xx)
        for z in range(raw.shape[0] - 1)
        for y in range(raw.shape[1] - 19)
        for xx in range(raw.shape[2] - 19)
        if np.array_equal(raw[z : z + 2, y : y + 20, xx : xx + 20], np.round(x[1:3, 10:30, 10:30] * 255))
    ]
    assert len(hits) == 1
    z, y, xx = hits[0]
    full = affinities_from_labels(labels)[:, z : z + 2, y : y + 20, xx : xx + 20]
    np.testing.assert_array_equal(t[:3], full)
    weights = t[3:]
    assert weights.min() >= 0 and weights.mean() == pytest.approx(1.0, rel=0.05)


def test_augmentation_keeps_raw_labels_and_affinities_aligned(volume):
    path, raw, labels = volume
    sampler = AffinitySampler([str(path)], (4, 32, 32), (4, 32, 32))
    for seed in range(6):
        x, t = sampler.sample(np.random.default_rng(seed), augment=True)
        # The phantom's membranes are dark: where the target says "boundary" in y and x the
        # raw is darker on average, whatever flip or rotation was drawn.
        boundary = (t[1] == 0) & (t[2] == 0)
        assert x[boundary].mean() < x[~boundary].mean()


def test_small_volumes_are_padded_with_zero_weight(volume, tmp_path):
    path, raw, labels = volume
    small = tmp_path / "small.h5"
    write_cremi(small, raw[:2, :24, :24], labels[:2, :24, :24])
    sampler = AffinitySampler([str(small)], (4, 32, 32), (4, 32, 32))
    _, t = sampler.sample(np.random.default_rng(0), augment=False)
    assert (t[3:, 2:] == 0).all() and (t[3:, :, 24:] == 0).all()  # padded voxels weigh nothing
    assert t[3:, 1, :24, :24].sum() > 0


def test_missing_labels_is_a_one_line_error(volume, tmp_path):
    _, raw, _ = volume
    write_cremi(tmp_path / "nolabels.h5", raw)
    with pytest.raises(EmsrError, match="segmentation training needs labels: .*nolabels.h5"):
        AffinitySampler([str(tmp_path / "nolabels.h5")], (4, 32, 32), (4, 32, 32))


@pytest.mark.parametrize("net", ["superhuman", "mala"])
def test_training_resumes_bit_identically(tmp_path, volume, tiny_presets, net):
    path, _, _ = volume
    whole = train_segmenter(net, "quick", [str(path)], tmp_path / "a.pt", tmp_path / "a", override=TINY, threads=1)
    assert (
        train_segmenter(
            net, "quick", [str(path)], tmp_path / "b.pt", tmp_path / "b", override=TINY, threads=1, max_steps=3
        )
        is None
    )  # "killed" after the checkpoint of step 3
    train_segmenter(net, "quick", [str(path)], tmp_path / "b.pt", tmp_path / "b", override=TINY, threads=1)
    a, b = torch.load(whole), torch.load(tmp_path / "b.pt")
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    assert a["network"] == net and a["iterations"] == 6 and np.isfinite(a["final_loss"])
    model, meta = networks.load(whole, net, "quick")
    assert meta["block"] == networks.preset(net, "quick")["block"]


def test_weighted_mse_learns_the_membranes(tmp_path, volume, tiny_presets):
    """A few dozen steps bring the class-balanced loss well below its value at the start."""
    path, _, _ = volume
    out = train_segmenter(
        "superhuman",
        "quick",
        [str(path)],
        tmp_path / "m.pt",
        tmp_path / "m",
        override={"iterations": 40, "lr": 1e-2, "checkpoint_every": 100, "log_every": 1},
        threads=1,
    )
    sampler = AffinitySampler([str(path)], (4, 32, 32), (4, 32, 32))
    x, t = sampler.batch(np.random.default_rng([7, 7]), 4, augment=False)
    fresh = networks.build("superhuman", {"filters": [3, 4]}).eval()
    trained, _ = networks.load(out, "superhuman", "quick")

    def loss(model):
        with torch.no_grad():
            return float((t[:, 3:] * (model.eval()(x) - t[:, :3]) ** 2).mean())

    assert loss(trained) < 0.7 * loss(fresh)


def test_segment_and_score_write_the_file_contract(tmp_path, volume, tiny_presets):
    path, raw, labels = volume
    model = train_segmenter(
        "mala", "quick", [str(path)], tmp_path / "mala.pt", tmp_path / "ck", override={"iterations": 2}, threads=1
    )
    out = tmp_path / "segment" / "x8.h5"
    stats = segment_volume("mala", "quick", model, path, out, thresholds=[0.5, 0.8], threads=1)
    assert stats["thresholds"] == [0.5, 0.8] and stats["blocks"]["out"] == [6, 38, 38]
    assert stats["precision"] == "fp32" and stats["flags"] == []  # the default: no autocast, no flag
    with h5py.File(out, "r") as f:
        assert f[AFF_KEY].dtype == np.float32 and f[AFF_KEY].shape == (3,) + raw.shape
        assert f[SEG_KEY].dtype == np.uint64 and f[SEG_KEY].shape == raw.shape
        np.testing.assert_array_equal(f[SEG_KEY][...], f["volumes/segmentations/0.5"][...])
    hr_row = RowIdentity(
        net="mala", method="hr", display_name="HR (upper bound)", family="reference", preset="quick", scale=8
    )
    rows, sweep = score_volume(out, path, row=hr_row, border_nm=8.0)
    assert list(rows.columns) == COLUMNS
    assert rows["metric"].tolist() == ["voi_split", "voi_merge", "arand", "cremi_score", "segments", "gt_objects"]
    with h5py.File(out, "r") as f:  # the plain count beside the scores: every id of the segmentation, 0 included
        assert rows.set_index("metric").loc["segments", "value"] == np.unique(f[SEG_KEY][...]).size
    assert sweep["segments"].iloc[0] == rows.set_index("metric").loc["segments", "value"]
    assert rows.set_index("metric").loc["gt_objects", "value"] == np.count_nonzero(np.unique(labels))
    assert (rows["segmenter"] == "mala").all() and rows["value"].notna().all()
    assert sweep["threshold"].tolist() == [0.5, 0.8]
    assert rows["note"].str.contains("threshold 0.5").all() and rows["note"].str.contains("8 nm").all()
    assert rows["note"].str.contains(stats["device"] + ", fp32", regex=False).all()  # device and precision
    assert isinstance(sweep, pd.DataFrame) and (sweep["voxels"] < labels.size).all()  # border mask applied
    write_cremi(tmp_path / "nolab.h5", raw)
    with pytest.raises(EmsrError, match="nolab.h5:volumes/labels/neuron_ids: missing dataset"):
        score_volume(out, tmp_path / "nolab.h5", row=hr_row)


def test_unknown_objective_settings_are_rejected(tmp_path, volume, tiny_presets):
    path, _, _ = volume
    with pytest.raises(EmsrError, match="objective"):
        train_segmenter(
            "superhuman",
            "quick",
            [str(path)],
            tmp_path / "x.pt",
            tmp_path / "x",
            override={"iterations": 1, "objective": {"alpha": 1}},
            threads=1,
        )
    with pytest.raises(EmsrError, match="unknown train setting 'iteration'"):
        train_segmenter(
            "superhuman", "quick", [str(path)], tmp_path / "x.pt", tmp_path / "x", override={"iteration": 1}, threads=1
        )


def test_sigterm_checkpoints_and_exits_for_requeue(tmp_path, volume):
    """SLURM preemption of a segmenter training job: checkpoint, exit 143, no model file."""
    import signal
    import subprocess
    import sys
    import time

    path, _, _ = volume
    code = (
        "from emsrbench.segment.training import train_segmenter\n"
        f"train_segmenter('superhuman', 'quick', [{str(path)!r}], {str(tmp_path / 'm.pt')!r}, "
        f"{str(tmp_path / 'ck')!r}, override={{'iterations': 100000, 'checkpoint_every': 1}}, threads=1)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    ckpt = tmp_path / "ck" / "last.pt"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), proc.stderr.read() if proc.poll() is not None else "no checkpoint in time"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "checkpointed superhuman" in err and not (tmp_path / "m.pt").exists()
    assert torch.load(ckpt)["step"] >= 1
