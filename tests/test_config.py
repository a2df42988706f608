"""Config validation and the run plan: shipped configs are valid, mistakes are one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from workflow_helpers import dry_run

from emsrbench.config import check_config, take_data_from_user
from emsrbench.errors import EmsrError
from emsrbench.plan import Plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"


def load(name):
    return yaml.safe_load((REPO / "config" / name).read_text())


@pytest.mark.parametrize("name", ["config.yaml", "paper.yaml", "test.yaml"])
def test_shipped_configs_are_valid(name):
    cfg = load(name)
    check_config(cfg, SCHEMA)
    plan = Plan(cfg, methods_dir=REPO / "methods")
    assert plan.scales == [8, 16]


def test_paper_config_follows_the_study():
    plan = Plan(load("paper.yaml"), methods_dir=REPO / "methods")
    assert plan.preset == "paper" and plan.data["source"] == "cremi"
    test = plan.pieces["test"][0]
    assert test.sample == "C" and tuple(test.z) == (-50, None)  # the last 50 sections of CREMI C
    assert plan.data["center_crop"] == [1024, 1024]
    assert plan.sample_file("C").endswith("sample_C.hdf")


def errors_for(mutate):
    cfg = copy.deepcopy(load("config.yaml"))
    mutate(cfg)
    with pytest.raises(EmsrError) as info:
        check_config(cfg, SCHEMA)
        Plan(cfg, methods_dir=REPO / "methods")
    assert "\n" not in str(info.value)
    return str(info.value)


def test_typos_name_the_key_and_suggest_a_fix():
    msg = errors_for(lambda c: c["degradation"].update(modle="bicubic"))
    assert "degradation.'modle'" in msg and "did you mean 'model'" in msg
    msg = errors_for(lambda c: c.update(scale=[8]))
    assert "'scale'" in msg and "did you mean 'scales'" in msg


def test_wrong_values_name_the_key():
    assert "data.source" in errors_for(lambda c: c["data"].update(source="s3"))
    assert "degradation.noise" in errors_for(lambda c: c["degradation"].update(noise="salt"))
    assert "data.splits.test" in errors_for(lambda c: c["data"]["splits"].update(test=[{"sample": "test"}] * 2))


def test_plan_errors():
    assert "unknown sample 'nope'" in errors_for(lambda c: c["data"]["splits"]["train"].append({"sample": "nope"}))
    assert "no data.cremi section" in errors_for(lambda c: c["data"].update(source="cremi"))
    assert "unknown method" in errors_for(lambda c: c.update(methods=["rcan", "srgan"]))


def test_segmentation_section(tmp_path):
    msg = errors_for(lambda c: c["segmentation"].update(treshold=[0.5]))
    assert "segmentation.'treshold'" in msg and "did you mean 'thresholds'" in msg
    assert "segmentation.networks" in errors_for(lambda c: c["segmentation"].update(networks=["unet"]))
    assert "segmentation.scoring" in errors_for(lambda c: c["segmentation"].update(scoring="max"))
    msg = errors_for(lambda c: c["segmentation"].update(weights={"mala": str(tmp_path / "absent.pt")}))
    assert "segmentation.weights.mala: file not found" in msg
    plan = Plan(load("config.yaml"), methods_dir=REPO / "methods")
    assert plan.segment_networks() == ["superhuman", "mala"] and plan.segmentation()["thresholds"] == [0.5]
    assert plan.segmentation()["preset"] == "quick" and plan.segment_methods()[0] == "hr"
    assert plan.segment_raw("hr", 8) == plan.test_file(8) and plan.segment_raw("bicubic", 8) == plan.sr_file(
        "bicubic", 8
    )
    assert plan.segmenter_file("mala") == "results/segmenters/mala/model.pt"
    assert plan.segment_file("mala", "hr", 16) == "results/segment/mala/hr/x16.h5"
    assert len(plan.all_segment_scores()) == 2 * (1 + len(plan.methods)) * 2
    weights = tmp_path / "mine.pt"
    weights.write_bytes(b"")
    cfg = load("config.yaml")
    cfg["segmentation"]["weights"] = {"mala": str(weights)}
    check_config(cfg, SCHEMA)
    plan = Plan(cfg, methods_dir=REPO / "methods")
    assert plan.segmenter_file("mala") == str(weights) and not plan.segmenter_trained("mala")
    cfg["segmentation"]["enabled"] = False
    assert Plan(cfg, methods_dir=REPO / "methods").all_segment_scores() == []


def test_report_settings_are_checked():
    msg = errors_for(lambda c: c["report"]["panels"].update(crpo=64))
    assert "report.panels.'crpo'" in msg and "did you mean 'crop'" in msg
    assert "report.panels.crop" in errors_for(lambda c: c["report"]["panels"].update(crop=100))
    assert "report.panels.regions.0" in errors_for(lambda c: c["report"]["panels"].update(regions=[{"z": 0, "y": 5}]))


def test_hallucination_settings():
    msg = errors_for(lambda c: c["segmentation"]["hallucination"].update(tolerance=8))
    assert "segmentation.hallucination.'tolerance'" in msg and "did you mean 'tolerance_nm'" in msg
    assert "segmentation.hallucination.tolerance_nm" in errors_for(
        lambda c: c["segmentation"]["hallucination"].update(tolerance_nm=-1)
    )
    assert "segmentation.hallucination.iou" in errors_for(lambda c: c["segmentation"]["hallucination"].update(iou=0))
    plan = Plan(load("config.yaml"), methods_dir=REPO / "methods")
    assert plan.hallucination() == {"enabled": True, "tolerance_nm": 8, "iou": 0.5}
    assert plan.hallucination_file("mala", "hr", 8) == "results/segment/mala/hr/x8-hallucination.csv"
    assert len(plan.all_hallucination_scores()) == 2 * (1 + len(plan.methods)) * 2  # HR's own row too
    assert set(plan.all_hallucination_scores()) <= {p for _, _, p in plan.metric_tables()}  # the report reads them
    cfg = load("test.yaml")
    assert Plan(cfg, methods_dir=REPO / "methods").hallucination()["tolerance_nm"] == 8.0  # the default
    cfg["segmentation"]["hallucination"] = {"enabled": False}
    plan = Plan(cfg, methods_dir=REPO / "methods")
    assert plan.all_hallucination_scores() == [] and plan.hallucination()["tolerance_nm"] == 8.0
    cfg["segmentation"] = {"enabled": False, "hallucination": {"enabled": True}}
    assert Plan(cfg, methods_dir=REPO / "methods").all_hallucination_scores() == []  # nothing to score


# ---------------------------------------------------------------------------------------------
# data from one config layer (issue 12, part 4)


def test_user_data_replaces_the_default_data_whole():
    cfg = load("config.yaml")
    user = {
        "methods": ["bicubic"],
        "data": {
            "source": "path",
            "path": {"samples": {"vol": "vol.h5"}},
            "splits": {"train": [{"sample": "vol"}], "test": [{"sample": "vol"}]},
        },
    }
    assert take_data_from_user(cfg, user)
    assert cfg["data"] == user["data"] and cfg["data"] is not user["data"]
    assert "val" not in cfg["data"]["splits"] and "phantom" not in cfg["data"]
    assert cfg["segmentation"]["networks"] == ["superhuman", "mala"]  # other sections are not touched here
    untouched = load("config.yaml")
    assert not take_data_from_user(untouched, {"methods": ["bicubic"]})  # no user data: the default's stays
    assert untouched == load("config.yaml")


def test_data_resolution_and_gt_labels_keys():
    assert "data.resolution" in errors_for(lambda c: c["data"].update(resolution=[40, 4]))
    assert "data.resolution" in errors_for(lambda c: c["data"].update(resolution=[40, 0, 4]))
    assert "segmentation.gt_labels" in errors_for(lambda c: c["segmentation"].update(gt_labels="2d"))
    cfg = load("config.yaml")
    assert Plan(cfg, methods_dir=REPO / "methods").segmentation()["gt_labels"] == "auto"
    cfg["segmentation"]["gt_labels"] = "per_section"
    cfg["data"]["resolution"] = [30, 5, 5]
    check_config(cfg, SCHEMA)
    assert Plan(cfg, methods_dir=REPO / "methods").segmentation()["gt_labels"] == "per_section"


def test_user_configfile_gets_exactly_its_own_splits(tmp_path):
    """A --configfile with its own data.source and splits (no val) plans with exactly those:
    the default's val split (a phantom sample) must not leak in."""
    import numpy as np

    from emsrbench.io import write_cremi

    vol = tmp_path / "vol.h5"
    write_cremi(vol, np.zeros((6, 64, 64), np.uint8), np.ones((6, 64, 64), np.uint64), resolution=(40, 4, 4))
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "methods": ["bicubic"],
                "data": {
                    "source": "path",
                    "path": {"samples": {"vol": str(vol)}},
                    "splits": {"train": [{"sample": "vol", "z": [0, 4]}], "test": [{"sample": "vol", "z": [4, 6]}]},
                },
            }
        )
    )
    run = dry_run(tmp_path, mine)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-3000:]
    degraded = {
        line.split("/")[-1].strip()
        for line in out.splitlines()
        if "results/degraded/x" in line and line.strip().startswith("output:")
    }
    assert degraded == {"train-0.h5", "test-0.h5"}, degraded
    assert "val-" not in out and "rule phantom" not in out
