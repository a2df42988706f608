"""Published reference rows (issue #13): supplement Table 1 shipped as data, shown beside a run's
rows in the leaderboard and report with ours - published, only where the test data is the
published one; never bold, never in ties or the tidy table; bad names are one-line errors."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml
from report_helpers import seg_rows

from emsrbench.config import check_config
from emsrbench.errors import EmsrError
from emsrbench.evaluate import COLUMNS
from emsrbench.leaderboard import DIFFERENCE_SUFFIX, PUBLISHED_PRESET, markdown, write
from emsrbench.methods import discover
from emsrbench.plan import Plan
from emsrbench.published import Comparison, load, names, read
from emsrbench.report.data import Row
from emsrbench.report.tables import published as published_table

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"
TABLE1 = "gpemsr-supp-table1"
# Supplement Table 1 as printed (seed-supplement.txt, section 3): row -> 8x Superhuman, 8x MALA,
# 16x Superhuman, 16x MALA.
PRINTED = {
    "bicubic": (5.6101, 2.0792, 5.8078, 3.0269),
    "rcan": (3.1635, 1.2464, 4.6630, 2.2929),
    "swinir": (3.1216, 1.2376, 4.5242, 2.2801),
    "bsrn": (3.3587, 1.2491, 4.8932, 2.5038),
    "realesrgan": (3.3346, 1.2442, 3.1484, 2.6901),
    "edvr": (2.9574, 1.2235, 3.7313, 1.8214),
    "basicvsr": (3.2299, 1.2508, 4.0564, 1.9635),
    "gpemsr": (2.7177, 1.1993, 2.4952, 1.7396),
}
COLUMN_ORDER = [(8, "superhuman"), (8, "mala"), (16, "superhuman"), (16, "mala")]


def config(name: str) -> dict:
    return yaml.safe_load((REPO / "config" / name).read_text())


def test_the_shipped_table_is_supplement_table1_with_its_sources():
    ref = load(TABLE1, discover(REPO / "methods"))
    assert names() == [TABLE1]
    assert ref.metric == "voi_split" and ref.label == "published (supp. Table 1)"
    assert ref.methods == list(PRINTED) and ref.columns == COLUMN_ORDER
    for v in ref.values:
        assert v.value == PRINTED[v.method][COLUMN_ORDER.index((v.scale, v.segmenter))]
    ours = next(v for v in ref.values if (v.method, v.scale, v.segmenter) == ("gpemsr", 16, "mala"))
    assert ref.source(ours).endswith(
        "Table 1: Quantitative comparison of VOI_split in EM image segmentation on "
        "CREMI C for 16x and 8x EMSR, row 'Ours', column '16× MALA'"
    )
    assert "supplementary material" in ref.paper


def image_rows(method: str, scale: int, psnr: float) -> list[dict]:
    base = {"method": method, "display_name": method.upper(), "family": "single-image", "preset": "paper"}
    return [{**base, "scale": scale, "metric": "psnr", "value": psnr, "note": ""}]


@pytest.fixture
def tidy() -> pd.DataFrame:
    """bicubic and gpemsr at 8x and 16x, both segmenters, HR, and one gpemsr ablation variant."""
    rows = []
    for s in (8, 16):
        rows += image_rows("bicubic", s, 20.0) + image_rows("gpemsr", s, 22.0)
        for g in ("superhuman", "mala"):
            rows += seg_rows("hr", s, g, 0.2, preset="paper") + seg_rows("bicubic", s, g, 6.0, preset="paper")
            rows += seg_rows("gpemsr", s, g, 2.5, preset="paper")
    rows += seg_rows("gpemsr", 8, "superhuman", 9.0, preset="paper", variant="no_pod")
    df = pd.DataFrame(rows, columns=COLUMNS)
    text = ["variant", "segmenter", "tie"]
    df[text] = df[text].astype(object).fillna("")
    return df


def comparable() -> Comparison:
    return Comparison(load(TABLE1), "")


def published_lines(md: str) -> list[str]:
    return [line for line in md.splitlines() if "published (supp. Table 1)" in line and line.startswith("|")]


def test_published_rows_follow_ours_with_the_difference_per_cell(tidy):
    md = markdown(tidy, comparable())
    table1 = md.split("## Segmentation: VOI split (Table 1 layout)")[1].split("###")[0]
    lines = [line for line in table1.splitlines() if line.startswith("| ")]
    names_in_order = [line.split(" | ")[0][2:] for line in lines[1:]]
    assert names_in_order[:5] == [
        "HR (upper bound)",
        "BICUBIC",
        "BICUBIC — published (supp. Table 1)",
        "GPEMSR",
        "GPEMSR — published (supp. Table 1)",
    ]
    # bicubic 6.0 vs 5.6101 at 8x Superhuman; gpemsr 2.5 vs 1.7396 at 16x MALA
    assert lines[3].split(" | ")[1] == "5.6101 (Δ +0.3899)"
    assert lines[5].split(" | ")[4].rstrip(" |") == "1.7396 (Δ +0.7604)"
    # the variant row (GPEMSR [no_pod], 9.0) is not the one compared
    assert "+6." not in md
    # methods this run did not run: published values, no difference, after every row of ours
    rcan = next(line for line in lines if line.startswith("| RCAN [11] — published"))
    assert rcan == "| RCAN [11] — published (supp. Table 1) | 3.1635 | 1.2464 | 4.6630 | 2.2929 |"
    assert lines.index(rcan) > names_in_order.index("GPEMSR [no_pod]") + 1
    assert all("**" not in line for line in published_lines(md))
    assert "Δ = ours - published" in md and "not computed here" not in md


def test_without_the_key_nothing_changes(tidy, tmp_path):
    assert markdown(tidy, None) == markdown(tidy)
    parts = tmp_path / "rows.csv"
    tidy.to_csv(parts, index=False)
    plain = [tmp_path / f"plain.{x}" for x in ("csv", "md", "tidy.csv")]
    off = [tmp_path / f"off.{x}" for x in ("csv", "md", "tidy.csv")]
    write([parts], *plain)
    write([parts], *off, published={})
    assert [p.read_bytes() for p in plain] == [p.read_bytes() for p in off]
    assert "published" not in plain[1].read_text() and "reference" not in pd.read_csv(plain[0]).columns


def test_write_keeps_published_rows_out_of_the_tidy_table_and_in_the_csv(tidy, tmp_path):
    parts = tmp_path / "rows.csv"
    tidy.to_csv(parts, index=False)
    csv, md, tidy_out = tmp_path / "lb.csv", tmp_path / "lb.md", tmp_path / "metrics.csv"
    write([parts], csv, md, tidy_out, published={"name": TABLE1, "incomparable": ""})
    assert len(pd.read_csv(tidy_out)) == len(tidy)  # no published value among the tidy rows
    wide = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    pub = wide[wide["preset"] == PUBLISHED_PRESET].set_index("method")
    assert list(pub.index) == list(PRINTED)
    assert pub.loc["gpemsr", "voi_split@x8/mala"] == 1.1993
    assert math.isclose(pub.loc["gpemsr", "voi_split@x8/mala" + DIFFERENCE_SUFFIX], 2.5 - 1.1993)
    assert math.isnan(pub.loc["rcan", "voi_split@x8/mala" + DIFFERENCE_SUFFIX])  # not run here
    assert pub.loc["rcan", "source"].endswith("row 'RCAN [11]'")
    assert (wide.loc[wide["preset"] != PUBLISHED_PRESET, "reference"].isna()).all()
    assert "GPEMSR — published (supp. Table 1)" in md.read_text()


def test_incomparable_data_show_the_values_without_differences(tidy):
    md = markdown(tidy, Comparison(load(TABLE1), "data.source is 'phantom', not 'cremi'"))
    assert "| BICUBIC — published (supp. Table 1) | 5.6101 | 2.0792 | 5.8078 | 3.0269 |" in md
    assert "Δ +" not in md and "Δ -" not in md
    assert "not computed here: this run's test data is not the published one (data.source is 'phantom'" in md


def test_columns_this_run_lacks_are_named(tidy):
    md = markdown(tidy[tidy["scale"] == 8], comparable())
    line = next(line for line in published_lines(md) if line.startswith("| BICUBIC"))
    assert line == "| BICUBIC — published (supp. Table 1) | 5.6101 (Δ +0.3899) | 2.0792 (Δ +3.9208) |"
    assert "Published columns this run has no scores for: 16× Superhuman, 16× MALA." in md


def test_the_study_configs_are_compared_and_others_say_why_not():
    for name in ("paper.yaml", "paper-released.yaml"):
        cfg = config(name)
        if name == "paper.yaml":  # paper-released's check wants the released segmenter files in place
            check_config(cfg, SCHEMA)
        plan = Plan(cfg, methods_dir=REPO / "methods")
        assert plan.published_rows() == {"name": TABLE1, "incomparable": ""}, name
    default = config("config.yaml")
    assert Plan(default, methods_dir=REPO / "methods").published_rows() == {}
    reasons = Plan({**default, "reference_rows": TABLE1}, methods_dir=REPO / "methods").published_rows()
    assert reasons["incomparable"].startswith("data.source is 'phantom', not 'cremi'")
    shifted = copy.deepcopy(config("paper.yaml"))
    shifted["data"]["splits"]["test"] = [{"sample": "C", "z": [-40, None]}]
    shifted["degradation"] = {"model": "gaussian_area", "noise": "none"}
    why = Plan(shifted, methods_dir=REPO / "methods").published_rows()["incomparable"]
    assert "the test sections are [-40, None], not [-50, None]" in why and "gaussian_area" in why
    same = copy.deepcopy(config("paper.yaml"))
    same["data"]["splits"]["test"] = [{"sample": "C", "z": [75, 125]}]  # the last 50 of 125, written otherwise
    assert Plan(same, methods_dir=REPO / "methods").published_rows()["incomparable"] == ""


def one_line_error(fn) -> str:
    with pytest.raises(EmsrError) as info:
        fn()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_bad_names_are_one_line_errors(tmp_path):
    cfg = {**config("config.yaml"), "reference_rows": "gpemsr-table9"}
    check_config(cfg, SCHEMA)  # a well-formed name; whether it is shipped is the plan's check
    assert one_line_error(lambda: Plan(cfg, methods_dir=REPO / "methods")) == (
        "config: reference_rows: unknown reference 'gpemsr-table9' (shipped: gpemsr-supp-table1)"
    )
    assert "reference_rows" in one_line_error(lambda: check_config({**cfg, "reference_rows": "Table 1"}, SCHEMA))
    doc = yaml.safe_load((REPO / "src" / "emsrbench" / "published" / f"{TABLE1}.yaml").read_text())
    doc["rows"][1]["method"] = "rcan2"
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert one_line_error(lambda: read(path, discover(REPO / "methods"))).startswith(
        f"{path}: rows[1].method: 'rcan2' (row 'RCAN [11]') is not a method (['basicvsr', 'bicubic',"
    )
    doc["rows"][1]["method"] = "rcan"
    doc["rows"][1]["values"] = [1.0, 2.0]
    path.write_text(yaml.safe_dump(doc))
    assert one_line_error(lambda: read(path)) == f"{path}: rows[1].values: 2 values for 4 columns (row 'RCAN [11]')"
    del doc["source"]
    path.write_text(yaml.safe_dump(doc))
    assert one_line_error(lambda: read(path)) == f"{path}: (top level): 'source' is a required property"


def test_a_run_scoring_none_of_the_published_columns_is_refused():
    cfg = {**config("paper.yaml"), "segmentation": {"enabled": False}}
    assert one_line_error(lambda: Plan(cfg, methods_dir=REPO / "methods")).startswith(
        "config: reference_rows: 'gpemsr-supp-table1' publishes voi_split at 8x superhuman, 8x mala, 16x "
        "superhuman, 16x mala; this run scores none of them"
    )
    # the way out the message names: the published rows switched off
    assert Plan({**cfg, "reference_rows": None}, methods_dir=REPO / "methods").published_rows() == {}


def report_row(method: str, scale: int, split: float, variant: str = "") -> Row:
    from emsrbench.report.data import Cell

    row = Row(method, method.upper(), "single-image", "paper", scale, variant)
    row.cells = {("voi_split", g): Cell(split) for g in ("superhuman", "mala")}
    row.cells[("psnr", "")] = Cell(22.0)
    return row


def test_the_report_shows_published_rows_beside_ours_never_bold():
    rows = [report_row("gpemsr", s, 2.5) for s in (8, 16)] + [report_row("bicubic", s, 6.0) for s in (8, 16)]
    rows.append(report_row("gpemsr", 8, 9.0, variant="no_pod"))
    html = published_table(rows, comparable())
    body = html.split("<tbody>")[1]
    trs = body.split("</tr>")
    labels = [tr.split("<td>")[1].split("</td>")[0] for tr in trs if "<td>" in tr]
    assert labels[:4] == [
        "BICUBIC",
        "BICUBIC — published (supp. Table 1)",
        "GPEMSR",
        "GPEMSR — published (supp. Table 1)",
    ]
    assert "RCAN [11] — published (supp. Table 1)" in labels
    gpemsr_pub = trs[3]
    assert 'class="published"' in gpemsr_pub and "2.7177 (Δ -0.2177)" in gpemsr_pub
    assert "row &#x27;Ours&#x27;, column &#x27;8× Superhuman&#x27;" in gpemsr_pub  # each cell's source
    assert "best" not in html and "9.0" not in html


@pytest.mark.slow
def test_the_readme_command_plans_table1_from_the_released_networks_alone(tmp_path):
    """README / docs/reproduce.md: config/paper-released.yaml with `methods=[bicubic,gpemsr]`
    trains nothing (no SR method, no segmenter) and its leaderboard carries the published rows."""
    from test_released_workflow import PAPER_RELEASED, rule_counts, snakemake, stand_ins

    stand_ins(tmp_path)
    overlay = tmp_path / "allow-missing.yaml"
    overlay.write_text("pretrained: {allow_missing: true}\n")
    run = snakemake(
        tmp_path, [PAPER_RELEASED, overlay], "-n", "--quiet", "rules", "--config", "methods=[bicubic,gpemsr]"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    counts = rule_counts(run)
    assert not {"train", "train_segmenter", "gpemsr_stage3"} & set(counts), counts
    assert counts["gpemsr_released"] == 2 and counts["infer"] == 4
    assert counts["segment"] == 2 * 3 * 2  # Superhuman and MALA x (HR, bicubic, GPEMSR) x 2 scales
    assert counts["leaderboard"] == 1


def test_the_report_page_has_the_published_table_only_with_the_key(tmp_path):
    """The whole page (emsrbench.report.build) of a phantom run: the published table with its
    heading and the reason why no differences are computed (phantom data), absent without the key."""
    import sys

    sys.path.insert(0, str(REPO / "tests"))
    from report_helpers import make_results

    from emsrbench.report import build

    plan, tidy_paths = make_results(tmp_path)
    with_rows = Plan({**plan.config, "reference_rows": TABLE1}, methods_dir=REPO / "methods")
    page = build(with_rows, tidy_paths, tmp_path / "with.html", tmp_path / "figs-with", workdir=tmp_path)
    html = page.read_text()
    assert "VOI split (Table 1 layout) beside the published (supp. Table 1) rows" in html
    assert 'class="published"' in html and "Bicubic — published (supp. Table 1)" in html
    assert "not computed here: this run&#x27;s test data is not the published one (data.source is" in html
    assert "Δ" not in html.split('id="published-gpemsr-supp-table1"')[1].split("</table>")[0]
    plain = build(plan, tidy_paths, tmp_path / "plain.html", tmp_path / "figs-plain", workdir=tmp_path).read_text()
    assert "published (supp. Table 1)" not in plain and 'class="published"' not in plain
