"""The counted-MAC bound of feature reuse in benchmarks/feature_reuse.py (issue 14): for EDVR
(hook) the window forward over the reuse path; for BasicVSR (no hook) the window forward over
the window less the adjacent-pair flows a per-pair hook would not recompute. Checked against
counts taken independently: EDVR's window less its T - 1 recomputed section features, and
BasicVSR's window with SPyNet counted apart (the window runs 2N flows per output section)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import feature_reuse  # noqa: E402

from emsrbench.cost import count_macs, count_run  # noqa: E402
from emsrbench.infer import InferSettings  # noqa: E402
from emsrbench.methods import discover  # noqa: E402


def _setup(name: str):
    method = discover()[name]
    p = method.preset("quick")
    model = method.module().build(8, **p["model"]).eval()
    volume = np.random.default_rng(0).integers(0, 256, (7, 16, 16), dtype=np.uint8)
    return method, model, InferSettings.merged({}, p["infer"]), volume


def _bound(text: str) -> float:
    return float(text.split("x")[0])


def test_edvr_bound_is_the_window_over_the_window_less_recomputed_features():
    method, model, settings, volume = _setup("edvr")
    tile = torch.from_numpy(volume[: method.slices]).float().div(255.0)[None]
    with torch.no_grad():
        window = count_macs(model, tile).macs
        one_section = count_run(lambda: model.section_features(tile[0, :1])).macs
    expected = window / (window - (method.slices - 1) * one_section)
    assert _bound(feature_reuse.mac_bound(model, method, settings, volume, torch.device("cpu"))) == pytest.approx(
        expected, abs=0.006
    )


def test_basicvsr_bound_saves_all_but_two_of_the_windows_flows(monkeypatch):
    method, model, settings, volume = _setup("basicvsr")
    tile = torch.from_numpy(volume[: method.slices]).float().div(255.0)[None]
    with torch.no_grad():
        window = count_macs(model, tile).macs
        flows = []

        def no_cost_flow(ref, supp):  # SpyNet counted apart: zero flows, no MACs
            flows.append(ref.shape[0])
            return ref.new_zeros(ref.shape[0], 2, *ref.shape[-2:])

        with monkeypatch.context() as patch:
            patch.setattr(model.spynet, "forward", no_cost_flow)
            without_flows = count_macs(model, tile).macs
    assert sum(flows) == method.slices - 1  # 2N flows in one window: N per direction
    flow = (window - without_flows) / sum(flows)
    expected = window / (window - (sum(flows) - 2) * flow)  # a per-pair hook: 2 new flows per output section
    text = feature_reuse.mac_bound(model, method, settings, volume, torch.device("cpu"))
    assert "not built" in text and _bound(text) == pytest.approx(expected, abs=0.006) and _bound(text) > 1.0
