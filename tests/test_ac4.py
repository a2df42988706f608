"""AC4 through `data.source: path` (issue #13): config/ac4-example.yaml is a valid config whose
plan reads a file in the layout docs/running.md#ac4-the-studys-second-dataset describes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from emsrbench.config import check_config
from emsrbench.io import read_cremi, write_cremi
from emsrbench.plan import Plan

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "config" / "schema" / "config.schema.yaml"
EXAMPLE = REPO / "config" / "ac4-example.yaml"
SECTIONS = 100  # the SNEMI3D training volume


def test_the_example_plans_ac4_from_a_path_with_the_documented_layout(tmp_path):
    config = yaml.safe_load(EXAMPLE.read_text())
    check_config(config, SCHEMA)
    plan = Plan(config, methods_dir=REPO / "methods")
    assert plan.data["source"] == "path" and plan.sample_file("ac4") == "data/ac4/ac4.h5"
    assert plan.hallucination()["tolerance_nm"] == 12  # 2 px at 6 nm
    # The documented layout, at a small lateral size: raw uint8, 3D neuron ids, resolution 29x6x6 nm.
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (SECTIONS, 32, 32), dtype=np.uint8)
    labels = np.repeat(rng.integers(1, 50, (1, 32, 32), dtype=np.uint32), SECTIONS, axis=0)
    path = tmp_path / "ac4.h5"
    write_cremi(path, raw, labels, resolution=(29, 6, 6))
    pieces = {split: [plan.piece(split, i) for i in range(len(plan.pieces[split]))] for split in plan.pieces}
    taken = []
    for split, items in pieces.items():
        for piece in items:
            vol = read_cremi(path, z=piece.z, need_labels=True, min_yx=max(plan.scales))
            assert vol.resolution == (29.0, 6.0, 6.0)
            taken += list(range(*slice(*piece.z).indices(SECTIONS)))
            if split == "test":
                assert vol.raw.shape[0] == 25
                np.testing.assert_array_equal(vol.raw, raw[75:])
    assert sorted(taken) == list(range(SECTIONS))  # every section used once: no overlap between splits
