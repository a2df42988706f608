"""The new-user story of issue #12 through the workflow: a run, then other data (another
phantom seed) and, separately, other `train.iterations` in the same results folder. Every
affected model (an SR method, a segmenter, each GPEMSR stage) retrains from step 0 with a log
line saying what changed, its weights differ from before, and unaffected jobs do not rerun."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

TARGETS = [
    "results/models/rcan/x8/model.pt",
    "results/models/gpemsr/x8/model.pt",
    "results/segmenters/superhuman/model.pt",
]


def config(train_seed: int, iterations: int) -> dict:
    return {
        "results": "results",
        "preset": "quick",
        "scales": [8],
        "methods": ["rcan", "gpemsr"],
        "data": {
            "source": "phantom",
            "phantom": {
                "samples": {
                    "train": {"shape": [6, 128, 128], "seed": train_seed},
                    "test": {"shape": [3, 128, 128], "seed": 2},
                }
            },
            "splits": {
                "train": [{"sample": "train", "z": [0, 5]}],
                "val": [{"sample": "train", "z": [5, 6]}],
                "test": [{"sample": "test"}],
            },
        },
        "train": {"checkpoint_every": 1},  # every stage leaves a checkpoint, even of one step
        "train_override": {"iterations": iterations, "batch_size": 2},
        "inference": {"tile": 16, "overlap": 4},
        "metrics": {"lpips": {"enabled": False}},
        "segmentation": {"networks": ["superhuman"], "train": {"iterations": 3, "checkpoint_every": 1}},
    }


def run(work: Path, cfg: dict) -> None:
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *TARGETS,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "2",
        "--configfile",
        str(path),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-3000:]


def models(res: Path) -> dict[str, Path]:
    gpemsr = res / "models" / "gpemsr"
    return {
        "rcan": res / "models/rcan/x8/model.pt",
        "superhuman": res / "segmenters/superhuman/model.pt",
        "gpemsr stage I": next(gpemsr.glob("stage1-*.pt")),
        "gpemsr stage II": next((gpemsr / "x8").glob("stage2-*.pt")),
        "gpemsr stage III": gpemsr / "x8" / "model.pt",
    }


LOGS = {
    "rcan": "train/rcan-x8.log",
    "superhuman": "train_segmenter/superhuman.log",
    "gpemsr stage I": "gpemsr_stage1/gpemsr-*.log",
    "gpemsr stage II": "gpemsr_stage2/gpemsr-x8-*.log",
    "gpemsr stage III": "gpemsr_stage3/gpemsr-x8.log",
}


def weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def differ(a: dict, b: dict) -> bool:
    return any(not torch.equal(a[k], b[k]) for k in a)


def log_text(res: Path, name: str) -> str:
    return "".join(p.read_text() for p in (res / "logs").glob(LOGS[name]))


def test_changed_data_and_settings_retrain_every_affected_model_from_step_0(tmp_path):
    res = tmp_path / "results"
    run(tmp_path, config(train_seed=1, iterations=6))
    first = {name: weights(p) for name, p in models(res).items()}
    for p in (res / "logs").rglob("*.log"):
        p.write_text("")  # each log keeps what the next run says

    # other data at the same paths (another phantom seed): every model retrains from step 0
    run(tmp_path, config(train_seed=5, iterations=6))
    second = {name: weights(p) for name, p in models(res).items()}
    for name in first:
        log = log_text(res, name)
        assert "was made from other inputs" in log and "training from step 0" in log, (name, log[-1500:])
        assert "content changed" in log, (name, log[-1500:])
        assert differ(first[name], second[name]), name
    kept = [res / "data" / "train.h5", *(res / "degraded").rglob("*.h5"), models(res)["superhuman"]]
    made = {p: p.stat().st_mtime_ns for p in kept}
    for p in (res / "logs").rglob("*.log"):
        p.write_text("")

    # other iterations: the SR models retrain from step 0; the data and the segmenter (its
    # settings are segmentation.train) are left alone
    run(tmp_path, config(train_seed=5, iterations=8))
    third = {name: weights(p) for name, p in models(res).items()}
    for name in ("rcan", "gpemsr stage I", "gpemsr stage II", "gpemsr stage III"):
        log = log_text(res, name)
        assert "was made from other inputs" in log and "training from step 0" in log, (name, log[-1500:])
        assert "train.iterations" in log, (name, log[-1500:])
        assert differ(second[name], third[name]), name
    assert log_text(res, "superhuman") == ""
    assert {p: p.stat().st_mtime_ns for p in made} == made  # phantom, degraded volumes, segmenter: not rerun
