"""Bootstrap sidecars and paired tie marks: evaluate / score_volume write them, the leaderboard
and the report mark methods tied with the best."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd
import pytest

from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.io import write_cremi
from emsrbench.leaderboard import TIE_MARK, write
from emsrbench.stats import BootstrapSettings, mean_replicates, sidecar

# Single sections: the sidecars below hold replicates of per-section values.
SETTINGS = BootstrapSettings.merged({"resamples": 400, "seed": 4, "sections_per_block": 1, "sections_per_slab": 1})


def image_rows(method, scale, psnr, display=None, variant=""):
    base = {
        "method": method,
        "display_name": display or method.upper(),
        "family": "single-image",
        "preset": "quick",
        "scale": scale,
        "segmenter": "",
        "variant": variant,
        "tie": "",
    }
    return [
        {**base, "metric": "psnr", "value": psnr, "note": ""},
        {**base, "metric": "parameters", "value": 10.0, "note": ""},
    ]


def psnr_sidecar(path, method, per_section, settings=SETTINGS, variant="", scale=8):
    rep = mean_replicates(per_section, resamples=settings.resamples, seed=settings.seed)
    sidecar.write(path, {"psnr": rep}, kind="image", method=method, scale=scale, settings=settings, variant=variant)
    return rep


@pytest.fixture
def board(tmp_path):
    """Per-section PSNR of four methods over 30 sections that vary a lot (shared), and their sidecars:
    'good' and 'twin' differ by noise only, 'bad' is 1 dB under on every section; the HR row and
    an ablation variant 'good [v]' would be better than everything but are not compared."""
    rng = np.random.default_rng(0)
    base = rng.normal(22.0, 2.0, 30)
    sections = {
        "good": base + 1.0,
        "twin": base + 1.0 + rng.normal(0, 0.05, 30),
        "bad": base,
        "hr": base + 10,
        ("good", "v"): base + 5,
    }
    tidy, paths = [], []
    for key, x in sections.items():
        method, variant = key if isinstance(key, tuple) else (key, "")
        paths.append(tmp_path / f"{method}{variant}.npz")
        psnr_sidecar(paths[-1], method, x, variant=variant)
        tidy += image_rows(method, 8, float(x.mean()), variant=variant)
    csv = tmp_path / "rows.csv"
    pd.DataFrame(tidy, columns=COLUMNS).to_csv(csv, index=False)
    return csv, paths, sections


def test_sidecar_round_trip_and_disabled_intervals(tmp_path):
    x = np.random.default_rng(1).normal(size=12)
    rep = psnr_sidecar(tmp_path / "a.npz", "rcan", x)
    back = sidecar.read(tmp_path / "a.npz")
    assert (back.method, back.scale, back.kind, back.seed, back.resamples, back.blocks) == (
        "rcan",
        8,
        "image",
        4,
        400,
        12,
    )
    np.testing.assert_array_equal(back.reps["psnr"].replicates, rep.replicates)
    np.testing.assert_array_equal(back.reps["psnr"].jackknife, rep.jackknife)
    assert back.reps["psnr"].estimate == rep.estimate == pytest.approx(x.mean())
    sidecar.write(tmp_path / "off.npz", {"psnr": rep}, kind="image", method="rcan", scale=8, settings=None)
    assert sidecar.read(tmp_path / "off.npz").reps == {}
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(EmsrError, match="bad.npz: not a readable bootstrap sidecar"):
        sidecar.read(tmp_path / "bad.npz")


def test_leaderboard_marks_ties_with_the_best(tmp_path, board):
    csv, paths, sections = board
    out = tmp_path / "out"
    tidy = write([csv], out / "lb.csv", out / "lb.md", out / "metrics.csv", bootstrap=paths)
    marks = {(r.method, r.variant): r.tie for r in tidy[tidy["metric"] == "psnr"].itertuples()}
    # good and twin differ by noise (either may be best), bad is worse; HR and variants not compared
    assert sorted([marks[("good", "")], marks[("twin", "")]]) == ["best", "tied"]
    assert marks[("bad", "")] == "worse" and marks[("hr", "")] == "" and marks[("good", "v")] == ""
    assert set(tidy.loc[tidy["metric"] == "parameters", "tie"]) == {""}  # cost: not ranked
    back = pd.read_csv(out / "metrics.csv", keep_default_na=False)
    assert list(back.columns) == COLUMNS and set(back["tie"]) == {"", "best", "tied", "worse"}
    wide = pd.read_csv(out / "lb.csv", keep_default_na=False).set_index("display_name")
    assert wide.loc["BAD", "psnr@x8:tie"] == "worse" and wide.loc["HR", "psnr@x8:tie"] == ""
    md = (out / "lb.md").read_text()
    tied = "TWIN" if marks[("twin", "")] == "tied" else "GOOD"
    assert f"{TIE_MARK}" in next(line for line in md.splitlines() if line.startswith(f"| {tied} |"))
    assert TIE_MARK not in next(line for line in md.splitlines() if line.startswith("| BAD |"))
    assert "tied: not shown to differ from the best (paired block bootstrap, Holm-corrected over the column)" in md
    # without sidecars: no marks, no legend
    plain = write([csv], out / "lb2.csv", out / "lb2.md", out / "m2.csv")
    assert set(plain["tie"]) == {""} and "tied with the best" not in (out / "lb2.md").read_text()


def test_identical_methods_tie_and_mismatched_sidecars_are_refused(tmp_path):
    x = np.random.default_rng(2).normal(25, 3, 20)
    rows = image_rows("a", 8, float(x.mean())) + image_rows("b", 8, float(x.mean()))
    csv = tmp_path / "rows.csv"
    pd.DataFrame(rows, columns=COLUMNS).to_csv(csv, index=False)
    paths = [tmp_path / "a.npz", tmp_path / "b.npz"]
    psnr_sidecar(paths[0], "a", x)
    psnr_sidecar(paths[1], "b", x.copy())
    tidy = write([csv], tmp_path / "l.csv", tmp_path / "l.md", tmp_path / "m.csv", bootstrap=paths)
    assert sorted(tidy.loc[tidy["metric"] == "psnr", "tie"]) == ["best", "tied"]
    other = BootstrapSettings.merged({"resamples": 400, "seed": 5, "sections_per_block": 1})
    psnr_sidecar(paths[1], "b", x, settings=other)
    with pytest.raises(EmsrError, match=r"b\.npz: bootstrap settings differ from .*a\.npz \(seed 4 vs 5\)") as info:
        write([csv], tmp_path / "l.csv", tmp_path / "l.md", tmp_path / "m.csv", bootstrap=paths)
    assert "\n" not in str(info.value)
    psnr_sidecar(paths[1], "b", x[:10])  # other blocks
    with pytest.raises(EmsrError, match="blocks 20 vs 10"):
        write([csv], tmp_path / "l.csv", tmp_path / "l.md", tmp_path / "m.csv", bootstrap=paths)


def test_lower_is_better_and_unranked_metrics():
    from emsrbench.leaderboard import direction
    from emsrbench.stats.sidecar import Sidecar, tie_marks

    assert (direction("psnr"), direction("lpips"), direction("arand"), direction("cremi_score")) == (1, -1, -1, -1)
    assert direction("voi_split") == direction("voi_merge") == direction("parameters") == 0
    rng = np.random.default_rng(3)
    base = rng.gamma(2.0, 0.1, 25)
    cars = []
    for name, shift in (("low", 0.0), ("high", 0.2)):
        reps = {m: mean_replicates(base + shift, resamples=300, seed=1) for m in ("lpips", "voi_split")}
        cars.append(Sidecar("x", "image", name, "", 8, "", 1, 300, 0.95, "bca", 25, 1, reps))
    marks = tie_marks(cars, direction)
    assert marks[("low", "", 8, "lpips", "")][0] == "best" and marks[("high", "", 8, "lpips", "")][0] == "worse"
    assert marks[("high", "", 8, "lpips", "")][1].low > 0.15
    assert not any(k[3] == "voi_split" for k in marks)


def test_evaluate_writes_lpips_interval_and_sidecar(tmp_path, degraded_x8, monkeypatch):
    """LPIPS is missing here (no AlexNet): a labelled fake per-section LPIPS goes through the
    interval and sidecar path exactly as the real one would."""
    import emsrbench.evaluate as ev
    from emsrbench.infer import InferSettings, infer_file
    from emsrbench.methods import discover
    from emsrbench.stats import bootstrap_mean

    fake = np.linspace(0.2, 0.4, 6)
    monkeypatch.setattr(ev, "lpips_per_section", lambda hr, sr, pretrained: (fake, "FAKE LPIPS (test)"))
    bicubic = discover()["bicubic"]
    sr_path = tmp_path / "sr.h5"
    infer_file(bicubic, 8, {}, InferSettings.merged({}), degraded_x8, sr_path)
    settings = BootstrapSettings.merged({"resamples": 300, "seed": 2, "sections_per_block": 2})
    rows = ev.evaluate(
        bicubic, 8, "quick", sr_path, degraded_x8, None, intervals=settings, sidecar_path=tmp_path / "x8-bootstrap.npz"
    ).set_index("metric")
    assert sorted(rows.reset_index().columns) == sorted(COLUMNS) and (rows["tie"] == "").all()
    assert rows.loc["lpips", "value"] == pytest.approx(0.3)
    blocks, weights = fake.reshape(3, 2).mean(axis=1), np.full(3, 2.0)
    ci = bootstrap_mean(blocks, weights, **settings.kwargs())
    assert (rows.loc["lpips", "ci_low"], rows.loc["lpips", "ci_high"]) == (ci.low, ci.high)
    assert "FAKE LPIPS (test)" in rows.loc["lpips", "note"] and "3 blocks of 2 sections" in rows.loc["lpips", "note"]
    car = sidecar.read(tmp_path / "x8-bootstrap.npz")
    assert sorted(car.reps) == ["lpips", "psnr", "ssim"] and car.blocks == 3 and car.sections_per_block == 2
    assert car.reps["psnr"].estimate == pytest.approx(rows.loc["psnr", "value"])


def test_score_volume_intervals_are_of_the_whole_volume_score(tmp_path):
    from emsrbench.segment.scores import segmentation_scores
    from emsrbench.segment.stage import RowIdentity, score_volume
    from emsrbench.stats import interval, segmentation_replicates, slab_tables

    rng = np.random.default_rng(4)
    labels = np.repeat(np.repeat(rng.integers(1, 9, (6, 4, 4)), 8, axis=1), 8, axis=2).astype(np.uint64)
    seg = labels.copy()
    seg[rng.random(seg.shape) < 0.05] = 77
    seg[2, :16] += 100
    gt_path, seg_path = tmp_path / "test.h5", tmp_path / "seg.h5"
    write_cremi(gt_path, np.zeros(labels.shape, np.uint8), labels)
    with h5py.File(seg_path, "w") as f:
        f.attrs["stats"] = json.dumps({"thresholds": [0.5], "scoring": "mean", "device": "cpu", "flags": []})
        f["volumes/segmentations/0.5"] = seg
    settings = BootstrapSettings.merged({"resamples": 300, "seed": 1, "sections_per_slab": 2})
    rcan_row = RowIdentity(
        net="mala", method="rcan", display_name="RCAN", family="single-image", preset="quick", scale=8
    )
    rows, _ = score_volume(
        seg_path,
        gt_path,
        row=rcan_row,
        border_nm=4.0,
        intervals=settings,
        sidecar_path=tmp_path / "x8-bootstrap.npz",
    )
    rows = rows.set_index("metric")
    car = sidecar.read(tmp_path / "x8-bootstrap.npz")
    assert (car.kind, car.segmenter, car.blocks, car.sections_per_block) == ("segmentation", "mala", 3, 2)
    whole = segmentation_scores(labels, seg, resolution=(40, 4, 4), border_nm=4.0)
    reps = segmentation_replicates(
        slab_tables(labels, seg, sections_per_slab=2, resolution=(40, 4, 4), border_nm=4.0), resamples=300, seed=1
    )
    for m in ("voi_split", "voi_merge", "arand", "cremi_score"):
        assert rows.loc[m, "value"] == pytest.approx(whole[m]) == pytest.approx(car.reps[m].estimate, abs=1e-9)
        assert (rows.loc[m, "ci_low"], rows.loc[m, "ci_high"]) == interval(reps[m])
        assert rows.loc[m, "ci_low"] <= rows.loc[m, "value"] + 1e-12
        assert "whole-volume score over 3 z-slabs of 2 sections" in rows.loc[m, "note"]
    rows, _ = score_volume(
        seg_path,
        gt_path,
        row=rcan_row,
        sidecar_path=tmp_path / "off.npz",
    )
    assert rows["ci_low"].isna().all() and sidecar.read(tmp_path / "off.npz").reps == {}


def test_report_cells_show_the_tie_mark_and_legend():
    from emsrbench.report import tables
    from emsrbench.report.data import Cell, Row

    rows = []
    for name, value, tie in (("A", 22.0, "best"), ("B", 21.9, "tied"), ("C", 20.0, "worse")):
        row = Row(name.lower(), name, "single-image", "quick", 8)
        row.cells[("psnr", "")] = Cell(value, "", value - 0.5, value + 0.5, tie)
        rows.append(row)
    html = tables.leaderboard(rows, 8)
    cells = {r.label: html.split(f'data-v="{r.label}"', 1)[1].split("</tr>", 1)[0] for r in rows}
    assert 'class="tie"' in cells["B"] and 'class="tie"' not in cells["A"] + cells["C"]
    assert 'class="num best"' in cells["A"]
    assert 'class="legend"' in html and "paired" in html
    for r in rows:
        r.cells[("psnr", "")] = Cell(r.value("psnr"))
    assert 'class="legend"' not in tables.leaderboard(rows, 8)


def test_interval_block_sizes_in_the_config():
    import copy
    from pathlib import Path

    import yaml

    from emsrbench.config import check_config
    from emsrbench.plan import Plan

    repo = Path(__file__).resolve().parents[1]
    schema = repo / "config" / "schema" / "config.schema.yaml"
    cfg = yaml.safe_load((repo / "config" / "config.yaml").read_text())
    check_config(cfg, schema)
    spec = Plan(cfg, methods_dir=repo / "methods").intervals()
    settings = BootstrapSettings.merged(spec)
    assert (settings.sections_per_block, settings.sections_per_slab) == ("auto", "auto")
    fixed = copy.deepcopy(cfg)
    fixed["metrics"]["intervals"].update({"sections_per_block": 3, "sections_per_slab": 2})
    check_config(fixed, schema)
    assert BootstrapSettings.merged(Plan(fixed, methods_dir=repo / "methods").intervals()).sections_per_slab == 2
    for bad, message in (
        ({"sections_per_slabs": 2}, "sections_per_slabs"),
        ({"sections_per_block": 0}, "sections_per_block"),
        ({"sections_per_slab": "automatic"}, "sections_per_slab"),
    ):
        wrong = copy.deepcopy(cfg)
        wrong["metrics"]["intervals"].update(bad)
        with pytest.raises(EmsrError, match=message) as info:
            check_config(wrong, schema)
        assert "\n" not in str(info.value)
    for bad in (0, "automatic", True):
        with pytest.raises(EmsrError, match="sections_per_slab: block size must be a positive number of sections or"):
            BootstrapSettings.merged({"sections_per_slab": bad}, source="config metrics.intervals")
