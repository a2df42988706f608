"""The MAC column counts what inference runs (issue #14): for a model with the feature-reuse
hook, ``section_features`` of one section + ``forward_features`` of one window per output
section and tile, which is exactly what a whole tiled reuse run computes per section (the
features of the sections beyond a run's inner ends, recomputed by the next run, are
``macs_feature_passes``); for the window path, one window forward, as before."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_feature_reuse import WindowOnly  # the same network without the hook

from emsrbench import infer
from emsrbench.cost import count_macs, count_run
from emsrbench.gpemsr import build as build_gpemsr
from emsrbench.infer import (
    InferSettings,
    TiledUpscaler,
    count_output_section,
    feature_passes,
    infer_file,
    measure_macs,
    section_runs,
)
from emsrbench.methods import discover

METHODS = discover()
SCALE, DEPTH, SLICES, SIDE = 8, 6, 5, 16
CPU = torch.device("cpu")
# 16x16 LR sections in 12-pixel tiles with overlap 4: tiles at 0 and 4 per axis, 4 per section
SETTINGS = InferSettings.merged({"tile": 12, "overlap": 4, "margin": 1, "batch": 3})
TILES, TILE_MP = 4, 12 * 12 * SCALE**2 / 1e6
SECTION_MP = SIDE * SIDE * SCALE**2 / 1e6


def quick_network(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "gpemsr":
        return build_gpemsr(SCALE, "quick").eval()
    return METHODS[name].module().build(SCALE, **METHODS[name].preset("quick")["model"]).eval()


def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (DEPTH, SIDE, SIDE), dtype=np.uint8)


def run_macs(upscaler: TiledUpscaler, lr: np.ndarray, runs) -> int:
    """MACs counted over the ``sections`` calls ``infer_file`` makes for ``runs``."""
    total = 0
    for _, windows in runs:
        first = int(windows.min())
        total += count_run(lambda: upscaler.sections(lr[first : windows.max() + 1], windows - first)).macs
    return total


@pytest.mark.parametrize("name", ["gpemsr", "edvr"])
def test_reuse_count_per_section_is_what_a_tiled_reuse_run_computes(name, one_thread):
    model, lr = quick_network(name), volume()
    reuse, window = TiledUpscaler(model, SCALE, SETTINGS, CPU), TiledUpscaler(model, SCALE, SETTINGS, CPU, reuse=False)
    assert reuse.reuse and reuse.tiles_per_section(SIDE, SIDE) == TILES
    one_run = section_runs(DEPTH, SLICES, DEPTH)
    assert feature_passes(one_run) == 1.0  # the windows at the volume ends repeat the end sections
    stack = lr[one_run[0][1][0]]
    counted = measure_macs(model, stack, SCALE, SETTINGS, CPU, reuse=True, passes=1.0)
    assert counted["macs_path"] == "feature_reuse" and counted["macs_complete"]
    assert counted["macs_note"].startswith("section_features of 1 section + forward_features of 1 window")
    # the whole run: every output section on every tile, each section's features once per tile
    whole = run_macs(reuse, lr, one_run)
    assert whole == pytest.approx(DEPTH * TILES * counted["macs_per_mp"] * TILE_MP, rel=1e-12)
    assert whole / (DEPTH * SECTION_MP) == pytest.approx(counted["macs_per_mp_tiled"], rel=1e-12)
    # the window path's count is the window run's, and more: each window recomputes 5 sections' features
    windowed = measure_macs(model, stack, SCALE, SETTINGS, CPU, reuse=False)
    assert windowed["macs_path"] == "window" and "macs_feature_passes" not in windowed
    assert run_macs(window, lr, one_run) == pytest.approx(DEPTH * TILES * windowed["macs_per_mp"] * TILE_MP, rel=1e-12)
    assert counted["macs_per_mp"] < windowed["macs_per_mp"]
    # exactly: the window forward is the section features of its 5 sections + the fusion
    tile = torch.from_numpy(stack[:, :12, :12]).float().div(255)[None]
    fusion, section = count_output_section(model, tile, reuse=True)
    assert count_output_section(model, tile, reuse=False)[0].macs == fusion.macs + SLICES * section.macs


def test_runs_recompute_the_features_beyond_their_ends_and_the_tiled_count_includes_them(one_thread):
    """Runs of 2 output sections read sections 0-3, 0-5 and 2-5: 14 feature computations for 6
    output sections per tile, the 8 extra ones in ``macs_per_mp_tiled``, not in ``macs_per_mp``."""
    model, lr = quick_network("gpemsr"), volume()
    runs = section_runs(DEPTH, SLICES, 2)
    assert [z0 for z0, _ in runs] == [0, 2, 4] and feature_passes(runs) == pytest.approx(14 / 6)
    counted = measure_macs(model, lr[runs[0][1][0]], SCALE, SETTINGS, CPU, reuse=True, passes=feature_passes(runs))
    whole = run_macs(TiledUpscaler(model, SCALE, SETTINGS, CPU), lr, runs)
    assert whole / (DEPTH * SECTION_MP) == pytest.approx(counted["macs_per_mp_tiled"], rel=1e-12)
    assert whole > DEPTH * TILES * counted["macs_per_mp"] * TILE_MP * 1.1  # the recomputed features cost


def test_count_of_a_model_without_the_hook_is_its_window_forward(one_thread):
    model, lr = WindowOnly(quick_network("edvr")), volume()
    upscaler = TiledUpscaler(model, SCALE, SETTINGS, CPU)
    assert not upscaler.reuse
    counted = measure_macs(model, lr[:SLICES], SCALE, SETTINGS, CPU, reuse=upscaler.reuse, passes=3.0)
    tile = torch.from_numpy(lr[:SLICES, :12, :12]).float().div(255)[None]
    assert counted["macs_per_mp"] * TILE_MP == pytest.approx(count_macs(model, tile).macs, rel=1e-12)
    assert counted["macs_per_mp_tiled"] == pytest.approx(counted["macs_per_mp"] * TILES * 144 / 256)  # passes unused
    assert counted["macs_path"] == "window" and counted["macs_note"].startswith("1 window forward per output section")


def test_infer_file_records_the_path_it_ran_and_counted(tmp_path, monkeypatch, degraded_x8, one_thread):
    """6 sections of 8x8 LR in runs of 2 output sections (REUSE_OUTPUT_BYTES): the stats name
    the counted path and its 14 / 6 feature passes; the same network without the hook: the
    window path, counted as before."""
    model = quick_network("gpemsr")
    settings = InferSettings.merged({"tile": 8, "overlap": 4, "margin": 1, "batch": 2})  # one tile per section
    monkeypatch.setattr(infer, "REUSE_OUTPUT_BYTES", 2 * 4 * 8 * 8 * SCALE**2)
    stats = {}
    for name, net in (("reuse", model), ("window", WindowOnly(model))):
        monkeypatch.setattr(infer, "load_model", lambda *args, net=net, **kwargs: (net, {}))
        stats[name] = infer_file(METHODS["gpemsr"], SCALE, {}, settings, degraded_x8, tmp_path / f"{name}.h5")
    assert stats["reuse"]["feature_reuse"] and stats["reuse"]["macs_path"] == "feature_reuse"
    assert stats["reuse"]["macs_feature_passes"] == pytest.approx(14 / 6)
    assert not stats["window"]["feature_reuse"] and stats["window"]["macs_path"] == "window"
    assert stats["reuse"]["macs_per_mp"] < 0.9 * stats["window"]["macs_per_mp"]
