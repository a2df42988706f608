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


# ---------------------------------------------------------------------------------------------
# ground truth labelled per section (ISBI 2012 and other ssTEM stacks; issue 12, part 8)


def per_section_volume(rng, depth=4, size=24):
    """Ground truth whose ids never repeat across sections (every section labelled on its own,
    some background 0), and a segmentation whose ids continue through z, as a 3D segmenter's do,
    with label 0 used in several sections."""
    blocks = rng.integers(1, 5, (depth, size // 4, size // 4))
    gt = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2).astype(np.uint64)
    gt += (np.arange(depth, dtype=np.uint64) * 10)[:, None, None]  # ids 1-4, 11-14, 21-24, ...
    gt[:, :3, :5] = 0
    seg = np.repeat(np.repeat(blocks, 4, axis=1), 4, axis=2).astype(np.uint64)  # linked along z
    noise = rng.random(seg.shape)
    seg[noise < 0.08] = 0
    seg[noise > 0.95] = 9
    return gt, seg


def summed_section_table_scores(gt, seg):
    """The per-section definition computed independently: scikit-image's contingency table of
    each section (ground truth 0 ignored), the tables put block-diagonally (every section's
    objects distinct) and summed into one table; VOI and adapted Rand error by their formulas."""
    from scipy.sparse import block_diag
    from skimage.metrics import contingency_table

    tables = [contingency_table(gt[z], seg[z], ignore_labels=[0]) for z in range(gt.shape[0])]
    n = block_diag(tables).tocsr().astype(np.float64)
    n.eliminate_zeros()
    total = n.sum()
    a = np.asarray(n.sum(axis=1)).ravel()
    b = np.asarray(n.sum(axis=0)).ravel()
    coo = n.tocoo()
    nij = coo.data
    voi_split = -np.sum(nij / total * np.log2(nij / a[coo.row]))
    voi_merge = -np.sum(nij / total * np.log2(nij / b[coo.col]))
    both, pairs_gt, pairs_seg = np.sum(nij**2) - total, np.sum(a**2) - total, np.sum(b**2) - total
    precision, recall = both / pairs_seg, both / pairs_gt
    return {
        "voi_split": voi_split,
        "voi_merge": voi_merge,
        "arand": 1 - 2 * precision * recall / (precision + recall),
        "arand_precision": precision,
        "arand_recall": recall,
    }


def test_per_section_scores_equal_the_summed_section_tables():
    from emsrbench.segment.scores import PerSectionIds

    gt, seg = per_section_volume(np.random.default_rng(5))
    ours = segmentation_scores(PerSectionIds(gt, background_zero=True), PerSectionIds(seg, background_zero=False))
    ref = summed_section_table_scores(gt, seg)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key
    assert ours["voxels"] == np.count_nonzero(gt)
    as_3d = segmentation_scores(gt, seg)  # what scoring as 3D reports: every continuing segment a merge
    assert as_3d["voi_merge"] > ours["voi_merge"] + 0.5


def test_per_section_border_mask_is_the_one_of_the_original_labels():
    from emsrbench.segment.scores import PerSectionIds

    gt, seg = per_section_volume(np.random.default_rng(6))
    ours = segmentation_scores(
        PerSectionIds(gt, background_zero=True),
        PerSectionIds(seg, background_zero=False),
        resolution=(40, 4, 4),
        border_nm=4.0,
    )
    masked = gt.copy()
    masked[border_mask(gt, 4.0, (40, 4, 4))] = 0
    ref = summed_section_table_scores(masked, seg)
    assert ours["voxels"] == np.count_nonzero(masked) < np.count_nonzero(gt)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, abs=TOL), key


def test_per_section_ids_are_unique_per_section_one_to_one_and_cannot_overflow():
    from emsrbench.segment.scores import PerSectionIds

    top = np.uint64(2**64 - 1)
    labels = np.array([[[0, top], [5, 5]], [[top, 0], [7, 5]], [[0, 0], [0, 0]]], dtype=np.uint64)
    for background_zero in (True, False):
        view = PerSectionIds(labels, background_zero=background_zero)
        whole = view[:]
        assert whole.dtype == np.uint64 and whole.shape == labels.shape and whole.max() <= labels.size
        np.testing.assert_array_equal(view[1:3], whole[1:3])  # a z-range sees the same ids
        for z in range(labels.shape[0]):
            pairs = set(zip(labels[z].ravel().tolist(), whole[z].ravel().tolist()))
            assert len(pairs) == len({o for o, _ in pairs}) == len({n for _, n in pairs})  # one-to-one
        sections = [set(whole[z].ravel().tolist()) - {0} for z in range(labels.shape[0])]
        assert not (sections[0] & sections[1]) and not (sections[1] & sections[2])
        assert ((whole == 0) == (labels == 0)).all() if background_zero else (whole != 0).all()
    with pytest.raises(TypeError, match="z-ranges"):
        PerSectionIds(labels, background_zero=True)[0]


@pytest.mark.parametrize(
    "sections, expected",
    [
        ([[1, 2], [3, 4], [0, 5]], "per_section"),  # no id in two sections
        ([[1, 2], [2, 3], [4, 5]], "3d"),  # id 2 continues into the next section
        ([[1, 2]], "3d"),  # one section: cannot tell, 3D
        ([[1, 2], [0, 0], [0, 0]], "3d"),  # one labelled section
        ([[0, 0], [0, 0]], "3d"),  # nothing labelled
        ([[0, 0], [0, 3], [0, 0]], "3d"),
        ([[7, 0], [0, 0], [0, 8]], "per_section"),
    ],
)
def test_gt_labels_mode_detection(sections, expected):
    from emsrbench.segment.scores import gt_labels_mode

    gt = np.asarray(sections, dtype=np.uint64)[:, :, None]
    mode, why = gt_labels_mode(gt, "auto")
    assert mode == expected and why.startswith("auto:")


def test_gt_labels_mode_setting_overrides_detection():
    from emsrbench.segment.scores import gt_labels_mode

    linked = np.ones((3, 2, 2), np.uint64)
    per_section = np.arange(1, 13, dtype=np.uint64).reshape(3, 2, 2)
    assert gt_labels_mode(linked, "per_section") == ("per_section", "set in the config")
    assert gt_labels_mode(per_section, "3d") == ("3d", "set in the config")
    with pytest.raises(EmsrError) as info:
        gt_labels_mode(linked, "2d", where="config: segmentation.gt_labels")
    assert "\n" not in str(info.value) and "'2d'" in str(info.value) and "per_section" in str(info.value)


def _segmentation_file(path, seg):
    import json

    with h5py.File(path, "w") as f:
        f.attrs["stats"] = json.dumps({"thresholds": [0.5], "scoring": "mean", "device": "cpu", "flags": []})
        f["volumes/segmentations/0.5"] = seg
    return path


@pytest.mark.parametrize("border_nm", [None, 4.0])
def test_score_volume_scores_per_section_labels_per_section(tmp_path, border_nm):
    from emsrbench.io import write_cremi
    from emsrbench.segment.stage import RowIdentity, score_volume
    from emsrbench.stats import BootstrapSettings, sidecar

    gt, seg = per_section_volume(np.random.default_rng(7))
    gt_path = tmp_path / "test.h5"
    write_cremi(gt_path, np.zeros(gt.shape, np.uint8), gt, resolution=(40, 4, 4))
    seg_path = _segmentation_file(tmp_path / "seg.h5", seg)
    args = dict(
        row=RowIdentity(net="mala", method="rcan", display_name="RCAN", family="single-image", preset="quick", scale=8),
        border_nm=border_nm,
    )
    rows, sweep = score_volume(
        seg_path,
        gt_path,
        **args,
        intervals=BootstrapSettings.merged({"resamples": 200, "sections_per_slab": 1}),
        sidecar_path=tmp_path / "boot.npz",
    )
    rows = rows.set_index("metric")
    masked = gt.copy()
    if border_nm is not None:
        masked[border_mask(gt, border_nm, (40, 4, 4))] = 0
    ref = summed_section_table_scores(masked, seg)
    car = sidecar.read(tmp_path / "boot.npz")
    for m in ("voi_split", "voi_merge", "arand"):
        assert rows.loc[m, "value"] == pytest.approx(ref[m], abs=TOL), m
        assert car.reps[m].estimate == pytest.approx(ref[m], abs=TOL), m  # the slab bootstrap of the same volume
        assert "GT labels per section (auto: no id occurs in two of the 4 labelled sections)" in rows.loc[m, "note"]
    assert sweep["gt_labels"].tolist() == ["per_section"]
    rows, sweep = score_volume(seg_path, gt_path, **args, gt_labels="3d")
    rows = rows.set_index("metric")
    as_3d = segmentation_scores(gt, seg, resolution=(40, 4, 4), border_nm=border_nm)
    assert rows.loc["voi_merge", "value"] == pytest.approx(as_3d["voi_merge"], abs=TOL)
    assert rows["note"].str.contains("GT labels 3D (set in the config)", regex=False).all()
    assert sweep["gt_labels"].tolist() == ["3d"]


def test_isbi2012_labels_are_detected_per_section():
    """The real per-section ground truth in tests/data (ISBI 2012, 2D connected components)."""
    from pathlib import Path

    from emsrbench.segment.scores import gt_labels_mode

    path = Path(__file__).parent / "data" / "isbi2012_train.h5"
    with h5py.File(path, "r") as f:
        labels = f["volumes/labels/neuron_ids_2d"]
        assert gt_labels_mode(labels, "auto")[0] == "per_section"  # read section by section from the file
        linked = np.repeat(labels[0:1], 3, axis=0)  # the same section thrice: ids continue through z
    assert gt_labels_mode(linked, "auto")[0] == "3d"
