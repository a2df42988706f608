"""Affinity targets, class-balancing weights, and the study's fragments + waterz agglomeration."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from emsrbench import phantom
from emsrbench.errors import EmsrError
from emsrbench.segment.affinities import affinities_from_labels, class_balance_weights, widen_borders
from emsrbench.segment.agglomerate import (
    agglomerate,
    as_uint32_labels,
    boundary_map,
    fragments,
    iter_agglomerate,
    segment,
)
from emsrbench.segment.scores import segmentation_scores

ISBI = Path(__file__).resolve().parent / "data" / "isbi2012_train.h5"


@pytest.fixture(scope="module")
def phantom_labels():
    _, labels = phantom.generate((8, 128, 128), seed=0)
    return labels


@pytest.fixture(scope="module")
def phantom_case(phantom_labels):
    affs = affinities_from_labels(phantom_labels)
    return phantom_labels, affs, fragments(affs)


# ------------------------------------------------------------------ affinities
def test_affinities_hand_case():
    labels = np.array([[[1, 1, 2, 2, 0, 0]], [[1, 3, 2, 2, 0, 0]]], np.uint64)  # (2, 1, 6)
    affs = affinities_from_labels(labels, widen=False)
    assert affs.shape == (3, 2, 1, 6) and affs.dtype == np.float32 and affs.flags.c_contiguous
    np.testing.assert_array_equal(affs[2, 0, 0], [0, 1, 0, 1, 0, 0])  # x: same non-zero label as x-1
    np.testing.assert_array_equal(affs[2, 1, 0], [0, 0, 0, 1, 0, 0])
    np.testing.assert_array_equal(affs[0, 0, 0], [0] * 6)  # first section: no predecessor
    np.testing.assert_array_equal(affs[0, 1, 0], [1, 0, 1, 1, 0, 0])  # z: label 0 never connects
    assert not affs[1].any()  # y has one row


def test_widen_borders_two_pixel_band_and_background():
    sec = np.ones((5, 8), np.uint64)
    sec[:, 4:] = 2
    sec[0, 0] = 0
    w = widen_borders(sec)
    assert w.dtype == sec.dtype and w.shape == sec.shape
    np.testing.assert_array_equal(w[2], [1, 1, 1, 0, 0, 2, 2, 2])  # both sides lose one pixel
    assert w[0, 0] == 0 and w[0, 1] == 1 and w[1, 0] == 1  # label 0 widens nothing
    np.testing.assert_array_equal(widen_borders(sec, radius=0), sec)
    assert (widen_borders(sec, radius=2)[2] == 0).sum() == 4
    # diagonal contact counts (3x3 window, Lee et al. / PyTorch-connectomics)
    diag = np.array([[1, 0], [0, 2]], np.uint64)
    np.testing.assert_array_equal(widen_borders(diag), np.zeros((2, 2), np.uint64))
    # sections are independent: z contacts do not widen
    vol = np.stack([np.ones((4, 4), np.uint64), np.full((4, 4), 2, np.uint64)])
    np.testing.assert_array_equal(widen_borders(vol), vol)
    assert sec[2, 3] == 1  # the input is left alone


def test_affinities_use_widened_borders():
    sec = np.ones((1, 4, 8), np.uint64)
    sec[..., 4:] = 2
    affs = affinities_from_labels(sec)
    np.testing.assert_array_equal(affs[2, 0, 1], [0, 1, 1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(affinities_from_labels(sec, widen=False)[2, 0, 1], [0, 1, 1, 1, 0, 1, 1, 1])


def test_class_balance_weights():
    affs = np.zeros((3, 2, 4, 4), np.float32)
    affs[0, :, :1] = 1  # 25 % positive
    affs[1] = 1  # one class only
    affs[2, 0, 0, 0] = 1  # 1/32 positive: clipped
    w = class_balance_weights(affs, max_weight=10)
    assert w.shape == affs.shape and w.dtype == np.float32
    assert w[0][affs[0] > 0.5][0] == pytest.approx(0.5 / 0.25)
    assert w[0][affs[0] <= 0.5][0] == pytest.approx(0.5 / 0.75)
    assert w[0].mean() == pytest.approx(1.0)
    assert w[0][affs[0] > 0.5].sum() == pytest.approx(w[0][affs[0] <= 0.5].sum())  # each class half
    assert (w[1] == 1).all()
    assert w[2, 0, 0, 0] == 10 and w[2, 1, 0, 0] == pytest.approx(0.5 * 32 / 31)
    batched = class_balance_weights(np.stack([affs, 1 - affs]), max_weight=10)
    np.testing.assert_allclose(batched[0], w)
    mask = np.zeros((2, 4, 4))
    mask[0] = 1
    wm = class_balance_weights(affs, mask=mask)
    assert (wm[:, 1] == 0).all() and wm[0, 0].mean() == pytest.approx(1.0)


# ------------------------------------------------------------------ fragments
def test_fragments_unique_across_sections(phantom_case):
    labels, affs, frags = phantom_case
    assert frags.dtype == np.uint64 and frags.shape == labels.shape and frags.min() >= 1
    ids = [set(np.unique(f).tolist()) for f in frags]
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    assert set().union(*ids) == set(range(1, int(frags.max()) + 1))  # consecutive from 1
    np.testing.assert_array_equal(fragments(affs, threads=1), frags)  # threads do not matter
    # 2D fragments do not cross cells (interior of the widened labels)
    wl = widen_borders(labels)
    s = segmentation_scores(wl, frags)
    assert s["voi_merge"] < 0.01


def test_fragments_of_a_section_without_seeds():
    affs = np.zeros((3, 2, 16, 16), np.float32)  # boundary everywhere
    affs[1:, 1] = 1.0
    frags = fragments(affs)
    assert (frags[0] == 1).all() and frags[1].min() >= 2
    np.testing.assert_allclose(boundary_map(affs)[0], 1.0)


# ------------------------------------------------------------------ agglomeration
def test_phantom_reaches_near_zero_voi(phantom_case):
    labels, affs, frags = phantom_case
    seg, quant = agglomerate(affs, frags, 0.5), agglomerate(affs, frags, 0.5, scoring="quantile50")
    for s in (seg[0], quant[0]):
        assert s.dtype == np.uint64 and s.shape == labels.shape
        inner = segmentation_scores(widen_borders(labels), s)  # the cells the affinities define
        assert inner["voi_sum"] < 0.01 and inner["arand"] < 0.001
        # the full labels: only the 1-pixel slivers on each side of a boundary are lost
        full = segmentation_scores(labels, s)
        assert full["voi_sum"] < 0.3 and full["arand"] < 0.02
        cremi = segmentation_scores(labels, s, resolution=(40, 4, 4), border_nm=8)
        assert cremi["voi_sum"] < 0.01
    assert len(np.unique(seg[0])) < len(np.unique(frags)) / 10


def test_isbi_2d_labels_reach_near_zero_voi():
    with h5py.File(ISBI, "r") as f:
        labels = f["volumes/labels/neuron_ids_2d"][:8]
    affs = affinities_from_labels(labels)
    (seg,) = segment(affs, [0.5])
    s = segmentation_scores(labels, seg)
    assert s["voi_sum"] < 0.1 and s["voi_merge"] < 0.01 and s["arand"] < 0.02


def test_thresholds_give_independent_copies_in_caller_order(phantom_case):
    labels, affs, frags = phantom_case
    before = frags.copy()
    thresholds = [0.7, 0.1, 0.5, 0.7]
    segs = agglomerate(affs, frags, thresholds)
    np.testing.assert_array_equal(frags, before)  # the fragments are left alone
    assert len(segs) == 4
    for i, a in enumerate(segs):
        assert not np.shares_memory(a, frags)
        for b in segs[i + 1 :]:
            assert not np.shares_memory(a, b)
    counts = [len(np.unique(s)) for s in segs]
    assert counts[1] > counts[2] >= counts[0] == counts[3]  # more merging at higher thresholds
    np.testing.assert_array_equal(segs[0], segs[3])
    for t, s in zip(thresholds, segs):
        np.testing.assert_array_equal(s, agglomerate(affs, frags, [t])[0])
    seen = [t for t, _ in iter_agglomerate(affs, frags, thresholds)]
    assert seen == [0.1, 0.5, 0.7]
    segs[2][:] = 0  # writing one result does not touch another
    assert segs[0].any() and segs[1].any()


def test_noisy_affinities_still_segment(phantom_labels):
    rng = np.random.default_rng(0)
    affs = affinities_from_labels(phantom_labels)
    affs = np.clip(affs + rng.normal(0, 0.15, affs.shape).astype(np.float32), 0, 1)
    (seg,) = segment(affs, 0.5)
    assert segmentation_scores(widen_borders(phantom_labels), seg)["voi_sum"] < 0.5


def test_bad_arguments():
    affs = np.zeros((3, 2, 8, 8), np.float32)
    with pytest.raises(EmsrError, match="shape"):
        fragments(affs[:2])
    with pytest.raises(EmsrError, match="scoring"):
        agglomerate(affs, np.ones((2, 8, 8), np.uint64), scoring="best")
    with pytest.raises(EmsrError, match="fragments shape"):
        agglomerate(affs, np.ones((2, 8, 9), np.uint64))
    bad = affs.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(EmsrError, match="NaN"):
        fragments(bad)
    with pytest.raises(EmsrError, match="thresholds"):
        agglomerate(affs, np.ones((2, 8, 8), np.uint64), [])


def test_as_uint32_labels():
    small = np.array([0, 5, 2**32 - 1], np.uint64)
    assert as_uint32_labels(small).tolist() == [0, 5, 2**32 - 1]
    big = np.array([[0, 2**40, 7], [2**63 + 1, 2**40, 0]], np.uint64)
    out = as_uint32_labels(big)
    assert out.dtype == np.uint32 and out[0, 0] == 0 and out[1, 2] == 0
    assert out[0, 1] == out[1, 1] and len({out[0, 1], out[0, 2], out[1, 0]}) == 3 and out.min() == 0
    assert segmentation_scores(big, big) == segmentation_scores(out, big)
