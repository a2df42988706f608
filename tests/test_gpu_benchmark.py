"""benchmarks/gpu.py (issue 14, part 5): the device-peak table, the step timer, the table, and
its smoke mode on the CPU (tiny shapes) for one model (seconds; in `make test`) and for every
model (minutes: run by `make paper-smoke` with the paper-scale smoke, EMSR_PAPER_SCALE=1)."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu  # noqa: E402


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989.0),
        ("NVIDIA H100 PCIe", 756.0),
        ("NVIDIA H100 NVL", 835.0),
        ("NVIDIA H200", 989.0),
        ("NVIDIA A100-SXM4-80GB", 312.0),
        ("NVIDIA A100 80GB PCIe", 312.0),
        ("NVIDIA GeForce RTX 3090", None),
    ],
)
def test_bf16_peak_by_device_name(name, tflops):
    assert gpu.bf16_peak(name) == tflops


def test_timed_objective_counts_steps_between_marks(monkeypatch):
    import torch

    class Inner:
        seen = []

        def step(self, a, b, step):
            self.seen.append(step)
            return {"loss": 0.0}

        def lr(self):
            return 0.5

    from types import SimpleNamespace

    clock = iter([10.0, 12.0])
    monkeypatch.setattr(gpu, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    timed = gpu.Timed(Inner(), first=1, last=5, dev=torch.device("cpu"))
    for s in range(6):
        timed.step(None, None, s)
    assert Inner.seen == list(range(6)) and timed.lr() == 0.5  # delegates
    assert timed.rate() == pytest.approx(4 / 2.0)


def test_table_marks_errors_lower_bounds_and_percent_of_peak():
    ok = gpu.Row(
        "rcan",
        "train",
        8,
        "16 x 32",
        pipe_its=2.0,
        synth_its=4.0,
        train_gib=1.5,
        step_tflop=0.5,
        train_uncounted=["torchvision._deform_conv2d_backward"],
        infer_mps=3.0,
        infer_gib=0.5,
        infer_tflops=1.0,
    )
    bad = gpu.Row("edvr", "train", 8, "32 x 32", error="OOM")
    half = gpu.Row("gpemsr", "III fusion", 8, "8 x 32", pipe_its=1.0, synth_its=1.0, step_tflop=1.0, infer_error="OOM")
    lines = gpu.table([ok, bad, half], peak=100.0)
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    assert cells[4:10] == ["2.00", "4.00", "50%", "1.50", "1.000*", "1.0*"]  # 0.5 TFLOP x 2 it/s of 100
    assert cells[13] == "1.0"
    assert "OOM" in lines[3] and len(lines[3].split("|")) == len(lines[2].split("|"))
    assert "| 1.000 | 1.0 | inference OOM |" in lines[4] and len(lines[4].split("|")) == len(lines[2].split("|"))


def run_smoke(tmp_path, *extra):
    out_json = tmp_path / "rows.json"
    rc = gpu.main(
        [
            "--smoke",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--peak-tflops",
            "1",
            "--json",
            str(out_json),
            "--out",
            str(tmp_path / "table.md"),
            *extra,
        ]
    )
    return rc, json.loads(out_json.read_text()), (tmp_path / "table.md").read_text()


def check_rows(rows: list[dict], expect_infer: bool = True):
    for r in rows:
        assert not r["error"], r
        for key in ("pipe_its", "synth_its", "step_tflop"):
            assert math.isfinite(r[key]) and r[key] > 0, (r["name"], r["stage"], key, r[key])
    if expect_infer:
        last = [r for r in rows if math.isfinite(r["infer_mps"])]
        assert last and all(r["infer_mps"] > 0 and r["infer_tflops"] > 0 for r in last)


def test_smoke_one_model(tmp_path):
    """The whole path (fit over a degraded phantom, the synthetic loop, FLOP count, tiled
    inference, the table) for one method, at tiny shapes."""
    rc, payload, text = run_smoke(tmp_path, "--methods", "rcan", "--segmenters")
    assert rc == 0
    assert [(r["name"], r["stage"]) for r in payload["rows"]] == [("rcan", "train")]
    check_rows(payload["rows"])
    assert "| rcan | train | 8 | 2 x 8 |" in text and "dense bf16 peak 1 TFLOP/s" in text


@pytest.mark.slow
@pytest.mark.paper_scale
@pytest.mark.skipif(os.environ.get("EMSR_PAPER_SCALE") != "1", reason="7 min on 2 cores: run with `make paper-smoke`")
def test_smoke_every_model(tmp_path):
    """Every method that trains (each stage) and both segmenters, at tiny shapes (quick presets):
    each model's own case builder, objective and inference path."""
    rc, payload, _ = run_smoke(tmp_path)
    rows = payload["rows"]
    assert rc == 0
    stages = {(r["name"], r["stage"]) for r in rows}
    assert {
        ("gpemsr", "I vqgan"),
        ("gpemsr", "II indexer"),
        ("gpemsr", "III fusion"),
        ("realesrgan", "esrnet"),
        ("realesrgan", "esrgan"),
        ("superhuman", "affinities"),
        ("mala", "affinities"),
    } <= stages
    check_rows(rows)
    inferred = {r["name"] for r in rows if math.isfinite(r["infer_mps"])}
    assert inferred == {r["name"] for r in rows}  # every model's last stage infers
