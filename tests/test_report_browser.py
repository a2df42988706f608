"""The report as a person sees it: rendered in headless Chromium on a closed network.

Skipped without Chromium, unless EMSR_REQUIRE_CHROMIUM=1 (CI), which makes that a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from emsrbench.report import build

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report_helpers import chromium, external_references, make_results, render  # noqa: E402


def check_rendered(page: Path, out: Path, scales=(8, 16)) -> dict:
    """Assertions shared with the pipeline test: tables, images decoded and non-blank, no requests."""
    text = page.read_text(encoding="utf-8")
    assert external_references(text) == []
    n_plots, n_panels = text.count('<img class="plot"'), text.count('<img class="panel"')
    n_hallucination = text.count('<img class="hallucination"')
    assert n_plots >= 1 and n_panels >= len(scales)
    seen = render(page, out)
    ids = {t["id"] for t in seen["tables"]}
    assert {f"leaderboard-x{s}" for s in scales} <= ids
    assert all(t["rows"] > 0 for t in seen["tables"] if t["id"].startswith("leaderboard"))
    kinds = [img["cls"] for img in seen["images"]]
    assert kinds.count("plot") == n_plots and kinds.count("panel") == n_panels
    assert kinds.count("hallucination") == n_hallucination
    for img in seen["images"]:
        assert img["complete"] and img["w"] > 100 and img["h"] > 100, img
        assert img["std"] > 5, f"{img['alt']} looks blank (pixel std {img['std']:.1f})"
    assert seen["resources"] == [], f"the page fetched {seen['resources']}"
    shot = np.asarray(Image.open(seen["screenshot"]).convert("L"), dtype=float)
    assert shot.shape[0] > 1000 and shot.std() > 20, "the screenshot is blank"
    return seen


def test_the_report_renders_in_chromium(tmp_path):
    chromium()
    plan, tidy = make_results(tmp_path)
    page = build(plan, tidy, tmp_path / plan.report_page(), tmp_path / plan.report_figures(), workdir=tmp_path)
    seen = check_rendered(page, tmp_path / "browser")
    # each image panel is followed by the hallucination panel of the same crop
    assert [img["cls"] for img in seen["images"]] == ["plot"] * 3 + ["panel", "hallucination"] * 4
    assert any(t["cls"] == "ablation" for t in seen["tables"])
    # The sorter, clicked twice on PSNR at 8x: ascending puts Bicubic first, descending GPEMSR.
    assert seen["sort"] == ["Bicubic", "GPEMSR"]


def test_missing_browser_is_reported_clearly(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setenv("EMSR_REQUIRE_CHROMIUM", "1")
    with pytest.raises(pytest.fail.Exception, match="chromium is required"):
        chromium()
    monkeypatch.delenv("EMSR_REQUIRE_CHROMIUM")
    with pytest.raises(pytest.skip.Exception, match="headless Chromium not installed"):
        chromium()
