"""Config validation and the run plan: shipped configs are valid, mistakes are one-line errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from emsrbench.config import check_config
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
