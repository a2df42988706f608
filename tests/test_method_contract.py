"""What every learned method in methods/ must do, checked the same way for each: one grey
channel in and out at 8x and 16x on LR tiles of any size (odd, tiny), a short training run
through the harness's entry point (the method's own ``train(job)`` if it has one) that writes
a model file the harness reloads, and tiled inference of a degraded file.

Method-specific behaviour (equality with basicsr's forward, published parameter counts,
pretrained parts, GAN stages) is tested in each method's own test file."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from emsrbench.infer import InferSettings, infer_file, load_model
from emsrbench.methods import discover
from emsrbench.pretrained import Pretrained
from emsrbench.train import TrainJob, TrainSettings, count_parameters, run

LEARNED = sorted(name for name, m in discover().items() if m.trains)
# The sizes a tiled upscaler hands a model: square, odd, and smaller than a window or a
# flow pyramid's coarsest level.
LR_SIZES = [(8, 8), (7, 5), (4, 4), (9, 17), (15, 16)]

pytestmark = pytest.mark.usefixtures("one_thread")


def quick(name):
    method = discover()[name]
    return method, method.preset("quick")


def test_the_study_baselines_are_all_present():
    assert {"rcan", "swinir", "bsrn", "realesrgan", "edvr", "basicvsr"} <= set(LEARNED)


@pytest.mark.parametrize("name", LEARNED)
@pytest.mark.parametrize("scale", [8, 16])
def test_quick_preset_maps_any_lr_size_to_one_grey_sr_channel(name, scale):
    method, preset = quick(name)
    assert scale in method.scales
    torch.manual_seed(0)
    model = method.module().build(scale, **preset["model"]).eval()
    for h, w in LR_SIZES:
        with torch.no_grad():
            sr = model(torch.rand(2, method.slices, h, w))
        assert sr.shape == (2, 1, h * scale, w * scale), (h, w)
        assert torch.isfinite(sr).all()


@pytest.mark.parametrize("name", LEARNED)
def test_short_training_run_then_tiled_inference(name, tmp_path, degraded_x8):
    method, preset = quick(name)
    train = dict(preset["train"])
    # Two iterations (each stage of a multi-stage method), small batches of the 8x8 LR sections.
    train.update(iterations=2 * max(1, len(train.get("stages", {}))), batch_size=2, patch_size=8, checkpoint_every=100)
    job = TrainJob(
        method=method,
        scale=8,
        preset="quick",
        model_params=preset["model"],
        settings=TrainSettings.merged(train),
        train_files=[str(degraded_x8)],
        val_files=[str(degraded_x8)],
        out_path=tmp_path / "m" / "model.pt",
        ckpt_dir=tmp_path / "m" / "ckpt",
        threads=1,
        pretrained=Pretrained(tmp_path / "no-weights"),
    )
    run(job)
    meta = torch.load(job.out_path, weights_only=True)
    assert meta["method"] == name and meta["scale"] == 8
    assert meta["parameters"] == count_parameters(method.module().build(8, **preset["model"]))
    assert 0 < meta["val_psnr"] < 100
    model, _ = load_model(method, 8, preset["model"], job.out_path, torch.device("cpu"))
    assert count_parameters(model) == meta["parameters"]

    stats = infer_file(
        method,
        8,
        preset["model"],
        InferSettings.merged({}),
        degraded_x8,
        tmp_path / "sr.h5",
        model_file=job.out_path,
        threads=1,
    )
    with h5py.File(degraded_x8) as f, h5py.File(tmp_path / "sr.h5") as g:
        assert g["volumes/raw"].shape == f["volumes/raw"].shape
        assert g["volumes/raw"].dtype == np.uint8
    assert stats["method"] == name and stats["flags"] == meta["flags"]
