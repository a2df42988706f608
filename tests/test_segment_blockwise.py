"""Blockwise affinity inference: equal to one whole-volume pass where both fit, Gaussian
blending, streaming to HDF5, and geometry errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from emsrbench.errors import EmsrError
from emsrbench.segment import mala, superhuman
from emsrbench.segment.blockwise import BlockSpec, gaussian_window, predict_affinities

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def raw():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (5, 50, 47), dtype=np.uint8)


def whole_pass(model, raw, spec):
    """One forward pass over the whole padded input the block grid reads, cropped to the volume."""
    padded = torch.from_numpy(spec.padded_raw(raw)).float().div(255)[None, None]
    with torch.no_grad():
        y = model.eval()(padded)[0].numpy()
    (pz, py, px), (z, h, w) = spec.pad, raw.shape
    return y[:, pz : pz + z, py : py + h, px : px + w]


def test_valid_network_blockwise_equals_whole_volume(raw):
    """MALA (valid convs, two (1,3,3) poolings): 3x3 lateral blocks and 3 rows along z on the
    pooling grid give exactly the whole-volume prediction."""
    torch.manual_seed(0)
    model = mala.build(fmaps=[3, 4, 5], z_kernels=[3, 1, 1])
    in_shape, out_shape = mala.shapes(model, [2, 20, 20])
    spec = BlockSpec.make(in_shape, out_shape, stride=None, factor=model.factor)
    assert spec.stride == (2, 18, 18) and spec.grid(raw.shape)[0] == (3, 3, 3)
    blockwise = predict_affinities(model, raw, spec, CPU, batch=2)
    whole = whole_pass(model, raw, spec)
    assert blockwise.shape == (3,) + raw.shape and blockwise.dtype == np.float32
    np.testing.assert_allclose(blockwise, whole, atol=1e-5, rtol=0)


def test_overlapping_blocks_with_padding_equal_whole_volume_for_a_local_model(raw):
    """Overlap + reflect padding + Gaussian blending of a network whose receptive field is
    one voxel: the normalised blend is exactly the whole-volume output."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 3, 1), nn.Sigmoid())
    spec = BlockSpec.make((3, 16, 16), (3, 16, 16), stride=(2, 7, 5), pad=(1, 4, 3))
    blockwise = predict_affinities(model, raw, spec, CPU, batch=3)
    np.testing.assert_allclose(blockwise, whole_pass(model, raw, spec), atol=1e-6, rtol=0)


def test_zero_padded_network_in_one_block_equals_whole_volume(raw, tmp_path):
    """Superhuman with the volume inside one block: the study's padding, result streamed into
    an HDF5 dataset."""
    torch.manual_seed(0)
    model = superhuman.build(filters=[3, 4, 5])
    block = (8, 64, 64)
    spec = BlockSpec.make(block, block, stride=block, pad=(1, 4, 4), factor=model.factor)
    assert spec.grid(raw.shape)[0] == (1, 1, 1)
    whole = whole_pass(model, raw, spec)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("affs", shape=(3,) + raw.shape, dtype=np.float32)
        predict_affinities(model, raw, spec, CPU, out=ds)
        np.testing.assert_allclose(ds[...], whole, atol=1e-5, rtol=0)


def test_zero_padded_network_over_many_blocks_is_close_and_blended(raw):
    """Several blocks of a zero-padded network differ from one pass only near block borders
    (where zero padding differs), and the blend is finite and in [0, 1]."""
    torch.manual_seed(0)
    model = superhuman.build(filters=[3, 4, 5])
    spec = BlockSpec.make((4, 32, 32), (4, 32, 32), stride=(2, 16, 16), pad=(1, 8, 8), factor=model.factor)
    blockwise = predict_affinities(model, raw, spec, CPU, batch=4)
    whole = whole_pass(model, raw, spec)
    assert np.isfinite(blockwise).all() and 0 <= blockwise.min() and blockwise.max() <= 1
    assert np.abs(blockwise - whole).mean() < 0.02


def test_gaussian_window():
    w = gaussian_window((3, 8, 9))
    assert w.shape == (3, 8, 9) and w.dtype == np.float32
    assert w.max() == pytest.approx(1.0, abs=1e-3) and w.min() > 0
    np.testing.assert_allclose(w, w[::-1, ::-1, ::-1], rtol=1e-6)
    assert w[1, 0, 4] < w[1, 3, 4]


def test_geometry_errors(raw):
    with pytest.raises(EmsrError, match="multiple of the network's pooling factor 9"):
        BlockSpec.make((10, 88, 88), (2, 20, 20), stride=(2, 10, 18), factor=9)
    with pytest.raises(EmsrError, match="even context"):
        BlockSpec.make((10, 87, 88), (2, 20, 20))
    with pytest.raises(EmsrError, match="stride"):
        BlockSpec.make((4, 16, 16), (4, 16, 16), stride=(5, 16, 16))
    spec = BlockSpec.make((4, 16, 16), (4, 16, 16))
    with pytest.raises(EmsrError, match="uint8"):
        predict_affinities(nn.Identity(), raw.astype(np.float32), spec, CPU)
    with pytest.raises(EmsrError, match="expected"):
        predict_affinities(nn.Conv3d(1, 2, 1), raw, spec, CPU)  # 2 channels, not 3


class DtypeProbe(nn.Module):
    """A one-voxel network that records (dtype of its convolution, cuDNN TF32 allowed) per forward."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 1)
        self.seen = []

    def forward(self, x):
        y = self.conv(x)
        self.seen.append((y.dtype, torch.backends.cudnn.allow_tf32))
        return torch.sigmoid(y)


def test_affinities_are_fp32_without_tf32_unless_a_precision_is_asked_for(raw):
    spec = BlockSpec.make((3, 16, 16), (3, 16, 16))
    model = DtypeProbe()
    fp32 = predict_affinities(model, raw, spec, CPU, batch=2)
    assert set(model.seen) == {(torch.float32, False)}
    model.seen.clear()
    bf16 = predict_affinities(model, raw, spec, CPU, batch=2, precision="bf16")
    assert {dtype for dtype, _ in model.seen} == {torch.bfloat16}
    assert bf16.dtype == np.float32 and 0 < np.abs(bf16 - fp32).max() < 0.02  # bf16 rounding, nothing else
    with pytest.raises(EmsrError, match="^config segmentation.inference: precision fp16 needs a CUDA device"):
        predict_affinities(model, raw, spec, CPU, precision="fp16")


def test_segmentation_inference_settings_check_the_precision():
    from emsrbench.segment.stage import infer_settings

    assert infer_settings({"stride": None}, None, "mala").precision == "fp32"
    assert infer_settings({}, {"precision": "bf16"}, "mala").precision == "bf16"
    with pytest.raises(
        EmsrError,
        match=r"^config segmentation.inference: precision must be one of fp32, bf16, fp16, "
        r"got 'float'$",
    ):
        infer_settings({}, {"precision": "float"}, "mala")
