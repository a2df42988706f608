"""Hallucination scores on hand-made label volumes: exact invented/erased lengths, tolerance, orphans."""

from __future__ import annotations

import numpy as np
import pytest

from emsrbench.errors import EmsrError
from emsrbench.segment.hallucination import (
    boundary_error_maps,
    boundary_lengths,
    boundary_scores,
    hallucination_scores,
    orphan_segments,
)

RES = (40.0, 5.0, 4.0)  # anisotropic in y/x so that a wrong axis gives a wrong length
Z, H, W = 3, 32, 48


def two_cells(x_split=8):
    gt = np.ones((Z, H, W), np.uint64)
    gt[:, :, x_split:] = 2
    return gt


def test_identical_volume_scores_zero():
    rng = np.random.default_rng(0)
    gt = np.repeat(np.repeat(rng.integers(1, 9, (Z, 8, 12)), 4, axis=1), 4, axis=2).astype(np.uint32)
    s = hallucination_scores(gt, gt.copy(), gt.copy(), RES, tolerance_nm=0)
    assert s["invented_nm"] == 0 and s["erased_nm"] == 0
    assert s["boundary_precision"] == 1 and s["boundary_recall"] == 1
    assert s["orphan_segments"] == 0 and s["orphan_fraction"] == 0
    assert s["reference_nm"] == s["candidate_nm"] > 0


def test_one_invented_vertical_membrane_scores_exactly_its_length():
    gt = two_cells()
    sr = gt.copy()
    sr[:, :, 30:] = 3  # a membrane along y at x = 29|30, 22 px = 88 nm from the real one
    s = boundary_scores(gt, sr, RES, tolerance_nm=20)
    assert s["invented_nm"] == Z * H * 5.0  # H cracks of y-length 5 nm per section
    assert s["erased_nm"] == 0 and s["boundary_recall"] == 1
    assert s["reference_nm"] == Z * H * 5.0
    assert s["boundary_precision"] == pytest.approx(0.5)
    assert s["per_section"]["invented_nm"].tolist() == [H * 5.0] * Z


def test_one_invented_horizontal_membrane_scores_exactly_its_length():
    gt = np.ones((Z, H, W), np.uint8)  # one cell: no ground-truth boundary at all
    sr = gt.copy()
    sr[1, 20:, :] = 2  # membrane along x in section 1 only
    s = boundary_scores(gt, sr, RES, tolerance_nm=1000)
    assert s["invented_nm"] == W * 4.0 and s["per_section"]["invented_nm"].tolist() == [0, W * 4.0, 0]
    assert s["boundary_precision"] == 0 and s["boundary_recall"] == 1  # nothing to erase: recall 1


def test_an_erased_membrane_scores_exactly_its_length():
    gt = two_cells()
    sr = np.ones_like(gt)  # the SR segmentation merges both cells
    s = boundary_scores(gt, sr, RES, tolerance_nm=20)
    assert s["erased_nm"] == Z * H * 5.0 and s["boundary_recall"] == 0
    assert s["invented_nm"] == 0 and s["boundary_precision"] == 1  # nothing drawn: precision 1


@pytest.mark.parametrize("shift", [-3, -2, -1, 0, 1, 2, 3, 4])
def test_tolerance_along_x(shift):
    """A membrane shifted by d pixels is matched iff |d| * rx <= tolerance (rx = 4 nm, tol = 8 nm)."""
    gt = two_cells(20)
    sr = two_cells(20 + shift)
    s = boundary_scores(gt, sr, RES, tolerance_nm=8)
    matched = abs(shift) * 4.0 <= 8
    assert s["invented_nm"] == (0 if matched else Z * H * 5.0)
    assert s["erased_nm"] == (0 if matched else Z * H * 5.0)


@pytest.mark.parametrize("shift,tol,matched", [(2, 10.0, True), (3, 10.0, False), (3, 15.0, True), (1, 4.99, False)])
def test_tolerance_along_y_uses_the_y_resolution(shift, tol, matched):
    gt = np.ones((1, H, W), np.uint16)
    gt[:, 10:] = 2
    sr = np.ones_like(gt)
    sr[:, 10 + shift :] = 2
    s = boundary_scores(gt, sr, RES, tolerance_nm=tol)
    assert (s["invented_nm"] == 0) is matched and (s["erased_nm"] == 0) is matched
    if not matched:
        assert s["invented_nm"] == W * 4.0


def test_unlabelled_ground_truth_is_not_scored():
    gt = two_cells()
    gt[:, :, 36:] = 0  # unlabelled strip
    sr = np.ones_like(gt)
    sr[:, :, 8:] = 2
    sr[:, :, 40:] = 7  # a membrane inside the unlabelled strip: unknown, not invented
    s = boundary_scores(gt, sr, RES, tolerance_nm=0)
    assert s["invented_nm"] == 0 and s["erased_nm"] == 0
    assert s["reference_nm"] == Z * H * 5.0  # the change 2 -> 0 is not a ground-truth boundary


def test_boundary_lengths_and_error_maps():
    gt = two_cells()
    sr = gt.copy()
    sr[:, :, 30:] = 3
    sr[0, 5, 2] = 9  # one invented one-pixel object in cell 1, 20 nm around, 20-24 nm from x = 7
    lengths = boundary_lengths(sr[0], RES)
    assert lengths[5, 2] == 5.0 + 4.0 and lengths[5, 1] == 5.0 and lengths[4, 2] == 4.0
    invented, erased = boundary_error_maps(gt, sr, RES, tolerance_nm=16)
    assert invented.shape == gt.shape and not erased.any()
    assert invented[:, :, 29].all() and invented[:, :, :29].sum() == 3  # (5,1), (4,2), (5,2) of section 0
    s = boundary_scores(gt, sr, RES, tolerance_nm=16)
    total = sum((boundary_lengths(sr[z], RES)[invented[z]]).sum() for z in range(Z))
    assert s["invented_nm"] == total == Z * H * 5.0 + 2 * (5.0 + 4.0)
    inv2d, _ = boundary_error_maps(gt[0], sr[0], RES, tolerance_nm=16)
    np.testing.assert_array_equal(inv2d, invented[0])
    # At 20 nm the object's pixels 20 nm from the real boundary are matched; only (5, 1) stays.
    invented, _ = boundary_error_maps(gt, sr, RES, tolerance_nm=20)
    assert invented[:, :, :29].sum() == 1 and invented[0, 5, 1]


def test_orphan_fraction_by_iou():
    hr = np.zeros((2, 12, 12), np.uint32)
    hr[:, :, :4], hr[:, :, 4:8], hr[:, :, 8:] = 1, 2, 3
    hr[:, 0, :] = 0  # background row: never a segment, never a counterpart
    sr = hr.copy()
    sr[:, 1:5, 4:8] = 20  # segment 2 split 4:7 rows: IoU 4/11 (orphan) and 7/11 (kept)
    sr[:, 6:8, 9:11] = 30  # an invented 8-voxel object inside segment 3
    o = orphan_segments(hr, sr)
    assert o["sr_segments"] == 5 and o["orphan_segments"] == 2 and o["orphan_fraction"] == pytest.approx(0.4)
    assert sorted(o["orphan_ids"].tolist()) == [20, 30]
    assert orphan_segments(hr, sr, iou=0.3)["orphan_ids"].tolist() == [30]  # 4/11 = 0.36 >= 0.3
    sr[:, 0, :] = 40  # a segment made only of HR background has no counterpart
    assert 40 in orphan_segments(hr, sr)["orphan_ids"].tolist()


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: boundary_scores(np.ones((2, 4, 4), int), np.ones((2, 4, 5), int), RES, 8), "differ in shape"),
        (lambda: boundary_scores(np.ones((4, 4)), np.ones((4, 4), int), RES, 8), "integer label array"),
        (
            lambda: boundary_scores(np.ones((4, 4), int), np.ones((4, 4), int), RES, -1),
            "tolerance_nm must be a number >= 0",
        ),
        (lambda: boundary_scores(np.ones((4, 4), int), np.ones((4, 4), int), (4, 0), 8), "resolution must be"),
        (lambda: orphan_segments(np.ones((4, 4), int), np.ones((4, 4), int), iou=0), "iou must be a number in"),
    ],
)
def test_input_errors_are_one_line(call, message):
    with pytest.raises(EmsrError, match=message) as info:
        call()
    assert "\n" not in str(info.value)


# -- the workflow's score_hallucination step (emsrbench.segment.stage) -------------------------


def _stage_files(tmp_path, sr, hr=None, gt=None):
    import json

    from emsrbench.io import write_cremi

    gt = two_cells() if gt is None else gt
    raw = np.zeros(gt.shape, np.uint8)
    stats = {
        "stats": json.dumps(
            {"network": "toynet", "thresholds": [0.5], "scoring": "mean", "flags": ["flag: toy network"]}
        )
    }
    paths = {"gt": tmp_path / "test-0.h5", "sr": tmp_path / "sr.h5", "hr": tmp_path / "hr.h5"}
    write_cremi(paths["gt"], raw, gt, resolution=RES)
    write_cremi(paths["sr"], raw, extra={"volumes/segmentation": sr}, resolution=RES, attrs=stats)
    write_cremi(paths["hr"], raw, extra={"volumes/segmentation": gt if hr is None else hr}, resolution=RES, attrs=stats)
    return paths


def _stage_rows(paths, method="rcan", **kw):
    from emsrbench.segment.stage import RowIdentity, score_hallucination

    args = dict(
        row=RowIdentity(
            net="toynet",
            method=method,
            display_name=method.upper(),
            family="single-image",
            preset="quick",
            scale=8,
        ),
        tolerance_nm=20.0,
    )
    args.update(kw)
    return score_hallucination(paths["sr"], paths["hr"], paths["gt"], **args)


def test_stage_rows_have_units_that_compare_across_volumes(tmp_path):
    from emsrbench.evaluate import COLUMNS
    from emsrbench.segment.stage import HALLUCINATION_METRICS

    sr = two_cells()
    sr[:, :, 30:] = 3  # one invented membrane, 3 x 32 cracks of 5 nm = 480 nm; segment 3 is an orphan
    df = _stage_rows(_stage_files(tmp_path, sr), iou=0.5)
    assert list(df.columns) == COLUMNS and tuple(df["metric"]) == HALLUCINATION_METRICS
    assert set(df["segmenter"]) == {"toynet"} and set(df["scale"]) == {8} and set(df["method"]) == {"rcan"}
    v = dict(zip(df["metric"], df["value"]))
    area_um2 = Z * H * W * 5.0 * 4.0 / 1e6  # every pixel labelled
    assert v["boundary_precision"] == pytest.approx(0.5) and v["boundary_recall"] == 1
    assert v["invented_um_per_um2"] == pytest.approx(0.480 / area_um2) and v["erased_um_per_um2"] == 0
    # SR segments 1 (IoU 1), 2 (x 8-29 against HR 8-47: 22/40) and 3 (18/40 < 0.5): one orphan of three
    assert v["orphan_fraction"] == pytest.approx(1 / 3)
    notes = dict(zip(df["metric"], df["note"]))
    assert "tolerance 20 nm" in notes["boundary_precision"] and "480 of 960 nm invented" in notes["boundary_precision"]
    assert (
        "(480 nm)" in notes["invented_um_per_um2"] and "um^2 of labelled section area" in notes["invented_um_per_um2"]
    )
    assert "1 of 3 segments have no segment of IoU >= 0.5" in notes["orphan_fraction"]
    assert all(n.endswith("; flag: toy network") for n in df["note"])  # the segmenter's flags travel along
    # A volume twice as large with the same structure per area scores the same density.
    big = tmp_path / "big"
    big.mkdir()
    gt2, sr2 = np.concatenate([two_cells()] * 2), np.concatenate([sr] * 2)
    v2 = dict(zip(*_stage_rows(_stage_files(big, sr2, gt=gt2), iou=0.5)[["metric", "value"]].T.values))
    assert v2["invented_um_per_um2"] == pytest.approx(v["invented_um_per_um2"])
    # An orphan's IoU threshold is the configured one: at 0.4 segment 3 (0.45) has a counterpart.
    assert _stage_rows(_stage_files(tmp_path, sr), iou=0.4).set_index("metric").loc["orphan_fraction", "value"] == 0


def test_stage_erased_membrane_and_tolerance(tmp_path):
    gt = two_cells()
    sr = np.ones_like(gt)  # merges the two cells: the membrane at x = 7|8 is erased
    v = _stage_rows(_stage_files(tmp_path, sr)).set_index("metric")["value"]
    assert v["boundary_recall"] == 0 and v["boundary_precision"] == 1
    assert v["erased_um_per_um2"] == pytest.approx(0.480 / (Z * H * W * 20 / 1e6)) and v["invented_um_per_um2"] == 0
    shifted = gt.copy()
    shifted[:, :, 8:10] = 1  # the membrane moved by 2 px = 8 nm along x
    for tol, matched in ((8.0, True), (7.9, False)):
        v = _stage_rows(_stage_files(tmp_path, shifted), tolerance_nm=tol).set_index("metric")["value"]
        assert (v["boundary_precision"] == 1 and v["boundary_recall"] == 1) == matched, tol


def test_stage_hr_row_is_the_upper_bound_without_an_orphan_fraction(tmp_path):
    paths = _stage_files(tmp_path, two_cells())
    paths["hr"] = tmp_path / "absent.h5"  # HR's own row never reads an HR segmentation
    df = _stage_rows(paths, method="hr", hr_method="hr").set_index("metric")
    assert df.loc["boundary_precision", "value"] == 1 and df.loc["boundary_recall", "value"] == 1
    assert np.isnan(df.loc["orphan_fraction", "value"])  # not a fake 0
    assert df.loc["orphan_fraction", "note"].startswith("not applicable: the HR segmentation is the reference")


def test_stage_errors_name_the_file(tmp_path):
    paths = _stage_files(tmp_path, two_cells()[:, :, :40])
    with pytest.raises(
        EmsrError,
        match=r"sr\.h5:volumes/segmentation: shape \(3, 32, 40\) differs from the labels "
        r"\(3, 32, 48\) of .*test-0\.h5",
    ) as info:
        _stage_rows(paths)
    assert "\n" not in str(info.value)
    paths = _stage_files(tmp_path, two_cells())
    paths["hr"] = tmp_path / "segment" / "toynet" / "hr" / "x8.h5"
    with pytest.raises(
        EmsrError,
        match=r"hr/x8\.h5: the toynet segmentation of the HR volume \(method 'hr'\) "
        r"does not exist",
    ) as info:
        _stage_rows(paths)
    assert "\n" not in str(info.value)
    from emsrbench.io import write_cremi

    write_cremi(paths["sr"], np.zeros((Z, H, W), np.uint8), extra={"volumes/segmentation": two_cells()}, resolution=RES)
    with pytest.raises(EmsrError, match=r"sr\.h5: no 'stats' attribute \(not written by emsrbench segmentation\)"):
        _stage_rows(paths)
    write_cremi(
        paths["sr"],
        np.zeros((Z, H, W), np.uint8),
        extra={"volumes/segmentation": two_cells()},
        resolution=(40.0, 4.0, 4.0),
    )
    with pytest.raises(EmsrError, match=r"resolution \(40\.0, 4\.0, 4\.0\) nm differs from the labels'"):
        _stage_rows(paths)
