"""Paper-scale smoke (issue 14, part 6): every paper preset takes one training step at its real
patch and batch and infers one 1024 x 1024 section, on the CPU, through the code the workflow
runs (``emsrbench.train.run`` / the GPEMSR stage functions / ``train_segmenter``, then
``infer_file`` / ``segment_volume``) on a phantom degraded as the workflow does. It catches
shape and memory errors at the study's scale before a user meets them on a cluster.

    make paper-smoke        # EMSR_PAPER_SCALE=1 pytest -m paper_scale tests/test_paper_scale.py -k <group>

Skipped unless ``EMSR_PAPER_SCALE=1`` (the target sets it, and runs three groups of tests in a
process each: freed memory stays resident and would count in later tests' peaks). The whole
set takes about 16 minutes on 2 idle cores. Each test records its wall time, peak RSS and the
batch it trained at with the reason (``EMSR_PAPER_SCALE_LOG``: a JSON-lines file to append
them to; always printed, visible with ``-s``) and fails above ``EMSR_PAPER_SCALE_MAX_GIB`` (default 11) of peak RSS (the
process's, whose resident size at the test's start is recorded too). A failing step (shape,
out of memory, a non-finite loss: ``fit`` raises) fails its test.

Where the study's batch does not fit a 24 GiB machine (one process under ~10 GiB), the step
runs at the documented fraction of :data:`BATCH`; the shapes of every tensor but the batch
axis are the study's. ``EMSR_PAPER_SCALE_BATCH=N`` trains every selected test at batch N
instead (two such runs give the slope of peak memory over the batch, from which the study's
batch is extrapolated: docs/reference-figures.md). What else differs from a real run, and why:

- GPEMSR stage I runs its step in the GAN phase (``gan_start`` 0; the R1 penalty falls on
  step 0 too), so the discriminator and R1 see the real 512 px patches; stages II and III
  read untrained stage I / II files (the hand-off is the real one, the weights do not matter);
- the pretrained VGG19 and SPyNet are random weights in the published files' formats
  (frozen, as the real files are);
- segmenter inference runs the real blockwise path over a 1024 x 1024 section (the study's
  tiling, accumulator, blending, agglomeration) but only the first forward pass computes: the
  others replay its output (a full pass is 169 Superhuman / 361 MALA blocks of 7-10 s each on
  2 CPU cores).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emsrbench import cost
from emsrbench.degrade import Degradation, degrade_file
from emsrbench.infer import InferSettings, infer_file
from emsrbench.io import RAW_KEY, read_dataset
from emsrbench.methods import discover
from emsrbench.train import TrainJob, TrainSettings

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402

pytestmark = [
    pytest.mark.slow,
    pytest.mark.paper_scale,
    pytest.mark.skipif(
        os.environ.get("EMSR_PAPER_SCALE") != "1",
        reason="paper-scale smoke: run with `make paper-smoke` (EMSR_PAPER_SCALE=1)",
    ),
]

THREADS = 2
DEPTH = 8  # training sections of 1024 x 1024 (the study's crops)
# The batch of the step where the study's does not fit one process under ~10 GiB (a 24 GiB
# machine shared with others): (name, stage, scale) -> (batch, why). Peak RSS of one training
# step on the CPU (fp32) grows linearly with the batch; the study's batch would need the figure
# extrapolated in docs/reference-figures.md. Every other preset runs at the study's batch.
BATCH: dict[tuple[str, str, int], tuple[int, str]] = {
    ("swinir", "train", 8): (8, "1/4 of the study's 32: window attention over 32 px patches"),
    ("swinir", "train", 16): (8, "1/4 of the study's 32: window attention over 32 px patches"),
    ("edvr", "train", 16): (16, "1/2 of the study's 32: five 512 px HR frames per sample"),
    ("gpemsr", "vqgan", 8): (4, "1/2 of the study's 8: 512 px patches, GAN and R1 step"),
    ("gpemsr", "fusion", 8): (4, "1/2 of the study's 8: contextual loss over 4096 x 4096 feature pairs"),
    ("gpemsr", "fusion", 16): (4, "1/2 of the study's 8: contextual loss over 4096 x 4096 feature pairs"),
    ("realesrgan", "train", 16): (4, "1/3 of the study's 12: VGG19 and the U-Net discriminator at 512 px"),
}
BATCH_OVERRIDE = os.environ.get("EMSR_PAPER_SCALE_BATCH")
MAX_GIB = float(os.environ.get("EMSR_PAPER_SCALE_MAX_GIB", "11"))
SR_METHODS = ("rcan", "swinir", "bsrn", "edvr", "basicvsr", "realesrgan")


def _peak_rss_gib() -> float:
    return (cost._status_kib("VmHWM") or 0) / 2**20


def _give_back_freed_memory() -> None:
    """Collect garbage and return glibc's free heap pages to the kernel (Linux)."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@pytest.fixture(autouse=True)
def measured(request, monkeypatch):
    """Wall time and peak RSS of the test: the kernel's high-water mark, reset at its start.
    Inference measures its own peak by resetting the mark (cost.PeakMemory): the mark is read
    before each such reset, so the test's peak is the largest of those and the final one;
    ``train_peak_rss_gib`` is the mark before inference (training, model file). Yields a dict
    the test adds its batch (and the reason for it) to."""
    torch.set_num_threads(THREADS)
    _give_back_freed_memory()  # else the previous tests' freed heap stays resident and counts here
    real_reset, marks = cost._reset_peak_rss, []

    def reset():
        marks.append(_peak_rss_gib())
        return real_reset()

    monkeypatch.setattr(cost, "_reset_peak_rss", reset)
    real_reset()
    start = round((cost._status_kib("VmRSS") or 0) / 2**20, 2)
    batch: dict = {}
    t0 = time.perf_counter()
    yield batch
    peak = max(marks + [_peak_rss_gib()])
    record = {
        "test": request.node.name,
        "seconds": round(time.perf_counter() - t0, 1),
        "peak_rss_gib": round(peak, 2),
        "train_peak_rss_gib": round(marks[0] if marks else peak, 2),
        "start_rss_gib": start,
        **batch,
    }
    print(f"\nPAPER-SCALE {json.dumps(record)}")
    log = os.environ.get("EMSR_PAPER_SCALE_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(record) + "\n")
    assert record["peak_rss_gib"] < MAX_GIB, f"peak RSS {record['peak_rss_gib']} GiB over {MAX_GIB} GiB"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The phantom at the study's crop size, degraded x8 and x16 by the workflow's code, one
    section of each for inference, and stand-in pretrained weights."""
    root = tmp_path_factory.mktemp("paper-scale")
    files = gpu.make_data(root, DEPTH, 1024, (8, 16))
    for s in (8, 16):
        files[f"section-x{s}"] = root / f"section-x{s}.h5"
        degrade_file(files["hr"], files[f"section-x{s}"], s, Degradation(), z=(0, 1))
    files["weights"] = gpu.stand_in_weights(root / "weights")
    return files


def batch_of(name: str, stage: str, scale: int, study: int, measured: dict) -> dict:
    """The train-settings override of the step's batch (none: the study's ``study``), recorded
    with its reason in the test's ``measured`` record."""
    if BATCH_OVERRIDE:
        batch, why = int(BATCH_OVERRIDE), "EMSR_PAPER_SCALE_BATCH"
    else:
        batch, why = BATCH.get((name, stage, scale), (study, "the study's"))
    measured.update(batch=batch, study_batch=study, batch_why=why)
    return {} if batch == study else {"batch_size": batch}


def paper_inference(preset: dict) -> InferSettings:
    base = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["inference"]
    return InferSettings.merged(base, preset.get("infer", {}))


def infer_section(method, scale: int, model_params: dict, preset: dict, data, model_file: Path, tmp_path: Path):
    _give_back_freed_memory()  # the training step's freed activations (GPEMSR inference needs ~7 GiB of its own)
    stats = infer_file(
        method,
        scale,
        model_params,
        paper_inference(preset),
        data[f"section-x{scale}"],
        tmp_path / "sr.h5",
        model_file=model_file,
        threads=THREADS,
    )
    sr, _ = read_dataset(tmp_path / "sr.h5", RAW_KEY, dtype=np.uint8, ndim=3)
    assert sr.shape == (1, 1024, 1024)
    return stats


# --------------------------------------------------------------------------- methods


@pytest.mark.parametrize("scale", [8, 16])
@pytest.mark.parametrize("name", SR_METHODS)
def test_method_paper_preset(name, scale, data, tmp_path, measured):
    from emsrbench.train import run

    method = discover()[name]
    p = method.preset("paper", scale)
    study = TrainSettings.merged(p["train"])
    stages = len(study.stages) or 1
    over = {
        "iterations": stages,
        "checkpoint_every": 10**9,
        **batch_of(name, "train", scale, study.batch_size, measured),
    }
    settings = TrainSettings.merged(p["train"], over, source=f"{name} paper train")
    job = paper_job(method, scale, p["model"], settings, data, tmp_path)
    run(job)
    assert not [f for f in job.flags if "pretrained" in f], job.flags  # the stand-ins were used
    infer_section(method, scale, p["model"], p, data, job.out_path, tmp_path)


# --------------------------------------------------------------------------- GPEMSR stages


def gpemsr_job(scale: int, data, tmp_path: Path, stage: str, measured: dict, gan_now: bool = False) -> TrainJob:
    method = discover()["gpemsr"]
    p = method.preset("paper", scale)
    train = p["train"]
    study = TrainSettings.merged(train).stage(stage).batch_size
    train["stages"][stage].update(batch_of("gpemsr", stage, scale, study, measured))
    if gan_now:  # the GAN phase (and an R1 step) at step 0
        train["stages"][stage].setdefault("objective", {})["gan_start"] = 0
    settings = TrainSettings.merged(train, {"iterations": 3, "checkpoint_every": 10**9}, source="gpemsr paper train")
    return paper_job(method, scale, p["model"], settings, data, tmp_path)


def paper_job(method, scale: int, model_params: dict, settings: TrainSettings, data, tmp_path: Path) -> TrainJob:
    """A paper-preset training job on the smoke's degraded data and stand-in weights."""
    return TrainJob(
        method=method,
        scale=scale,
        preset="paper",
        model_params=model_params,
        settings=settings,
        train_files=[str(data[scale])],
        out_path=tmp_path / "model.pt",
        ckpt_dir=tmp_path / "ckpt",
        threads=THREADS,
        pretrained=data["weights"],
    )


def untrained_stage_files(scale: int, tmp_path: Path) -> tuple[Path, Path]:
    """Stage I and II files of untrained paper networks (what stages II and III read)."""
    from emsrbench.gpemsr import make_config

    return gpu.untrained_stage_files(make_config("paper", "full", scale), scale, tmp_path)


def test_gpemsr_stage1_vqgan(data, tmp_path, measured):
    from emsrbench.gpemsr import training

    job = gpemsr_job(8, data, tmp_path, "vqgan", measured, gan_now=True)
    out = training.train_vqgan(job, tmp_path / "stage1.pt", tmp_path / "ckpt1")
    assert out.is_file()


@pytest.mark.parametrize("scale", [8, 16])
def test_gpemsr_stage2_indexer(scale, data, tmp_path, measured):
    from emsrbench.gpemsr import training

    vq, _ = untrained_stage_files(scale, tmp_path)
    job = gpemsr_job(scale, data, tmp_path, "indexer", measured)
    assert training.train_indexer(job, vq, tmp_path / "indexer.pt", tmp_path / "ckpt2").is_file()


@pytest.mark.parametrize("scale", [8, 16])
def test_gpemsr_stage3_fusion(scale, data, tmp_path, measured):
    """Stage III's step (reference loss through the frozen VGG included), then inference of a
    section by the stage III model file."""
    from emsrbench.gpemsr import training

    vq, idx = untrained_stage_files(scale, tmp_path)
    job = gpemsr_job(scale, data, tmp_path, "fusion", measured)
    training.train_fusion(job, vq, idx, job.out_path, tmp_path / "ckpt3")
    assert not job.flags, job.flags
    method = discover()["gpemsr"]
    p = method.preset("paper", scale)
    infer_section(method, scale, p["model"], p, data, job.out_path, tmp_path)


# --------------------------------------------------------------------------- segmenters


@pytest.mark.parametrize("net", ["superhuman", "mala"])
def test_segmenter_paper_preset(net, data, tmp_path, monkeypatch, measured):
    from emsrbench.segment import blockwise, networks
    from emsrbench.segment.stage import SEG_KEY, segment_volume
    from emsrbench.segment.training import train_segmenter

    study = TrainSettings.merged(networks.preset(net, "paper")["train"]).batch_size
    over = {"iterations": 1, "checkpoint_every": 10**9, **batch_of(net, "affinities", 1, study, measured)}
    model = train_segmenter(
        net, "paper", [str(data["hr"])], tmp_path / "seg.pt", tmp_path / "ckpt", override=over, threads=THREADS
    )
    assert model is not None and model.is_file()
    # The first forward pass computes, the others replay it (module docstring).
    real_run, calls, first = blockwise._run, [], {}

    def replay(model, blocks, dev, out_shape, precision):
        calls.append(len(blocks))
        if "out" not in first:
            first["out"] = real_run(model, blocks, dev, out_shape, precision)
        assert first["out"].shape[1:] == (3,) + tuple(out_shape)
        return first["out"][: len(blocks)]

    monkeypatch.setattr(blockwise, "_run", replay)
    stats = segment_volume(net, "paper", model, data["section-x8"], tmp_path / "seg.h5", threads=THREADS)
    assert stats["blocks"]["tiling"] == "study" and len(calls) > 1
    seg, _ = read_dataset(tmp_path / "seg.h5", SEG_KEY, ndim=3)
    assert seg.shape == (1, 1024, 1024)
