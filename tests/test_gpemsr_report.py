"""GPEMSR's ablations in the report: one list of variant names (emsrbench.gpemsr.config), and
supplement Table 2 with the stage I reconstruction numbers (emsrbench.gpemsr.reconstruct)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.gpemsr import VARIANTS, VQGAN, make_config
from emsrbench.gpemsr.config import ABLATED, OWN_VARIANT
from emsrbench.gpemsr.reconstruct import prior_rows, reconstruct
from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.metric_specs import spec
from emsrbench.pretrained import Pretrained
from emsrbench.report import tables
from emsrbench.report.data import Cell, Row

GPEMSR = load_method(METHODS_DIR / "gpemsr")


def test_every_variant_the_report_names_exists_in_the_gpemsr_config():
    named = {c.variant for ab in tables.ABLATIONS for c in ab.components}
    assert named and named <= set(VARIANTS), named - set(VARIANTS)
    assert named <= set(GPEMSR.variants), named - set(GPEMSR.variants)  # and the workflow runs them
    # every ablation the method defines has its place in the report's tables
    assert named == set(VARIANTS) - {OWN_VARIANT}
    assert GPEMSR.variants[0] == OWN_VARIANT == tables.OWN_VARIANT and VARIANTS[OWN_VARIANT] == {}
    # the report's component names the setting each variant switches off
    for setting, variant in ABLATED.items():
        assert VARIANTS[variant] == {setting: False}


def _row(variant: str, cells: dict, status: str = "ok") -> Row:
    return Row(
        "gpemsr",
        "GPEMSR",
        "multi-slice",
        "quick",
        8,
        variant,
        status,
        cells={(m, ""): (v if isinstance(v, Cell) else Cell(v)) for m, v in cells.items()},
    )


MISSING = Cell(math.nan, "missing: alexnet weights not found")


def test_table2_shows_the_stage1_reconstruction_next_to_the_sr_result():
    own_sr = _row("", {"psnr": 21.0, "lpips": 0.40, "ssim": 0.33})
    rows = [
        own_sr,
        _row("full", {"prior_psnr": 28.69, "prior_lpips": MISSING}),
        _row("no_enc_attn", {"psnr": 20.9, "lpips": 0.41, "prior_psnr": 28.66, "prior_lpips": MISSING}),
        _row("no_dec_attn", {"prior_psnr": 28.65, "prior_lpips": MISSING}),  # its stage III not run yet
        Row("bicubic", "Bicubic", "single-image", "quick", 8, cells={("psnr", ""): Cell(20.4)}),
    ]
    out = dict(tables.ablations(rows))
    assert list(out) == ["GPEMSR 8x: Attention in the stage-I encoder and decoder (as supplement Table 2)"]
    t2 = out[next(iter(out))]
    heads = re.findall(r'<th class="num" title="([a-z_]+):', t2)
    assert heads == ["prior_psnr", "prior_lpips", "psnr", "lpips"]
    body = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>(.*?)</tr>", t2)
    assert [(a, b) for a, b, _ in body] == [("w/o Att.", "w Att."), ("w Att.", "w/o Att."), ("w Att.", "w Att.")]
    values = [re.findall(r'data-v="([^"]+)"|>(n/a)<', cells) for _, _, cells in body]
    flat = [[v or na for v, na in row] for row in values]
    assert flat == [["28.66", "n/a", "20.9", "0.41"], ["28.65", "n/a", "n/a", "n/a"], ["28.69", "n/a", "21.0", "0.4"]]
    # the full model's stage I is the best here; LPIPS says why it is missing
    assert re.search(r'<td class="num best" data-v="28.69"', t2)
    assert t2.count('title="missing: alexnet weights not found"') == 3
    # the stage I rows stay out of the leaderboard, and the model's own row is left as it was
    board = tables.leaderboard(rows, 8)
    assert "prior_psnr" not in board and "[full]" not in board and ("prior_psnr", "") not in own_sr.cells
    assert spec("prior_psnr").better == 1 and spec("prior_lpips").better == -1


def test_stage1_rows_alone_make_no_table():
    assert tables.ablations([_row("", {"psnr": 21.0}), _row("full", {"prior_psnr": 28.0})]) == []


def test_reconstruct_pads_to_the_latent_grid_and_matches_the_vqgan(one_thread):
    torch.manual_seed(0)
    vq = VQGAN(make_config("quick")).eval()
    rng = np.random.default_rng(0)
    hr = rng.integers(0, 256, (2, 40, 52), dtype=np.uint8)  # not multiples of the 16 px cell
    rec = reconstruct(vq, hr)
    assert rec.shape == hr.shape and rec.dtype == np.uint8
    # a section already on the grid goes through unchanged: encoder, codebook, decoder
    grid = hr[:1, :32, :48]
    with torch.no_grad():
        direct = vq(torch.from_numpy(grid).float().div(255)[:, None])[0].clamp(0, 1).mul(255).round().to(torch.uint8)
    np.testing.assert_array_equal(reconstruct(vq, grid), direct[:, 0].numpy())
    with pytest.raises(EmsrError, match="smaller than the latent cell"):
        reconstruct(vq, hr[:, :8, :8])


def test_prior_rows_are_tidy_per_scale_with_lpips_missing_and_why(tmp_path, degraded_x8, one_thread):
    cfg = make_config("quick", variant="no_enc_attn")
    torch.manual_seed(0)
    torch.save({"state_dict": VQGAN(cfg).state_dict()}, tmp_path / "stage1.pt")
    df = prior_rows(
        cfg,
        tmp_path / "stage1.pt",
        degraded_x8,
        method=GPEMSR,
        preset="quick",
        variant="no_enc_attn",
        scales=[8, 16],
        pretrained=Pretrained(tmp_path / "weights"),
    )
    assert list(df.columns) == COLUMNS and len(df) == 4
    assert set(df["variant"]) == {"no_enc_attn"} and sorted(df["scale"]) == [8, 8, 16, 16]
    psnr = df[df["metric"] == "prior_psnr"]["value"]
    assert psnr.nunique() == 1 and 3 < psnr.iloc[0] < 60  # scale-independent, an untrained VQGAN
    lp = df[df["metric"] == "prior_lpips"]
    assert lp["value"].isna().all() and lp["note"].str.contains("missing: alexnet weights not found").all()
    off = prior_rows(
        cfg,
        tmp_path / "stage1.pt",
        degraded_x8,
        method=GPEMSR,
        preset="quick",
        variant="no_enc_attn",
        scales=[8],
        pretrained=None,
    )
    assert "disabled in config" in off[off["metric"] == "prior_lpips"]["note"].iloc[0]
    # a stage I model of other settings is refused in one line
    with pytest.raises(EmsrError, match="stage1.pt: not a stage I VQGAN of these settings"):
        prior_rows(
            make_config("quick"),
            tmp_path / "stage1.pt",
            degraded_x8,
            method=GPEMSR,
            preset="quick",
            variant="full",
            scales=[8],
            pretrained=None,
        )
