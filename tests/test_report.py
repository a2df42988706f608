"""The HTML report on synthetic results: rows, failure records, tables, ablations, plots,
panels and the page itself (self-contained). The browser check is in test_report_browser.py."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from emsrbench import failures, steps
from emsrbench.errors import EmsrError
from emsrbench.io import write_cremi
from emsrbench.report import build, panels, plots, tables
from emsrbench.report.data import Planned, build_rows, load_tidy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_helpers import NET, external_references, make_results  # noqa: E402


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    plan, tidy_paths = make_results(root)
    page = build(plan, tidy_paths, root / plan.report_page(), root / plan.report_figures(), workdir=root)
    return SimpleNamespace(root=root, plan=plan, tidy=tidy_paths, page=page, html=page.read_text())


def rows_of(synthetic):
    records = failures.load(synthetic.root / synthetic.plan.results)
    planned = Planned(
        {"bicubic": ("Bicubic", "single-image", "quick"), "rcan": ("RCAN", "single-image", "quick")}, [8, 16], "quick"
    )
    return build_rows(load_tidy(synthetic.tidy), planned, records)


# -- failure records ------------------------------------------------------------------------


def fake_job(tmp_path, rule="infer", **wildcards):
    return SimpleNamespace(
        rule=rule,
        wildcards=SimpleNamespace(items=lambda: wildcards.items()),
        config={"results": str(tmp_path / "results")},
        log=[str(tmp_path / "job.log")],
    )


def test_a_failed_job_leaves_a_record_that_its_next_success_removes(tmp_path, monkeypatch):
    job = fake_job(tmp_path, method="rcan", scale="8")
    outcome = {"fail": True}

    def step(smk):
        if outcome["fail"]:
            raise EmsrError("rcan x8 section 0: model output has NaN")

    monkeypatch.setitem(steps.STEPS, "infer", step)
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # run() redirects stderr to the job's log
    with pytest.raises(SystemExit):
        steps.run(job, "infer")
    [rec] = failures.load(tmp_path / "results")
    assert rec.rule == "infer" and rec.wildcards == {"method": "rcan", "scale": "8"}
    assert rec.reason == "rcan x8 section 0: model output has NaN" and rec.log.endswith("job.log")
    assert rec.concerns("rcan", 8) and not rec.concerns("rcan", 16) and not rec.concerns("bicubic", 8)
    outcome["fail"] = False
    steps.run(job, "infer")
    assert failures.load(tmp_path / "results") == []


def test_unexpected_exceptions_are_recorded_in_one_line(tmp_path, monkeypatch):
    def step(smk):
        raise ValueError("bad\nthing " + "x" * 1000)

    monkeypatch.setitem(steps.STEPS, "degrade", step)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    with pytest.raises(SystemExit):
        steps.run(fake_job(tmp_path, "degrade", scale="16", split="test", index="0"), "degrade")
    [rec] = failures.load(tmp_path / "results")
    assert rec.reason.startswith("ValueError: bad thing") and "\n" not in rec.reason
    assert len(rec.reason) <= failures.MAX_REASON
    # A degrade failure explains every method at its scale; a phantom failure is reported on its own.
    assert rec.concerns("bicubic", 16) and rec.concerns("rcan", "16") and not rec.concerns("rcan", 8)
    assert not failures.Failure("phantom", {"sample": "test"}, "x").concerns("rcan", 8)


def test_a_broken_record_is_a_one_line_error(tmp_path):
    bad = tmp_path / "results" / "failed" / "x.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(EmsrError, match=r"x\.json: not a readable failure record"):
        failures.load(tmp_path / "results")


# -- rows and tables -------------------------------------------------------------------------


def test_tidy_tables_without_the_optional_columns_are_read(tmp_path):
    p = tmp_path / "m.csv"
    pd.DataFrame(
        [
            {
                "method": "a",
                "display_name": "A",
                "family": "single-image",
                "preset": "quick",
                "scale": 8,
                "metric": "psnr",
                "value": 20.0,
                "note": "",
            }
        ]
    ).to_csv(p, index=False)
    tidy = load_tidy([p])
    assert tidy.loc[0, "segmenter"] == "" and tidy.loc[0, "variant"] == "" and np.isnan(tidy.loc[0, "ci_low"])
    pd.DataFrame([{"method": "a", "value": 1}]).to_csv(p, index=False)
    with pytest.raises(EmsrError, match=r"m\.csv: not a metrics table"):
        load_tidy([p])


def test_rows_cover_the_plan_with_failed_and_not_run_rows(synthetic):
    rows = {(r.method, r.variant, r.scale): r for r in rows_of(synthetic)}
    assert rows[("rcan", "", 16)].status == "failed"
    assert "loss is NaN" in rows[("rcan", "", 16)].failures[0].reason
    assert rows[("bicubic", "", 16)].status == "ok" and rows[("rcan", "", 8)].status == "ok"
    assert rows[("gpemsr", "no_pod", 8)].variant == "no_pod"
    assert rows[("rcan", "", 8)].value("voi_split", NET) == pytest.approx(1.5)
    planned = Planned({"edvr": ("EDVR", "multi-slice", "quick")}, [8], "quick")
    [lone] = [r for r in build_rows(load_tidy([]), planned, []) if r.method == "edvr"]
    assert lone.status == "not run"


def cells(table_html: str, row_name: str) -> list[str]:
    row = re.search(rf"<tr[^>]*><td data-v=\"{row_name}\">.*?</tr>", table_html, re.S).group(0)
    return re.findall(r"<td([^>]*)>(.*?)</td>", row, re.S)


def test_leaderboard_marks_the_best_per_column_and_failed_rows(synthetic):
    table = tables.leaderboard(rows_of(synthetic), 8)
    heads = re.findall(r'<th class="num" title="(\w+):', table)
    assert (
        heads[:4] == ["psnr", "psnr_volume", "ssim", "lpips"] and "voi_split" in heads and heads[-1] == "infer_s_per_mp"
    )
    assert f"Segmentation ({NET})" in table
    rcan = dict(zip(heads, cells(table, "RCAN")[3:]))
    bicubic = dict(zip(heads, cells(table, "Bicubic")[3:]))
    gpemsr = dict(zip(heads, cells(table, "GPEMSR")[3:]))
    assert "best" in gpemsr["psnr"][0] and "best" not in rcan["psnr"][0]  # higher is better
    assert "best" in gpemsr["lpips"][0] and "best" not in rcan["lpips"][0]  # lower is better
    # VOI split alone is not ranked (merging everything scores zero split)
    assert "best" not in rcan["voi_split"][0] and "best" not in bicubic["voi_split"][0]
    # HR's own segmentation is better still, but it is the reference, not a competitor.
    assert '<tr data-status="ok" class="reference"><td data-v="HR (upper bound)">' in table
    hr = dict(zip(heads, cells(table, r"HR \(upper bound\)")[3:]))
    assert (
        float(re.search(r'data-v="([^"]+)"', hr["voi_split"][0]).group(1)) == 0.4 and "best" not in hr["voi_split"][0]
    )
    assert "best" not in rcan["parameters"][0] and "best" not in bicubic["parameters"][0]  # cost is not ranked
    # Hallucination group. bicubic's segmentation (report_helpers.hallucinated), per section: a
    # 32 px membrane erased, 29 px of it farther than 8 nm (2 px) from a segmentation boundary
    # (116 nm), one invented, 27 px farther than 8 nm from the cell's own membranes (108 nm);
    # ground-truth boundary 2 x 3 lines x 128 px x 4 nm = 3072 nm; labelled area 128 x 128 x 16 nm^2.
    assert f"Hallucination ({NET})" in table and "Boundary F1 &uarr;" in table and "Orphan fraction &darr;" in table
    assert "Boundary precision &uarr;" not in table  # won alone by merging everything: shown, not ranked

    def value(cell):
        return float(re.search(r'data-v="([^"]+)"', cell[0]).group(1))

    assert value(bicubic["boundary_recall"]) == pytest.approx(1 - 116 / 3072)
    assert value(bicubic["boundary_precision"]) == pytest.approx(1 - 108 / 3072)
    assert value(bicubic["invented_um_per_um2"]) == pytest.approx(4 * 0.108 / (4 * 128 * 128 * 16 / 1e6))
    p, r = 1 - 108 / 3072, 1 - 116 / 3072
    assert value(bicubic["boundary_f1"]) == pytest.approx(2 * p * r / (p + r))
    assert "best" in bicubic["boundary_f1"][0] and "best" not in hr["boundary_f1"][0]
    assert "best" not in bicubic["boundary_precision"][0]
    assert "n/a" in hr["orphan_fraction"][1] and "not applicable" in hr["orphan_fraction"][0]  # not a fake 0
    assert "n/a" in rcan["orphan_fraction"][1]  # no segmentation of rcan in this tree
    assert '<span class="ci">[21.10, 21.70]</span>' in rcan["psnr"][1]  # confidence interval under the value
    assert "n/a" in gpemsr["ssim"][1]
    table16 = tables.leaderboard(rows_of(synthetic), 16)
    assert re.search(
        r'<tr class="failed" data-status="failed"><td data-v="RCAN">RCAN</td>.*failed: train '
        r"\(method=rcan, scale=16\): emsrbench error in train: rcan x16 loss is NaN",
        table16,
    )


def test_ablation_tables_follow_the_supplement(synthetic):
    out = dict(tables.ablations(rows_of(synthetic)))
    t2 = out["GPEMSR 8x: Attention in the stage-I encoder and decoder (as supplement Table 2)"]
    marks = re.findall(r"<tr><td>(.*?)</td><td>(.*?)</td>", t2)
    assert marks == [("w/o Att.", "w Att."), ("w Att.", "w/o Att."), ("w Att.", "w Att.")]  # Table 2's row order
    assert "PSNR" in t2 and "LPIPS" in t2 and "SSIM" not in t2
    t5 = out["GPEMSR 8x: The mask in the MPF module (as supplement Table 5)"]
    assert re.findall(r"<tr><td>(.*?)</td>", t5) == ["w/o mask", "w mask"] and f"VOI split ({NET})" in t5
    assert re.search(r'<tr><td>w mask</td><td class="num best" data-v="23.0"', t5)
    modules = out["GPEMSR 8x: Stage-III modules (as supplement Fig. 6)"]
    assert modules.count("<tr><td>") == 2  # no_pod and the full model; the other modules were not ablated
    assert "no_frobnicator" in out["GPEMSR 8x: other variants"]


# -- plots and panels -------------------------------------------------------------------------


def test_plots_are_drawn_or_skipped_with_a_reason(synthetic):
    rows = rows_of(synthetic)
    drawn, skipped = plots.draw(rows)
    assert [p.name for p in drawn] == ["metrics", "psnr_vs_voi", "cost_vs_quality"] and skipped == []
    for p in drawn:
        assert p.png.startswith(b"\x89PNG")
    no_seg = [r for r in rows]
    for r in no_seg:
        r.cells = {k: v for k, v in r.cells.items() if not k[1]}
    drawn, skipped = plots.draw(no_seg)
    assert [p.name for p in drawn] == ["metrics", "cost_vs_quality"]
    assert skipped == ["PSNR versus VOI sum: no segmentation metrics (VOI split and merge) yet"]


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 9))
        cost = rng.integers(0, 4, n).astype(float)  # small ranges: many ties on one axis
        quality = rng.integers(0, 4, n).astype(float)
        expected = [
            not any(
                cost[j] <= cost[i] and quality[j] >= quality[i] and (cost[j] < cost[i] or quality[j] > quality[i])
                for j in range(n)
            )
            for i in range(n)
        ]
        assert plots.pareto_front(cost, quality).tolist() == expected
    # equal points both stay; a cheaper-and-better point removes the rest
    assert plots.pareto_front([1, 1, 2], [5, 5, 4]).tolist() == [True, True, False]
    assert plots.pareto_front([0, 1, 2], [1, 3, 2]).tolist() == [True, True, False]


def test_cost_plot_names_the_pareto_front(synthetic):
    rows = rows_of(synthetic)
    (cost,) = [p for p in plots.draw(rows)[0] if p.name == "cost_vs_quality"]
    # bicubic: fewer parameters and faster; RCAN: better PSNR -> both on the 8x front; 16x has bicubic only
    assert "Params: 8x: Bicubic, RCAN; 16x: Bicubic" in cost.caption
    assert "Infer s/MP: 8x: Bicubic, RCAN; 16x: Bicubic" in cost.caption


def test_regions_are_where_the_methods_differ_most(tmp_path):
    hr = np.full((3, 96, 96), 128, np.uint8)
    a, b = hr.copy(), hr.copy()
    b[2, 48:80, 16:48] = 0
    paths = []
    for name, vol in (("hr", hr), ("a", a), ("b", b)):
        write_cremi(tmp_path / f"{name}.h5", vol)
        paths.append(str(tmp_path / f"{name}.h5"))
    [best] = panels.choose_regions(paths[1:], paths[0], 32, 1, 8)
    assert (best.z, best.y, best.x) == (2, 48, 16)
    two = panels.choose_regions(paths[1:], paths[0], 32, 2, 8)
    assert len(two) == 2 and (abs(two[0].y - two[1].y) >= 32 or abs(two[0].x - two[1].x) >= 32)
    # One method: the crop where it is furthest from HR.
    [alone] = panels.choose_regions(paths[2:], paths[0], 32, 1, 8)
    assert (alone.z, alone.y, alone.x) == (2, 48, 16)


def test_configured_regions_snap_to_the_lr_grid_and_must_fit():
    [r] = panels.config_regions([{"z": 1, "y": 37, "x": 20}], (4, 128, 128), 64, 16)
    assert (r.z, r.y, r.x) == (1, 32, 16)
    with pytest.raises(EmsrError, match=r"report\.panels\.regions\[0\]: .* does not fit the 8x test volume"):
        panels.config_regions([{"z": 0, "y": 100, "x": 0}], (4, 128, 128), 64, 8)


def test_panels_overlay_segmentation_when_it_exists(synthetic):
    plan, root = synthetic.plan, synthetic.root
    methods = [(lbl, (m, str(root / plan.sr_file(m, 8)))) for lbl, m in (("RCAN", "rcan"), ("Bicubic", "bicubic"))]
    test = str(root / plan.test_file(8))
    with_seg, net = panels.panels(8, test, methods, {"crop": 64, "auto_regions": 1}, root / plan.results / "segment")
    without, none = panels.panels(8, test, methods, {"crop": 64, "auto_regions": 1}, root / "nowhere")
    assert net == NET and none is None
    assert "segmentation by toynet; no segmentation for RCAN" in with_seg[0].caption
    assert "No segmentation available: images only." in without[0].caption
    # The region where rcan inverted its quadrant, and a second row of tiles with the overlay.
    assert (with_seg[0].region.y, with_seg[0].region.x) == (64, 64)
    import io

    from PIL import Image

    h_seg = Image.open(io.BytesIO(with_seg[0].png)).size[1]
    h_img = Image.open(io.BytesIO(without[0].png)).size[1]
    assert h_seg > 1.7 * h_img
    _, missing = panels.panels(
        8, test, methods, {"crop": 64, "auto_regions": 1, "segmenter": "mala"}, root / plan.results / "segment"
    )
    assert missing is None


def _colour_pixels(png: bytes, rgb) -> int:
    import io

    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float)
    return int((np.abs(a - np.array(rgb) * 255).max(axis=2) < 6).sum())


def test_hallucination_panels_paint_invented_and_erased_boundaries(synthetic):
    plan, root = synthetic.plan, synthetic.root
    methods = [(lbl, (m, str(root / plan.sr_file(m, 8)))) for lbl, m in (("RCAN", "rcan"), ("Bicubic", "bicubic"))]
    test, seg_dir = str(root / plan.test_file(8)), root / plan.results / "segment"
    whole = {"crop": 128, "regions": [{"z": 1, "y": 0, "x": 0}]}
    made, net = panels.panels(8, test, methods, whole, seg_dir, tolerance_nm=8.0)
    assert net == NET and [p.kind for p in made] == ["images", "hallucination"]
    assert [p.name for p in made] == ["panel_x8_1", "hallucination_x8_1"]
    hall = made[1]
    assert hall.region == made[0].region and "at a tolerance of 8 nm" in hall.caption
    assert "No segmentation for RCAN." in hall.caption
    # report_helpers.hallucinated: bicubic's segmentation has one erased and one invented membrane,
    # both 16 px = 64 nm from any other boundary: at 64 nm every boundary is matched, and only
    # the legend's patches (the same in both pictures) have the two colours.
    [_, loose] = panels.panels(8, test, methods, whole, seg_dir, tolerance_nm=64.0)[0]
    for rgb in (panels.INVENTED_RGB, panels.ERASED_RGB):
        assert _colour_pixels(hall.png, rgb) > _colour_pixels(loose.png, rgb) + 10 > 10
    # no hallucination panel without a tolerance (disabled) or without segmentations
    assert [p.kind for p in panels.panels(8, test, methods, whole, seg_dir)[0]] == ["images"]
    assert [p.kind for p in panels.panels(8, test, methods, whole, root / "nowhere", tolerance_nm=8.0)[0]] == ["images"]


def test_a_crop_scores_what_the_whole_section_scores(synthetic):
    """The panel computes the error maps on the crop plus a margin: equal to the section's maps."""
    from emsrbench.io import LABELS_KEY, read_dataset
    from emsrbench.segment.hallucination import boundary_error_lengths

    plan, root = synthetic.plan, synthetic.root
    gt, res = read_dataset(root / plan.test_file(8), LABELS_KEY)
    seg, _ = read_dataset(root / plan.segment_file(NET, "bicubic", 8), "volumes/segmentation")
    inv, era = boundary_error_lengths(gt[1], seg[1], res, 8.0)
    y, x, s = 64, 64, 32  # a crop whose edge (x = 64) lies on a membrane
    m = 3
    inv_c, era_c = boundary_error_lengths(
        gt[1, y - m : y + s + m, x - m : x + s + m], seg[1, y - m : y + s + m, x - m : x + s + m], res, 8.0
    )
    np.testing.assert_array_equal(inv_c[m:-m, m:-m], inv[y : y + s, x : x + s])
    np.testing.assert_array_equal(era_c[m:-m, m:-m], era[y : y + s, x : x + s])
    # the invented membrane at x = 79|80 crosses the crop; its ends, within 2 px of the cell's
    # membranes at y = 63|64 and 95|96, are matched: 32 - 2 - 3 px of 4 nm
    assert inv[y : y + s, x : x + s].sum() == 27 * 4.0


# -- the page ---------------------------------------------------------------------------------


def test_the_page_is_self_contained_and_complete(synthetic):
    text = synthetic.html
    assert external_references(text) == []
    assert not re.search(r"https?://", text.replace("http://www.w3.org", ""))  # no URL at all
    for scale in (8, 16):
        assert f'id="leaderboard-x{scale}"' in text
    assert text.count('<img class="plot"') == 3 and text.count('<img class="panel"') == 4  # 2 regions x 2 scales
    assert text.count('<img class="hallucination"') == 4  # one after each panel
    assert "at a tolerance of 8 nm" in text  # the hallucination panels' captions state the tolerance
    assert (
        "<dt>Orphan fraction</dt><dd>share of the segmentation&#x27;s 3D segments with no segment of IoU &gt;= 0.5"
        in text
    )
    assert "no ground-truth boundary within 8 nm (structure drawn that is not there)" in text
    assert "Failed jobs" in text and "phantom (sample=extra)" in text and "disk full" in text
    assert "Ablations" in text and "supplement Table 2" in text
    assert "git commit" in text and "seaborn" in text and "cpu:test x1 threads" in text
    figures = sorted(p.name for p in (synthetic.root / synthetic.plan.report_figures()).iterdir())
    assert figures == [
        "cost_vs_quality.png",
        "hallucination_x16_1.png",
        "hallucination_x16_2.png",
        "hallucination_x8_1.png",
        "hallucination_x8_2.png",
        "metrics.png",
        "panel_x16_1.png",
        "panel_x16_2.png",
        "panel_x8_1.png",
        "panel_x8_2.png",
        "psnr_vs_voi.png",
    ]
    csv = re.search(r'href="data:text/csv;base64,([^"]+)"', text).group(1)
    import base64
    import io

    board = pd.read_csv(io.StringIO(base64.b64decode(csv).decode()))
    failed = board[(board["method"] == "rcan") & (board["scale"] == 16)].iloc[0]
    assert failed["status"] == "failed" and "loss is NaN" in failed["reason"]


def test_a_run_with_nothing_yet_still_builds_a_page(tmp_path):
    import yaml
    from report_helpers import REPO

    from emsrbench.plan import Plan

    plan = Plan(yaml.safe_load((REPO / "config" / "test.yaml").read_text()), methods_dir=REPO / "methods")
    page = build(plan, [], tmp_path / "index.html", tmp_path / "figs", workdir=tmp_path).read_text()
    assert page.count('data-status="not run"') == 4  # bicubic and rcan at 8x and 16x
    assert "Not drawn: no metrics yet" in page and "no panels, the test file" in page


def test_provenance_names_the_device_and_precision_of_each_inference(tmp_path):
    from emsrbench.report import provenance

    new, old = tmp_path / "new.h5", tmp_path / "old.h5"
    write_cremi(new, np.zeros((1, 16, 16), np.uint8), attrs={"stats": '{"device": "cuda:H100", "precision": "bf16"}'})
    write_cremi(old, np.zeros((1, 16, 16), np.uint8), attrs={"stats": '{"device": "cpu:Xeon x2 threads"}'})
    assert provenance.devices({("rcan", 8): new, ("bicubic", 8): old}) == {
        "bicubic x8": "cpu:Xeon x2 threads, precision not recorded",
        "rcan x8": "cuda:H100, bf16",
    }
