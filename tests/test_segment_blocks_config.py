"""Per-network block settings (issue #13): `segmentation.inference.block`, `input_block`, `stride`
and `pad` take one [z, y, x] for every network or {superhuman: [...], mala: [...]}; the study's
input blocks (Superhuman 18x160x160, MALA 53x268x268) can be written as the study gives them."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from emsrbench.config import check_config
from emsrbench.errors import EmsrError
from emsrbench.io import write_cremi
from emsrbench.segment import networks
from emsrbench.segment.stage import infer_settings, network_inference, segment_volume

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"
STUDY = {"superhuman": [18, 160, 160], "mala": [53, 268, 268]}


def test_a_mapping_gives_each_network_its_own_value():
    inference = {"input_block": STUDY, "stride": {"mala": [25, 56, 56]}, "pad": [0, 0, 0], "batch": 4}
    assert network_inference(inference, "superhuman") == {"input_block": [18, 160, 160], "pad": [0, 0, 0], "batch": 4}
    assert network_inference(inference, "mala") == {
        "input_block": [53, 268, 268],
        "stride": [25, 56, 56],
        "pad": [0, 0, 0],
        "batch": 4,
    }


def test_a_network_left_out_keeps_its_preset_and_a_given_block_replaces_the_presets():
    quick = networks.preset("superhuman", "quick")["infer"]  # block [16, 208, 208]
    kept = infer_settings(quick, {"block": {"mala": [4, 38, 38]}}, "superhuman")
    assert kept.block == [16, 208, 208] and kept.input_block is None
    given = infer_settings(quick, {"input_block": {"superhuman": [8, 96, 96]}}, "superhuman")
    assert given.input_block == [8, 96, 96] and given.block is None  # not both: the user's wins
    with pytest.raises(EmsrError) as info:
        infer_settings(quick, {"block": [8, 96, 96], "input_block": {"superhuman": [8, 96, 96]}}, "superhuman")
    assert str(info.value) == (
        "config: segmentation.inference: both block (output) and input_block are set for superhuman; give one"
    )


def test_the_study_input_blocks_give_the_paper_presets_blocks():
    for net, in_block in STUDY.items():
        pre = networks.preset(net, "paper")
        with torch.device("meta"):  # shapes only: no 80 M MALA weights in memory
            model = networks.build(net, pre["model"])
        assert networks.input_block_shapes(net, model, in_block) == networks.block_shapes(net, model, pre["block"])
    with torch.device("meta"):
        mala = networks.build("mala", networks.preset("mala", "paper")["model"])
    with pytest.raises(EmsrError, match=r"mala: input \[53, 269, 268\] does not pool evenly"):
        networks.input_block_shapes("mala", mala, [53, 269, 268])


def schema_error(inference: dict) -> str:
    cfg = copy.deepcopy(yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    cfg["segmentation"] = {**cfg.get("segmentation", {}), "inference": inference}
    with pytest.raises(EmsrError) as info:
        check_config(cfg, SCHEMA)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_the_schema_takes_both_forms_and_names_a_bad_key():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    cfg["segmentation"] = {"inference": {"input_block": STUDY, "block": {"mala": [25, 56, 56]}, "pad": [1, 2, 3]}}
    check_config(cfg, SCHEMA)
    assert schema_error({"block": {"malla": [1, 2, 3]}}).startswith(
        "config: unknown key segmentation.inference.block.'malla' (did you mean 'mala'?)"
    )
    assert schema_error({"input_block": {"mala": [53, 268]}}) == (
        "config: segmentation.inference.input_block.mala: [53, 268] is too short"
    )
    assert schema_error({"pad": {"superhuman": [0, -1, 0]}}) == (
        "config: segmentation.inference.pad.superhuman.1: -1 is less than the minimum of 0"
    )
    assert "segmentation.inference.stride" in schema_error({"stride": {}})


@pytest.fixture
def volume(tmp_path) -> Path:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (12, 96, 96), dtype=np.uint8)
    write_cremi(tmp_path / "raw.h5", raw, None, resolution=(40, 4, 4))
    return tmp_path / "raw.h5"


@pytest.fixture
def model_files(tmp_path) -> dict[str, Path]:
    torch.manual_seed(0)
    files = {}
    for net in ("superhuman", "mala"):
        files[net] = tmp_path / f"{net}.pt"
        torch.save(networks.build(net, networks.preset(net, "quick")["model"]).state_dict(), files[net])
    return files


def test_segment_volume_uses_each_networks_blocks(volume, model_files, tmp_path, one_thread):
    inference = {
        "block": {"superhuman": [6, 48, 48]},
        "input_block": {"mala": [12, 106, 106]},  # output 4x38x38
        "stride": {"superhuman": [6, 48, 48]},
        "pad": {"superhuman": [0, 0, 0], "mala": [0, 0, 0]},
    }
    shown = {}
    for net, path in model_files.items():
        stats = segment_volume(net, "quick", path, volume, tmp_path / f"{net}-seg.h5", inference=inference, threads=1)
        shown[net] = stats["blocks"]
    assert shown["superhuman"]["in"] == [6, 48, 48] and shown["superhuman"]["stride"] == [6, 48, 48]
    assert shown["mala"]["in"] == [12, 106, 106] and shown["mala"]["out"] == [4, 38, 38]
    with pytest.raises(EmsrError) as info:
        segment_volume(
            "superhuman",
            "quick",
            model_files["superhuman"],
            volume,
            tmp_path / "bad.h5",
            inference={"block": {"superhuman": [6, 50, 48]}},
            threads=1,
        )
    assert str(info.value).startswith("config segmentation.inference (superhuman): superhuman: block [6, 50, 48] must")
