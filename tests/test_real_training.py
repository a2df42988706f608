"""One short real training run per family on real EM (ISBI 2012 sections shipped in
tests/data): a single-image method (RCAN) and a multi-slice method (EDVR, 5 adjacent
sections), each trained from scratch through the harness at 8x on sections 0-23, must beat
bicubic PSNR on the unseen sections 24-29 (a few hundred quick-preset iterations)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import ISBI

from emsrbench.degrade import Degradation, degrade_file
from emsrbench.infer import InferSettings, infer_file
from emsrbench.io import RAW_KEY
from emsrbench.methods import discover
from emsrbench.metrics import psnr_sections
from emsrbench.train import TrainJob, TrainSettings, run

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def isbi_x8(tmp_path_factory):
    """ISBI degraded 8x by the benchmark's own degradation: train (0-23) and test (24-29)."""
    d = tmp_path_factory.mktemp("isbi")
    deg = Degradation.from_config({"model": "bicubic", "noise": "none"})
    train, test = d / "train.h5", d / "test.h5"
    degrade_file(ISBI, train, 8, deg, z=(0, 24), labels_key=None)
    degrade_file(ISBI, test, 8, deg, z=(24, 30), labels_key=None)
    return train, test


def sr_psnr(method, params, test, out, model_file=None) -> float:
    infer_file(method, 8, params, InferSettings.merged({}), test, out, model_file=model_file, threads=1)
    with h5py.File(test) as f, h5py.File(out) as g:
        return float(np.mean(psnr_sections(f[RAW_KEY][:], g[RAW_KEY][:])))


@pytest.mark.parametrize("name, iterations", [("rcan", 200), ("edvr", 200)])
def test_short_training_on_real_em_beats_bicubic(name, iterations, isbi_x8, tmp_path):
    train, test = isbi_x8
    methods = discover()
    bicubic = sr_psnr(methods["bicubic"], {}, test, tmp_path / "bicubic.h5")

    method = methods[name]
    preset = method.preset("quick")
    job = TrainJob(
        method=method,
        scale=8,
        preset="quick",
        model_params=preset["model"],
        settings=TrainSettings.merged(preset["train"], {"iterations": iterations}),
        train_files=[str(train)],
        out_path=tmp_path / "model.pt",
        ckpt_dir=tmp_path / "ckpt",
        threads=1,
    )
    run(job)
    learned = sr_psnr(method, preset["model"], test, tmp_path / "sr.h5", model_file=job.out_path)
    print(f"{name}: {learned:.2f} dB vs bicubic {bicubic:.2f} dB after {iterations} iterations")
    assert learned > bicubic + 0.1, (learned, bicubic)
