"""Affinity networks: the study's sizes (parameter counts, block shapes), the quick presets,
model files (ours and a user's bare state_dict) and their errors."""

from __future__ import annotations

import pytest
import torch

from emsrbench.errors import EmsrError
from emsrbench.segment import mala, networks, superhuman


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_superhuman_paper_size_and_shape():
    pre = networks.preset("superhuman", "paper")
    model = networks.build("superhuman", pre["model"])
    assert n_params(model) == pytest.approx(1.48e6, rel=0.02)
    assert networks.block_shapes("superhuman", model, pre["block"]) == ((18, 160, 160), (18, 160, 160))
    assert pre["infer"] == {"stride": [10, 80, 80], "pad": [4, 48, 48], "tiling": "study"}


def test_mala_paper_size_and_shape():
    pre = networks.preset("mala", "paper")
    model = networks.build("mala", pre["model"])
    assert n_params(model) == pytest.approx(81.5e6, rel=0.02)
    assert networks.block_shapes("mala", model, pre["block"]) == ((53, 268, 268), (25, 56, 56))
    assert model.output_shape((53, 268, 268)) == (25, 56, 56)
    with pytest.raises(EmsrError, match="does not pool evenly"):
        model.output_shape((53, 269, 268))


def test_superhuman_forward_keeps_the_block_and_rejects_bad_sizes():
    model = superhuman.build(filters=[4, 6, 8, 10, 12]).eval()  # paper depth, narrow
    with torch.no_grad():
        y = model(torch.rand(1, 1, 3, 32, 48))
    assert y.shape == (1, 3, 3, 32, 48) and 0 <= y.min() and y.max() <= 1
    with pytest.raises(EmsrError, match="multiple of 16"):
        model(torch.rand(1, 1, 3, 40, 48))
    with pytest.raises(EmsrError, match="multiples of 16"):
        superhuman.shapes(model, [18, 100, 160])


@pytest.mark.parametrize("net", ["superhuman", "mala"])
def test_quick_presets_run_their_blocks(net):
    """The quick presets' training and inference blocks are valid for the networks, and the
    quick MALA needs at most the 12 sections of the default phantom test volume."""
    pre = networks.preset(net, "quick")
    model = networks.build(net, pre["model"]).eval()
    in_shape, out_shape = networks.block_shapes(net, model, pre["block"])
    with torch.no_grad():
        assert model(torch.rand(2, 1, *in_shape)).shape == (2, 3, *out_shape)
    infer_in, _ = networks.block_shapes(net, model, pre["infer"]["block"])
    if net == "mala":
        assert in_shape[0] == 12 and out_shape == (4, 38, 38)
        assert infer_in == (20, 268, 268)
    assert n_params(model) < 200_000


def test_mala_rejects_unreachable_blocks():
    model = mala.build(fmaps=[2, 3, 4], z_kernels=[3, 1, 1])
    assert mala.shapes(model, [2, 20, 20]) == ((10, 88, 88), (2, 20, 20))  # z: 4 convs of 3
    with pytest.raises(EmsrError, match="nearest valid one"):
        mala.shapes(model, [2, 21, 20])
    with pytest.raises(EmsrError, match="z_kernels"):
        mala.build(fmaps=[2, 3, 4], z_kernels=[3, 1])


def test_registry_errors():
    with pytest.raises(EmsrError, match="unknown network 'unet'"):
        networks.network("unet")
    with pytest.raises(EmsrError, match="no preset 'fast'"):
        networks.preset("mala", "fast")
    with pytest.raises(EmsrError, match="bad model settings"):
        networks.build("superhuman", {"filter": [2, 3]})


def test_load_user_state_dict_and_bad_files(tmp_path):
    pre = networks.preset("superhuman", "quick")
    model = networks.build("superhuman", pre["model"])
    bare = tmp_path / "mine.pt"
    torch.save(model.state_dict(), bare)
    loaded, meta = networks.load(bare, "superhuman", "quick")
    assert meta["block"] == pre["block"] and meta["parameters"] == n_params(model)
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    with pytest.raises(EmsrError, match="do not fit the mala network"):
        networks.load(bare, "mala", "quick")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(EmsrError, match="junk.pt: not a readable torch model file"):
        networks.load(tmp_path / "junk.pt", "superhuman", "quick")
    with pytest.raises(EmsrError, match="model file not found"):
        networks.load(tmp_path / "absent.pt", "superhuman", "quick")
