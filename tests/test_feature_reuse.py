"""Multi-slice feature reuse (issue #14): GPEMSR's and EDVR's per-section hook
(``section_features`` / ``forward_features``) and the tiled upscaler's reuse path give the
window forward's output within 1e-5, at the volume ends, over several tiles, across the runs
``infer_file`` cuts the volume into, and compute each section's features once per tile."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from conftest import ISBI, area_downsample, write_degraded

from emsrbench import infer
from emsrbench.gpemsr import build as build_gpemsr
from emsrbench.infer import InferSettings, TiledUpscaler, infer_file, neighbour_indices, reuses_section_features
from emsrbench.methods import discover

METHODS = discover()
SCALE = 8
# The paper architecture (full VGG19, 6-level SPyNet on x4 upsampled sections, the study's
# flows; EDVR with TSA) at widths small enough for a CPU test.  Kaiming init: at these widths
# the published inits shrink the activations layer by layer until the output hardly depends
# on the features (1e-4 for other sections' features), too little to tell anything from 1e-5.
GPEMSR_TINY_PAPER = dict(
    channels=(8, 8, 16, 16, 32),
    latent_dim=16,
    codebook_size=32,
    norm_groups=4,
    nf=16,
    deform_groups=4,
    front_blocks=1,
    back_blocks=1,
    hr_feat=8,
    init="kaiming",
)
EDVR_TINY_PAPER = dict(
    num_feat=16,
    num_extract_block=1,
    num_reconstruct_block=1,
    deformable_groups=4,
    with_tsa=True,
    hr_feat=16,
    init="kaiming",
)
NETWORKS = {
    "gpemsr-quick": lambda: build_gpemsr(SCALE, "quick"),
    "gpemsr-tiny-paper": lambda: build_gpemsr(SCALE, "paper", **GPEMSR_TINY_PAPER),
    "gpemsr-quick-no_pod": lambda: build_gpemsr(SCALE, "quick", "no_pod"),
    "gpemsr-quick-no_mpf": lambda: build_gpemsr(SCALE, "quick", "no_mpf"),
    "gpemsr-bidirectional": lambda: build_gpemsr(SCALE, "quick", flows="bidirectional"),
    "edvr-quick": lambda: METHODS["edvr"].module().build(SCALE, **METHODS["edvr"].preset("quick")["model"]),
    "edvr-tiny-paper": lambda: METHODS["edvr"].module().build(SCALE, **EDVR_TINY_PAPER),
}


def network(name: str) -> torch.nn.Module:
    """A seeded network with noise added to every parameter: at their inits the output is the
    bilinear base plus a residual of 1e-5 or exactly zero (zero last convs), the deformable
    offsets are zero and GPEMSR's MPF passes the LR features alone (the prior unused), so
    equality would prove little."""
    torch.manual_seed(0)
    model = NETWORKS[name]()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p), alpha=0.02)
    return model.eval()


class WindowOnly(torch.nn.Module):
    """The same network without the hook: the upscaler must take the window path."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def real_em(depth: int, hr_side: int) -> np.ndarray:
    """ISBI 2012 sections (real EM), HR (depth, hr_side, hr_side)."""
    with h5py.File(ISBI, "r") as f:
        return f["volumes/raw"][:depth, :hr_side, :hr_side]


def volume_windows(depth: int) -> np.ndarray:
    return np.stack([neighbour_indices(z, depth, 5) for z in range(depth)])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_hook_composes_to_the_forward(name, one_thread):
    """forward_features of stacked section_features is forward, on an odd size (padding) and
    with duplicated sections (a volume end); the neighbours' features matter."""
    model = network(name)
    assert reuses_section_features(model)
    rng = torch.Generator().manual_seed(1)
    sections = torch.rand(6, 10, 14, generator=rng)
    windows = torch.tensor([[0, 0, 0, 1, 2], [1, 2, 3, 4, 5], [3, 4, 5, 5, 5]])
    with torch.inference_mode():
        whole = model(sections[windows])
        feats = model.section_features(sections)
        reused = model.forward_features(sections[windows], tuple(f[windows] for f in feats))
        # negative control: the features of the next sections instead of the window's
        shifted = model.forward_features(sections[windows], tuple(f[(windows + 1) % 6] for f in feats))
    assert reused.shape == whole.shape == (3, 1, 10 * SCALE, 14 * SCALE)
    torch.testing.assert_close(reused, whole, atol=1e-5, rtol=0)
    assert (shifted - whole).abs().max() > 1e-3


@pytest.mark.parametrize("name", ["gpemsr-quick", "gpemsr-tiny-paper", "edvr-tiny-paper"])
def test_tiled_reuse_equals_the_window_path_once_per_section_and_tile(name, one_thread):
    """Real EM, 6 sections of 16x16 LR in 4 tiles, 3 windows per forward (the cache slides
    across forwards), every window including both volume ends."""
    model = network(name)
    volume = area_downsample(real_em(6, 128), SCALE)
    windows = volume_windows(6)
    settings = InferSettings.merged({"tile": 12, "overlap": 4, "margin": 1, "batch": 3})
    cpu = torch.device("cpu")
    computed = []
    features = model.section_features

    def counting(sections):
        computed.append(len(sections))
        return features(sections)

    model.section_features = counting
    reuse = TiledUpscaler(model, SCALE, settings, cpu)
    window = TiledUpscaler(model, SCALE, settings, cpu, reuse=False)
    assert reuse.reuse and not window.reuse and reuse.tiles_per_section(16, 16) == 4
    reused = reuse.sections(volume, windows)
    assert sum(computed) == 6 * 4  # each section once per tile (the window path: 5 per window)
    windowed = window.sections(volume, windows)
    assert reused.shape == (6, 128, 128)
    np.testing.assert_allclose(reused, windowed, atol=1e-5, rtol=0)
    # the (N, C, h, w) stacks entry point is the same computation
    np.testing.assert_allclose(reuse(volume[windows[:2]]), windowed[:2], atol=1e-5, rtol=0)


def test_infer_file_reuse_equals_the_window_path(tmp_path, monkeypatch, one_thread):
    """End to end: the HDF5 written with reuse equals the window path's, with the volume cut
    into runs of 2 output sections (each run recomputes the sections beyond its ends; the
    default budget holds the whole test volume, the plain case of the test above)."""
    lr_path = write_degraded(tmp_path / "test.h5", real_em(6, 64), SCALE)
    model = network("gpemsr-quick")
    settings = InferSettings.merged({"tile": 12, "overlap": 4, "margin": 1, "batch": 1})
    monkeypatch.setattr(infer, "REUSE_OUTPUT_BYTES", 2 * 4 * 8 * 8 * SCALE**2)  # two 64x64 float32 sections
    outputs = {}
    for name, net in (("reuse", model), ("window", WindowOnly(model))):
        monkeypatch.setattr(infer, "load_model", lambda *args, net=net, **kwargs: (net, {}))
        stats = infer_file(METHODS["gpemsr"], SCALE, {}, settings, lr_path, tmp_path / f"{name}.h5")
        assert stats["feature_reuse"] is (name == "reuse")
        with h5py.File(tmp_path / f"{name}.h5") as f:
            outputs[name] = f["volumes/raw"][:].astype(int)
    assert outputs["reuse"].shape == (6, 64, 64)
    # uint8 outputs of floats equal within 1e-5: a pixel can only differ where the float is
    # within 1e-5 of a rounding boundary
    diff = np.abs(outputs["reuse"] - outputs["window"])
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
