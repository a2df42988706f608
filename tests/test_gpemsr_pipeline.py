"""GPEMSR through the workflow (workflow/rules/gpemsr.smk): the three stage rules, the generic
infer and evaluate rules and one ablation variant's own rules on a tiny phantom, and a dry run
of `snakemake ablations` that plans every variant."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ["full", "no_enc_attn", "no_dec_attn", "mpf_no_mask", "no_pod", "no_3da", "no_mpf"]


def tiny_config(work: Path, scales=(8,)) -> Path:
    config = {
        "results": "results",
        "preset": "quick",
        "scales": list(scales),
        "methods": ["gpemsr"],
        "data": {
            "source": "phantom",
            "phantom": {
                "samples": {"train": {"shape": [6, 128, 128], "seed": 1}, "test": {"shape": [3, 128, 128], "seed": 2}}
            },
            "splits": {"train": [{"sample": "train"}], "test": [{"sample": "test"}]},
        },
        "train": {"checkpoint_every": 2},
        # a smoke test: ~9 steps over the three stages (split in proportion to the preset's);
        # patch sizes stay the preset's (stage I counts HR pixels, 64 = its 4x4 latent grid)
        "train_override": {"iterations": 9, "batch_size": 2},
        "inference": {"tile": 16, "overlap": 4},
        "metrics": {"lpips": {"enabled": False}},
        "segmentation": {"enabled": False},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(work: Path, config: Path, *args: str) -> subprocess.CompletedProcess:
    # targets before --configfile, which takes several values
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *args,
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(work),
        "--cores",
        "2",
        "--configfile",
        str(config),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_three_stage_rules_infer_and_evaluate(tmp_path):
    config = tiny_config(tmp_path)
    res = tmp_path / "results"
    # targets relative to the working directory, as the rules name them
    run = snakemake(
        tmp_path,
        config,
        "results/metrics/gpemsr/x8.csv",
        "results/metrics/gpemsr/no_mpf/x8.csv",
        "results/metrics/gpemsr/full/stage1.csv",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    models = res / "models" / "gpemsr"
    stage1 = list(models.glob("stage1-*.pt"))
    stage2 = list((models / "x8").glob("stage2-*.pt"))
    assert len(stage1) == 1 and len(stage2) == 1
    final = torch.load(models / "x8" / "model.pt", weights_only=True)
    assert [torch.load(p, weights_only=True)["gpemsr_stage"] for p in stage1 + stage2] == ["vqgan", "indexer"]
    assert final["gpemsr_stage"] == "fusion" and final["model_params"] == {"preset": "quick", "variant": "full"}
    assert final["train_seconds"] > sum(torch.load(p, weights_only=True)["train_seconds"] for p in stage1 + stage2)
    for rule, name in [
        ("gpemsr_stage1", f"gpemsr-{stage1[0].stem[len('stage1-') :]}"),
        ("gpemsr_stage3", "gpemsr-x8"),
        ("gpemsr_stage3", "gpemsr-no_mpf-x8"),
        ("infer", "gpemsr-x8"),
        ("evaluate", "gpemsr-no_mpf-x8"),
    ]:
        assert (res / "benchmarks" / rule / f"{name}.tsv").exists(), (rule, name)
        assert (res / "logs" / rule / f"{name}.log").exists(), (rule, name)
    # the variant without MPF trains no prior of its own and loads none
    assert torch.load(models / "no_mpf" / "x8" / "model.pt", weights_only=True)["model_params"]["variant"] == "no_mpf"
    rows = pd.concat(
        [
            pd.read_csv(res / "metrics/gpemsr/x8.csv", keep_default_na=False),
            pd.read_csv(res / "metrics/gpemsr/no_mpf/x8.csv", keep_default_na=False),
        ]
    )
    assert set(rows["method"]) == {"gpemsr"} and set(rows["variant"]) == {"", "no_mpf"}
    psnr = rows[rows["metric"] == "psnr"].set_index("variant")["value"].astype(float)
    assert ((psnr > 5) & (psnr < 60)).all(), psnr
    # supplement Table 2's stage I rows: the model's own stage I reconstructs the HR test volume
    prior = pd.read_csv(res / "metrics/gpemsr/full/stage1.csv", keep_default_na=False)
    assert list(prior["metric"]) == ["prior_psnr", "prior_lpips"] and set(prior["variant"]) == {"full"}
    assert 5 < float(prior["value"][0]) < 60 and prior["value"][1] == "" and "disabled in config" in prior["note"][1]
    assert (res / "benchmarks" / "gpemsr_stage1_evaluate" / "gpemsr-full.tsv").exists()
    # the generic train rule never trains GPEMSR: nothing under its checkpoint layout
    assert not (models / "x8" / "checkpoints" / "last.pt").exists()

    # a second run has nothing to do
    again = snakemake(tmp_path, config, "results/metrics/gpemsr/x8.csv", "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # the report lays out the variant rows that have run next to the model's own
    page = snakemake(tmp_path, config, "report")
    assert page.returncode == 0, page.stderr[-3000:]
    html = (res / "report" / "index.html").read_text()
    assert 'class="ablation"' in html and "no_mpf" in html


def test_ablations_dry_run_plans_every_variant(tmp_path):
    config = tiny_config(tmp_path, scales=(8, 16))
    run = snakemake(tmp_path, config, "ablations", "-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr[-3000:]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", run.stdout + run.stderr, re.M)}
    assert counts["gpemsr_stage1"] == 3  # full (shared by the stage III ablations), no_enc_attn, no_dec_attn
    assert counts["gpemsr_stage2"] == 6  # those three, per scale
    assert counts["gpemsr_stage3"] == 2 and counts["gpemsr_stage3_variant"] == 12  # 6 variants x 2 scales
    assert counts["gpemsr_evaluate_variant"] == 12 and counts["ablation_leaderboard"] == 1
    # supplement Table 2: each stage I model reconstructs the HR test sections once (not per scale)
    assert counts["gpemsr_stage1_evaluate"] == 3
    assert sum(n for rule, n in counts.items() if rule != "total") == counts["total"]
    listed = snakemake(tmp_path, config, "ablations", "-n", "--printshellcmds")
    text = listed.stdout + listed.stderr
    for v in VARIANTS[1:]:
        for s in (8, 16):
            assert f"results/metrics/gpemsr/{v}/x{s}.csv" in text, (v, s)
    for v in ("full", "no_enc_attn", "no_dec_attn"):
        assert f"results/metrics/gpemsr/{v}/stage1.csv" in text, v
    assert "results/metrics/gpemsr/no_pod/stage1.csv" not in text  # no_pod shares the full model's stage I
    # the default target trains the model itself only
    default = snakemake(tmp_path, config, "-n", "--quiet", "rules")
    assert "gpemsr_stage3_variant" not in default.stdout + default.stderr


def test_plan_routes_gpemsr_to_its_stage_rules_with_variants_and_scale_overrides(tmp_path):
    from emsrbench.errors import EmsrError
    from emsrbench.gpemsr.workflow import StagePlan
    from emsrbench.plan import Plan

    config = yaml.safe_load(tiny_config(tmp_path, scales=(8, 16)).read_text())
    plan = Plan({**config, "methods": ["gpemsr", "rcan"], "preset": "paper"})
    assert plan.harness_trained() == ["rcan"] and plan.staged("gpemsr") == ["gpemsr"]
    assert plan.preset_of("gpemsr")["model"] == {"preset": "paper", "variant": "full"}
    assert plan.preset_of("gpemsr", 16, "no_pod")["model"]["variant"] == "no_pod"
    fusion = {s: plan.preset_of("gpemsr", s)["train"]["stages"]["fusion"] for s in (8, 16)}
    assert (fusion[8]["objective"]["ref_weight"], fusion[16]["objective"]["ref_weight"]) == (0.001, 0.01)
    assert (fusion[8]["patch_size"], fusion[16]["patch_size"]) == (32, 16)
    with pytest.raises(EmsrError, match="has no variant 'no_such'"):
        plan.preset_of("gpemsr", variant="no_such")
    stages = StagePlan(plan)
    # stage III ablations share the full model's stage I and II files; "without MPF" needs none
    assert stages.prior_files("gpemsr", 8, "no_pod") == stages.prior_files("gpemsr", 8, "full")
    assert stages.prior_files("gpemsr", 8, "no_enc_attn")["stage1"] != stages.prior_files("gpemsr", 8, "full")["stage1"]
    assert stages.prior_files("gpemsr", 16, "no_mpf") == {}
    assert stages.model_file("gpemsr", 8, "full") == plan.model_file("gpemsr", 8)
    assert stages.model_file("gpemsr", 8, "no_3da").endswith("models/gpemsr/no_3da/x8/model.pt")
    # the pretrained files each stage job reads (its params, so a new file reruns exactly these)
    assert stages.pretrained_names("fusion", "gpemsr", 8, "full") == ["vgg19", "spynet"]
    assert stages.pretrained_names("fusion", "gpemsr", 8, "no_pod") == ["vgg19"]
    assert stages.pretrained_names("fusion", "gpemsr", 8, "mpf_no_mask") == ["spynet"]
    assert stages.pretrained_names("fusion", "gpemsr", 8, "no_mpf") == ["spynet"]
    assert (
        stages.pretrained_names("vqgan", "gpemsr", 8, "full")
        == stages.pretrained_names("indexer", "gpemsr", 8, "full")
        == []
    )


def test_ablations_without_a_method_with_variants_says_so(tmp_path):
    config = tiny_config(tmp_path)
    cfg = yaml.safe_load(config.read_text())
    cfg["methods"] = ["bicubic"]
    config.write_text(yaml.safe_dump(cfg))
    run = snakemake(tmp_path, config, "ablations", "-n")
    assert run.returncode != 0
    assert "ablations: no method of this run has variants (methods: bicubic)" in run.stdout + run.stderr
