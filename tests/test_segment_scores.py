"""VOI split/merge, adapted Rand error and CREMI score: hand cases, scikit-image agreement, edge cases."""

from __future__ import annotations

import math
import warnings

import fastremap
import h5py
import numpy as np
import pytest
from skimage.metrics import adapted_rand_error, variation_of_information

from emsrbench.errors import EmsrError
from emsrbench.segment.scores import SCORE_KEYS, border_mask, contingency, segmentation_scores

TOL = 1e-9


def skimage_scores(gt, seg):
    """Our keys from scikit-image (which swaps precision and recall: its issue #6485)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split, merge = variation_of_information(gt, seg, ignore_labels=[0])
        are, sk_prec, sk_rec = adapted_rand_error(gt, seg, ignore_labels=(0,))
    return {"voi_split": split, "voi_merge": merge, "arand": are, "arand_precision": sk_rec, "arand_recall": sk_prec}


def assert_matches_skimage(ours, gt_small, seg_small):
    ref = skimage_scores(gt_small, seg_small)
    for key, value in ref.items():
        if math.isnan(value):
            assert math.isnan(ours[key]), key
        else:
            assert ours[key] == pytest.approx(value, abs=TOL), key
    assert ours["voi_sum"] == pytest.approx(ref["voi_split"] + ref["voi_merge"], abs=TOL)


def random_pair(rng, shape, n_gt, n_seg, dtype=np.uint64):
    gt = rng.integers(0, n_gt, shape).astype(dtype)
    seg = rng.integers(0, n_seg, shape).astype(dtype)
    return gt, seg


# ------------------------------------------------------------------ hand-computed cases
def test_hand_merge_of_two_cells():
    gt = np.array([[1, 1, 2, 2]], np.uint64)
    seg = np.array([[7, 7, 7, 7]], np.uint64)
    s = segmentation_scores(gt, seg)
    assert s["voi_split"] == 0.0
    assert s["voi_merge"] == pytest.approx(1.0)  # one bit: which of two equal cells
    # pairs (ordered, distinct): both 4, gt 4, seg 12
    assert s["arand_precision"] == pytest.approx(4 / 12)
    assert s["arand_recall"] == pytest.approx(1.0)
    assert s["arand"] == pytest.approx(0.5)
    assert s["cremi_score"] == pytest.approx(math.sqrt(0.5))
    assert s["voxels"] == 4


def test_hand_split_into_singletons():
    gt = np.ones((1, 2, 2), np.uint32)
    seg = np.arange(4, dtype=np.uint32).reshape(1, 2, 2)  # seg 0 is an ordinary label
    s = segmentation_scores(gt, seg)
    assert s["voi_split"] == pytest.approx(2.0)
    assert s["voi_merge"] == 0.0
    assert s["arand"] == pytest.approx(1.0)
    assert s["arand_recall"] == 0.0
    assert math.isnan(s["arand_precision"])  # no pair joined in seg: 0/0


def test_ground_truth_zero_ignored_segmentation_zero_counted():
    gt = np.array([[0, 0, 1, 1, 2, 2]], np.uint64)
    perfect = np.array([[5, 6, 3, 3, 4, 4]], np.uint64)
    s = segmentation_scores(gt, perfect)
    assert (s["voi_split"], s["voi_merge"], s["arand"], s["cremi_score"]) == (0.0, 0.0, 0.0, 0.0)
    assert s["voxels"] == 4
    zero_seg = np.array([[1, 2, 0, 0, 0, 0]], np.uint64)  # label 0 merges both cells
    s = segmentation_scores(gt, zero_seg)
    assert s["voi_merge"] == pytest.approx(1.0) and s["voi_split"] == 0.0


def test_perfect_match_is_exactly_zero_and_label_permutation_invariant():
    rng = np.random.default_rng(3)
    gt = rng.integers(1, 50, (4, 30, 30)).astype(np.uint64)
    perm = rng.permutation(1000)[:50].astype(np.uint64)
    s = segmentation_scores(gt, perm[gt])
    assert all(s[k] == 0.0 for k in ("voi_split", "voi_merge", "voi_sum", "arand", "cremi_score"))
    assert math.copysign(1.0, s["voi_sum"]) == 1.0  # not -0.0


# ------------------------------------------------------------------ scikit-image agreement
@pytest.mark.parametrize("seed", range(8))
def test_random_volumes_match_skimage(seed):
    rng = np.random.default_rng(seed)
    shape = tuple(int(v) for v in rng.integers(1, 25, 3))
    gt, seg = random_pair(rng, shape, int(rng.integers(1, 12)), int(rng.integers(1, 12)))
    chunk = int(rng.integers(1, 3000))  # several z-chunks
    ours = segmentation_scores(gt, seg, chunk_voxels=chunk, threads=int(rng.integers(1, 3)))
    assert set(SCORE_KEYS) <= set(ours)
    assert_matches_skimage(ours, gt, seg)


def test_structured_volume_matches_skimage():
    """Blocky labels (long runs, as in real volumes) with label 0 in both volumes."""
    rng = np.random.default_rng(11)
    coarse = rng.integers(0, 40, (6, 8, 8)).astype(np.uint64)
    gt = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2)
    seg = gt.copy()
    seg[:, :, 30:] += 100  # splits
    seg[seg % 7 == 3] = 0  # merges into segmentation label 0
    seg[:, 10:12] = 5  # a band of one segment across cells
    assert (gt == 0).any() and (seg == 0).any()
    for chunk in (1, 64 * 64, 10**9):
        assert_matches_skimage(segmentation_scores(gt, seg, chunk_voxels=chunk), gt, seg)


def test_two_dimensional_input_is_one_section():
    rng = np.random.default_rng(5)
    gt, seg = random_pair(rng, (17, 23), 6, 6, np.uint16)
    assert segmentation_scores(gt, seg) == segmentation_scores(gt[None], seg[None])
    assert_matches_skimage(segmentation_scores(gt, seg), gt, seg)


@pytest.mark.parametrize("base", [2**63 - 5, 2**64 - 40, 10**11])
def test_huge_uint64_ids_match_skimage_on_relabelled_copy(base):
    rng = np.random.default_rng(7)
    gt_small, seg_small = random_pair(rng, (5, 20, 20), 8, 9)
    # ids near 2**63 / 2**64 - 1 / CREMI-like 1e11; 0 stays 0
    gt = np.where(gt_small == 0, 0, gt_small + np.uint64(base)).astype(np.uint64)
    seg = np.where(seg_small == 0, 0, np.uint64(base + 30) - seg_small).astype(np.uint64)
    ours = segmentation_scores(gt, seg, chunk_voxels=500)
    gt_r, _ = fastremap.renumber(gt, preserve_zero=True, in_place=False)
    seg_r, _ = fastremap.renumber(seg, preserve_zero=True, in_place=False)
    assert_matches_skimage(ours, gt_r, seg_r)
    assert_matches_skimage(ours, gt_small, seg_small)  # same partitions
    table = contingency(gt, seg)
    assert table.gt_ids.dtype == np.uint64 and table.seg_ids.dtype == np.uint64
    assert set(table.gt_ids.tolist()) == set(np.unique(gt).tolist())  # exact ids, no float rounding
    assert set(table.seg_ids.tolist()) == set(np.unique(seg).tolist())


def test_mixed_dtypes_and_signed_labels():
    rng = np.random.default_rng(8)
    gt, seg = random_pair(rng, (3, 15, 15), 7, 7)
    ours = segmentation_scores(gt.astype(np.int64) - 3, seg.astype(np.uint8))
    shifted = gt.astype(np.int64) - 3
    ref_gt, _ = fastremap.renumber(shifted, preserve_zero=True, in_place=False)
    assert_matches_skimage(ours, ref_gt.astype(np.uint64), seg)


# ------------------------------------------------------------------ contingency table
def test_contingency_table_counts_and_order():
    gt = np.array([[[0, 1, 1], [2, 2, 2]]], np.uint64)
    seg = np.array([[[9, 9, 3], [3, 3, 0]]], np.uint32)
    t = contingency(gt, seg)
    assert t.gt_ids.tolist() == [0, 1, 1, 2, 2]
    assert t.seg_ids.tolist() == [9, 3, 9, 0, 3]
    assert t.counts.tolist() == [1, 1, 1, 1, 2]
    assert t.voxels == 6 and t.scored().voxels == 5
    assert t.seg_ids.dtype == np.uint32


def test_chunks_threads_and_datasets_agree(tmp_path):
    rng = np.random.default_rng(9)
    coarse = rng.integers(0, 30, (12, 10, 10)).astype(np.uint64)
    gt = np.repeat(np.repeat(coarse, 4, 1), 4, 2)
    seg = np.roll(gt, 3, axis=2) * np.uint64(3) + (rng.random(gt.shape) < 0.05)
    whole = contingency(gt, seg, chunk_voxels=10**9, threads=1)
    for chunk, threads in ((1, 1), (1600, 2), (5000, 2)):
        part = contingency(gt, seg, chunk_voxels=chunk, threads=threads)
        for a, b in ((whole.gt_ids, part.gt_ids), (whole.seg_ids, part.seg_ids), (whole.counts, part.counts)):
            np.testing.assert_array_equal(a, b)
    path = tmp_path / "pair.h5"
    with h5py.File(path, "w") as f:
        f["gt"], f["seg"] = gt, seg
    with h5py.File(path, "r") as f:
        from_h5 = segmentation_scores(f["gt"], f["seg"], chunk_voxels=800)
    assert from_h5 == segmentation_scores(gt, seg)


# ------------------------------------------------------------------ empty overlap and errors
def test_empty_overlap_gives_nan_scores_and_zero_voxels():
    gt = np.zeros((2, 5, 5), np.uint64)
    seg = np.arange(50, dtype=np.uint64).reshape(2, 5, 5)
    s = segmentation_scores(gt, seg)
    assert s["voxels"] == 0
    assert all(math.isnan(s[k]) for k in SCORE_KEYS)
    empty = segmentation_scores(np.zeros((0, 4, 4), np.uint64), np.zeros((0, 4, 4), np.uint64))
    assert empty["voxels"] == 0 and math.isnan(empty["voi_sum"])


def test_bad_inputs_raise_one_line_errors():
    a = np.zeros((2, 4, 4), np.uint64)
    with pytest.raises(EmsrError, match="shapes differ"):
        segmentation_scores(a, np.zeros((2, 4, 5), np.uint64), where="sr.h5")
    with pytest.raises(EmsrError, match="integer labels"):
        segmentation_scores(a, a.astype(np.float32))
    with pytest.raises(EmsrError, match="resolution"):
        segmentation_scores(a, a, border_nm=50)
    with pytest.raises(EmsrError, match="border_nm"):
        segmentation_scores(a, a, resolution=(40, 4, 4), border_nm=-1)
    with pytest.raises(EmsrError) as err:
        segmentation_scores(a, np.zeros((3, 4, 4), np.uint64), where="results/x.h5:volumes/labels")
    assert "\n" not in str(err.value) and str(err.value).startswith("results/x.h5:volumes/labels")


# ------------------------------------------------------------------ CREMI border mask
def two_cells(h=20, w=20, split=10):
    sec = np.ones((h, w), np.uint64)
    sec[:, split:] = 2
    return sec


def test_border_mask_two_cells():
    sec = two_cells()
    # 4 nm pixels, 8 nm threshold: boundary columns 9 and 10 (distance 0) and 2 more on each side
    mask = border_mask(sec, 8.0, (40, 4, 4))
    assert mask.dtype == bool and mask.shape == sec.shape
    expected_cols = np.zeros(20, bool)
    expected_cols[7:13] = True
    np.testing.assert_array_equal(mask, np.broadcast_to(expected_cols, sec.shape))
    # 0 nm: only the boundary pixels themselves; the image edge is no boundary
    np.testing.assert_array_equal(border_mask(sec, 0, (40, 4, 4))[0], (np.arange(20) == 9) | (np.arange(20) == 10))
    # anisotropic: x pixels of 2 nm -> 8 nm is 4 pixels each side
    assert border_mask(sec, 8.0, (40, 4, 2))[0].sum() == 10
    # one label: nothing masked
    assert not border_mask(np.ones((3, 6, 6), np.uint64), 100.0, (40, 4, 4)).any()


def test_border_mask_matches_cremi_definition_in_pixels():
    """CREMI: interior = all 4 neighbours equal (edge-padded); masked = EDT(interior) <= nm / pixel size."""
    from scipy import ndimage

    rng = np.random.default_rng(4)
    coarse = rng.integers(0, 6, (3, 7, 9)).astype(np.uint64)
    gt = np.repeat(np.repeat(coarse, 9, 1), 7, 2)
    for nm in (0, 4, 10, 30):
        for z in range(gt.shape[0]):
            p = np.pad(gt[z], 1, mode="edge")
            c = p[1:-1, 1:-1]
            interior = (c == p[:-2, 1:-1]) & (c == p[2:, 1:-1]) & (c == p[1:-1, :-2]) & (c == p[1:-1, 2:])
            ref = ndimage.distance_transform_edt(interior) <= nm / 4.0
            np.testing.assert_array_equal(border_mask(gt, nm, (40, 4, 4))[z], ref)


def test_border_mask_is_per_section_and_applied_to_scores():
    gt = np.stack([two_cells(), two_cells(split=5)])
    assert border_mask(gt, 4.0, (40, 4, 4))[1, 0].tolist() == [False] * 3 + [True] * 4 + [False] * 13
    # a segmentation that errs only within 8 nm of the boundary
    seg = gt.copy()
    seg[0, :, 8] = 2
    seg[0, :, 11] = 1
    seg[1, :, 6] = 7
    loose = segmentation_scores(gt, seg)
    assert loose["voi_sum"] > 0.1
    masked = segmentation_scores(gt, seg, resolution=(40, 4, 4), border_nm=8)
    assert masked["voi_sum"] == 0.0 and masked["arand"] == 0.0
    assert masked["voxels"] == gt.size - border_mask(gt, 8, (40, 4, 4)).sum()
    # the mask is taken from the ground truth only: same as scoring a blanked ground truth
    blanked = gt.copy()
    blanked[border_mask(gt, 8, (40, 4, 4))] = 0
    assert segmentation_scores(blanked, seg) == masked
    # a mask that blanks everything: empty overlap
    everything = segmentation_scores(gt, seg, resolution=(40, 4, 4), border_nm=1000)
    assert everything["voxels"] == 0 and math.isnan(everything["voi_sum"])
