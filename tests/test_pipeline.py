"""End-to-end workflow runs with `--cores 2`: the tiny phantom config, real EM (ISBI 2012),
config and method errors, and a failing method that must not take the others down."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
pytestmark = pytest.mark.slow


def snakemake(
    workdir: Path,
    *args,
    snakefile: Path = REPO / "Snakefile",
    configfile: Path = REPO / "config" / "test.yaml",
    env: dict | None = None,
):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(snakefile),
        "--directory",
        str(workdir),
        "--cores",
        "2",
        "--configfile",
        str(configfile),
    ]
    return subprocess.run(
        cmd + list(args), capture_output=True, text=True, timeout=1200, env={**os.environ, **(env or {})}
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The tiny config, run as `make bench GPUS=2` runs it on a machine with two (here: fake)
    GPUs: Snakemake's gpu resource and the lock-file pool of emsrbench.gpu_pool."""
    work = tmp_path_factory.mktemp("tiny")
    run = snakemake(work, "--resources", "gpu=2", env={"EMSR_GPUS": "2", "EMSR_GPU_LOCKS": str(work / "gpu-locks")})
    assert run.returncode == 0, run.stderr[-3000:]
    return work


def test_gpu_jobs_get_a_card_of_the_pool_and_the_others_none(tiny_run):
    logs = tiny_run / "results" / "logs"
    for log in [logs / "train" / "rcan-x8.log", logs / "infer" / "rcan-x16.log"]:  # rcan: gpus 1 in method.yaml
        said = [line for line in log.read_text().splitlines() if "GPU pool" in line]
        assert len(said) == 1 and said[0].split("this job uses ")[1] in ("0", "1"), log
    for log in [logs / "infer" / "bicubic-x8.log", logs / "evaluate" / "rcan-x8.log"]:  # no GPU declared
        assert "GPU pool of 2: this job uses no GPU" in log.read_text(), log


def test_tiny_run_produces_the_leaderboard(tiny_run):
    res = tiny_run / "results"
    board = pd.read_csv(res / "leaderboard.csv")
    assert sorted(board["method"]) == ["bicubic", "hr", "rcan"]  # hr: segmentation rows only
    board = board[board["method"] != "hr"]
    for s in (8, 16):
        for m in ("psnr", "ssim", "parameters", "infer_s_per_mp"):
            assert board[f"{m}@x{s}"].notna().all(), (m, s)
        assert board[f"lpips@x{s}"].isna().all()  # no AlexNet weights here: reported missing, not computed
    tidy = pd.read_csv(res / "metrics.csv")
    assert tidy.query("metric == 'lpips'")["note"].str.startswith("missing").all()
    md = (res / "leaderboard.md").read_text()
    assert "## 8x" in md and "## 16x" in md and "RCAN" in md and "Bicubic" in md
    for stage, names in {"train": ["rcan-x8", "rcan-x16"], "infer": ["bicubic-x8", "rcan-x16"]}.items():
        for n in names:
            assert (res / "benchmarks" / stage / f"{n}.tsv").exists()
            assert (res / "logs" / stage / f"{n}.log").exists()
    assert not (res / "models" / "bicubic").exists()  # bicubic does not train


def test_tiny_run_has_intervals_sidecars_and_tie_marks(tiny_run):
    """Every evaluate and segment job leaves its bootstrap sidecar; every image and
    segmentation score has an interval around its value (4 test sections: 4 blocks / slabs); the
    ranked metrics of bicubic and rcan carry a tie mark (one best per scale x metric x segmenter),
    the unranked ones (VOI split/merge, cost) and HR none; the leaderboard and report explain them."""
    from emsrbench.stats import sidecar

    res = tiny_run / "results"
    for s in (8, 16):
        for m in ("bicubic", "rcan"):
            car = sidecar.read(res / "metrics" / m / f"x{s}-bootstrap.npz")
            assert sorted(car.reps) == ["psnr", "ssim"] and car.blocks == 4 and car.resamples == 2000
        for net in ("superhuman", "mala"):
            for m in ("hr", "bicubic", "rcan"):
                car = sidecar.read(res / "segment" / net / m / f"x{s}-bootstrap.npz")
                assert car.kind == "segmentation" and car.segmenter == net and car.blocks == 4
                assert sorted(car.reps) == ["arand", "cremi_score", "voi_merge", "voi_split"]
    tidy = pd.read_csv(res / "metrics.csv", keep_default_na=False)
    scored = tidy[tidy["metric"].isin(["psnr", "ssim", "voi_split", "voi_merge", "arand", "cremi_score"])]
    low, high, value = (pd.to_numeric(scored[c]) for c in ("ci_low", "ci_high", "value"))
    # an interval contains its estimate, or is missing with its reason (never a wrong one)
    missing = low.isna() & high.isna()
    assert ((low <= value + 1e-9) & (value <= high + 1e-9) | missing).all()
    assert scored.loc[missing, "note"].str.contains("interval missing|no interval", regex=True).all()
    ranked = tidy[tidy["metric"].isin(["psnr", "ssim", "arand", "cremi_score"]) & (tidy["method"] != "hr")]
    assert set(ranked["tie"]) <= {"best", "tied", "worse", ""}
    assert (ranked.groupby(["scale", "metric", "segmenter"])["tie"].apply(lambda t: (t == "best").sum()) == 1).all()
    assert set(tidy.loc[~tidy.index.isin(ranked.index), "tie"]) == {""}
    board = pd.read_csv(res / "leaderboard.csv", keep_default_na=False).set_index("method")
    assert board.loc["rcan", "psnr@x8:tie"] in ("best", "tied", "worse")
    assert "not shown to differ from the best" in (res / "leaderboard.md").read_text()
    page = (res / "report" / "index.html").read_text()
    assert page.count('<p class="legend">') == 2  # one per scale's leaderboard


def test_tiny_run_builds_the_report(tiny_run):
    res = tiny_run / "results"
    page = (res / "report" / "index.html").read_text()
    for s in (8, 16):
        assert f'id="leaderboard-x{s}"' in page
        for name in ("Bicubic", "RCAN"):
            assert page.count(f'<tr data-status="ok"><td data-v="{name}">') == 2
    assert "failed" not in {p.name for p in res.iterdir()}  # no job failed, so no records
    figures = {p.name for p in (res / "report" / "figures").iterdir()}
    assert {
        "cost_vs_quality.png",
        "metrics.png",
        "panel_x16_1.png",
        "panel_x8_1.png",
        "hallucination_x8_1.png",
        "hallucination_x16_1.png",
    } <= figures
    run = snakemake(tiny_run, "--report", str(tiny_run / "snakemake-report.html"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tiny_run / "snakemake-report.html").stat().st_size > 100_000


def test_tiny_run_scores_segmentation(tiny_run):
    import h5py

    res = tiny_run / "results"
    board = pd.read_csv(res / "leaderboard.csv").set_index("method")
    for net in ("superhuman", "mala"):
        assert (res / "segmenters" / net / "model.pt").exists()
        assert (res / "benchmarks" / "train_segmenter" / f"{net}.tsv").exists()
        for s in (8, 16):
            for m in ("voi_split", "voi_merge", "arand", "cremi_score"):
                assert board[f"{m}@x{s}/{net}"].notna().all(), (net, s, m)
            with h5py.File(res / "segment" / net / "rcan" / f"x{s}.h5", "r") as f:
                assert f["volumes/segmentation"].dtype == "uint64" and f["volumes/segmentation"].shape == (4, 128, 128)
                assert f["volumes/affinities"].dtype == "float32" and f["volumes/affinities"].shape == (3, 4, 128, 128)
            sweep = pd.read_csv(res / "segment" / net / "hr" / f"x{s}-thresholds.csv")
            assert sweep["threshold"].tolist() == [0.5, 0.7]  # config/test.yaml
    tidy = pd.read_csv(res / "metrics.csv", keep_default_na=False)
    assert set(tidy.loc[tidy["metric"] == "psnr", "segmenter"]) == {""}
    assert set(tidy.loc[tidy["metric"] == "voi_split", "segmenter"]) == {"superhuman", "mala"}
    md = (res / "leaderboard.md").read_text()
    assert "| Method | 8x Superhuman | 8x MALA | 16x Superhuman | 16x MALA |" in md and "| HR (upper bound) |" in md
    # hallucination scores (issue #7) of every segmentation reach the leaderboard and the report
    for net in ("superhuman", "mala"):
        for s in (8, 16):
            rows = pd.read_csv(res / "segment" / net / "rcan" / f"x{s}-hallucination.csv").set_index("metric")
            assert set(rows["segmenter"]) == {net} and "tolerance 8 nm" in rows.loc["boundary_recall", "note"]
            assert "of IoU >= 0.5" in rows.loc["orphan_fraction", "note"]
            for m in (
                "boundary_precision",
                "boundary_recall",
                "boundary_f1",
                "invented_um_per_um2",
                "erased_um_per_um2",
            ):
                assert board[f"{m}@x{s}/{net}"].between(0, 1e3).all(), (net, s, m)  # HR's row too
            orphans = board[f"orphan_fraction@x{s}/{net}"]
            assert orphans.drop("hr").between(0, 1).all() and pd.isna(orphans["hr"])  # no orphans of HR by itself
            assert (res / "benchmarks" / "segment" / f"{net}-bicubic-x{s}.tsv").exists()
    assert set(tidy.loc[tidy["metric"] == "orphan_fraction", "segmenter"]) == {"superhuman", "mala"}
    assert "## Hallucination" in md and "### 16x, MALA" in md.split("## Hallucination")[1]
    page = (res / "report" / "index.html").read_text()
    assert page.count('title="boundary_f1: higher is better"') == 2 * 2  # per scale and network
    assert page.count('title="boundary_precision: not ranked"') == 2 * 2
    assert "Hallucination (mala)" in page and page.count('<img class="hallucination"') >= 2


def test_rerun_has_nothing_to_do(tiny_run):
    run = snakemake(tiny_run, "-n")
    assert run.returncode == 0
    assert "Nothing to be done" in run.stdout + run.stderr


def dry_run_jobs(workdir: Path) -> dict[str, int]:
    """{rule: jobs} that `snakemake -n` would run."""
    run = snakemake(workdir, "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-2000:]
    return {
        line.split()[0]: int(line.split()[1])
        for line in (run.stdout + run.stderr).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit() and line.split()[0] != "total"
    }


def test_a_pretrained_file_reruns_exactly_the_jobs_that_read_it(tiny_run):
    """Weights are inputs: an AlexNet file appearing in pretrained_dir reruns the LPIPS jobs
    (and what reads their rows), nothing else; a weight no planned job reads reruns nothing."""
    weights = tiny_run / "weights"
    weights.mkdir(exist_ok=True)
    spynet = weights / "spynet_sintel_final-3d2a1287.pth"
    alexnet = weights / "alexnet-owt-7be5be79.pth"
    try:
        spynet.write_bytes(b"a stand-in spynet")  # neither bicubic nor rcan reads it
        assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(tiny_run, "-n"))
        alexnet.write_bytes(b"a stand-in alexnet")  # a checksum mismatch, still a changed input
        assert dry_run_jobs(tiny_run) == {"evaluate": 4, "leaderboard": 1, "report": 1, "all": 1}
    finally:
        spynet.unlink(missing_ok=True)
        alexnet.unlink(missing_ok=True)
    assert "Nothing to be done" in (lambda r: r.stdout + r.stderr)(snakemake(tiny_run, "-n"))


def test_paper_preset_stops_at_start_up_without_the_studys_weights(tmp_path):
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config.update(methods=["bicubic", "realesrgan"], metrics={"lpips": {"enabled": False}})  # VGG19 its one need
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", configfile=tmp_path / "paper.yaml")
    assert run.returncode != 0
    said = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("emsrbench:")]
    assert len(said) == 1 and "pretrained vgg19 (used by realesrgan)" in said[0], run.stderr[-2000:]
    assert "snakemake fetch_weights" in said[0]
    assert "allow_missing" in said[0]
    # fetching the weights is what the line asks for: that run is let through
    fetch = snakemake(tmp_path, "-n", "fetch_weights", configfile=tmp_path / "paper.yaml")
    assert fetch.returncode == 0, fetch.stderr[-2000:]
    assert "fetch_weight" in fetch.stdout + fetch.stderr


def test_dry_run_lists_the_whole_matrix(tmp_path):
    run = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=REPO / "config" / "config.yaml")
    assert run.returncode == 0, run.stderr
    out = run.stdout + run.stderr
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in out.splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    n_methods = len([p for p in (REPO / "methods").iterdir() if (p / "method.yaml").exists()])
    assert counts["infer"] == counts["evaluate"] == 2 * n_methods
    # 2 networks x (HR + every method) x 2 scales, each segmented and scored in one job
    assert counts["segment"] == 2 * (n_methods + 1) * 2
    assert "score_segmentation" not in counts and "score_hallucination" not in counts
    assert counts["degrade"] == 2 * 3  # train, val, test pieces x 2 scales
    assert counts["phantom"] == 2


@pytest.mark.parametrize(
    "override,message",
    [
        (["scale=[8]"], "scale"),  # a typo of 'scales'
        (["methods=[nope]"], "unknown method"),
        (["preset=fast"], "fast"),
        (["scales=[3]"], "3"),
    ],
)
def test_config_errors_are_reported(tmp_path, override, message):
    run = snakemake(tmp_path, "-n", "--config", *override)
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert message in out
    assert "Failed validating" not in out  # one line, not snakemake's schema dump


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in ("Snakefile", "workflow", "config", "methods", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dest / name)
    return dest


def test_a_failing_method_leaves_the_others_intact(tmp_path):
    tree = copy_workflow(tmp_path / "tree")
    broken = tree / "methods" / "broken"
    broken.mkdir()
    (broken / "method.yaml").write_text(
        "display_name: Broken\ncitation: none\nfamily: single-image\nscales: [8, 16]\ntrains: false\n"
        "presets: {quick: {}, paper: {}}\n"
    )
    (broken / "model.py").write_text(
        "import torch\n\nclass NaNs(torch.nn.Module):\n"
        "    def __init__(self, s):\n        super().__init__()\n        self.s = s\n"
        "    def forward(self, x):\n"
        "        return torch.full((x.shape[0], 1, x.shape[2] * self.s, x.shape[3] * self.s), float('nan'))\n\n"
        "def build(scale):\n    return NaNs(scale)\n"
    )
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["methods"] = ["bicubic", "broken"]
    cfg["segmentation"]["enabled"] = False  # covered by the tiny run; keeps this one short
    (tree / "config" / "broken.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    run = snakemake(work, "--keep-going", snakefile=tree / "Snakefile", configfile=tree / "config" / "broken.yaml")
    assert run.returncode != 0
    res = work / "results"
    assert (res / "metrics" / "bicubic" / "x8.csv").exists() and (res / "metrics" / "bicubic" / "x16.csv").exists()
    assert not (res / "sr" / "broken").exists() or not list((res / "sr" / "broken").glob("*.h5"))
    log = (res / "logs" / "infer" / "broken-x8.log").read_text()
    errors = [line for line in log.splitlines() if line.startswith("emsrbench error")]
    assert errors  # one line per attempt (the rule retries once)
    assert "broken x8 section 0" in errors[0] and "NaN" in errors[0]
    # The failure is on record, and `snakemake report` builds the page from the rows that exist.
    records = sorted(p.name for p in (res / "failed").glob("*.json"))
    assert records == ["infer-method=broken,scale=16.json", "infer-method=broken,scale=8.json"]
    assert not (res / "report" / "index.html").exists()  # rule all's report waits for every row
    # (--cores first: --configfile, last in the command, would take "report" as a second file)
    run = snakemake(
        work, "--cores", "2", "report", snakefile=tree / "Snakefile", configfile=tree / "config" / "broken.yaml"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    page = (res / "report" / "index.html").read_text()
    assert page.count('<tr class="failed" data-status="failed"><td data-v="Broken">') == 2
    assert "failed: infer (method=broken, scale=8): results/sr/broken/x8.h5: broken x8 section 0" in page
    assert page.count('<tr data-status="ok"><td data-v="Bicubic">') == 2
    from test_report_browser import check_rendered

    check_rendered(res / "report" / "index.html", tmp_path / "browser")


def test_real_em_isbi2012(tmp_path):
    """Real serial-section TEM (ISBI 2012, CREMI layout): degrade, super-resolve, score."""
    cfg = yaml.safe_load((REPO / "config" / "test.yaml").read_text())
    cfg["data"] = {
        "source": "path",
        "labels_key": "volumes/labels/neuron_ids_2d",
        "path": {"samples": {"isbi": str(REPO / "tests" / "data" / "isbi2012_train.h5")}},
        "splits": {"train": [{"sample": "isbi", "z": [0, 24]}], "test": [{"sample": "isbi", "z": [24, None]}]},
    }
    cfg["segmentation"]["enabled"] = False  # covered by the tiny run; keeps this one short
    cfg_path = tmp_path / "isbi.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    run = snakemake(tmp_path, configfile=cfg_path)
    assert run.returncode == 0, run.stderr[-3000:]
    board = pd.read_csv(tmp_path / "results" / "leaderboard.csv").set_index("method")
    # Bicubic on real ISBI sections lands in the range the SR literature reports for 8x/16x EM.
    assert 15 < board.loc["bicubic", "psnr@x8"] < 30
    assert board.loc["bicubic", "psnr@x8"] > board.loc["bicubic", "psnr@x16"]
    import h5py

    with h5py.File(tmp_path / "results" / "degraded" / "x8" / "test-0.h5") as f:
        assert f["volumes/raw"].shape == (6, 512, 512) and f["volumes/lr"].shape == (6, 64, 64)
        assert tuple(f["volumes/raw"].attrs["resolution"]) == (50.0, 4.0, 4.0)
        assert tuple(f["volumes/lr"].attrs["resolution"]) == (50.0, 32.0, 32.0)


def test_lint_is_clean(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


def test_paper_config_plans_the_cremi_study(tmp_path):
    # the study's weights cannot be downloaded here: plan with the opt-in (every number flagged)
    config = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    config["pretrained"] = {"allow_missing": True}
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(config))
    run = snakemake(tmp_path, "-n", "--quiet", "rules", configfile=tmp_path / "paper.yaml")
    assert run.returncode == 0, run.stderr
    counts = {
        line.split()[0]: int(line.split()[1])
        for line in (run.stdout + run.stderr).splitlines()
        if len(line.split()) == 2 and line.split()[1].isdigit()
    }
    assert counts["download_cremi"] == 3  # samples A, B, C
    assert counts["degrade"] == 2 * 5  # 3 train pieces + val + test, at 8x and 16x
