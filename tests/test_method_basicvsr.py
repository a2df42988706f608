"""BasicVSR (basicsr's architecture on 5 adjacent EM sections): small-tile SPyNet, the paper's
parameter count, equality with basicsr's forward and SpyNet, neighbour use, the pretrained
SPyNet (present and absent). Shapes, training and tiled inference: test_method_contract.py."""

from __future__ import annotations

import hashlib

import pytest
import torch
import yaml

from emsrbench.compat import basicsr_arch
from emsrbench.methods import discover
from emsrbench.pretrained import Pretrained, missing_flag
from emsrbench.train import TrainJob, TrainSettings, count_parameters, fit

BASICVSR = discover()["basicvsr"]
QUICK = BASICVSR.preset("quick")["model"]
PAPER = BASICVSR.preset("paper")["model"]
TINY = {"num_feat": 8, "num_block": 1, "hr_feat": 8}
BASICVSR_PARAMS = 6.3e6  # published (Chan et al., CVPR 2021: 6.3 M), SPyNet included
SPYNET_PARAMS = 1_440_300  # basicsr's SpyNet: 6 basic modules

pytestmark = pytest.mark.usefixtures("one_thread")


def build(scale, **params):
    torch.manual_seed(0)
    return BASICVSR.module().build(scale, **params)


def test_method_metadata():
    assert BASICVSR.family == "multi-slice" and BASICVSR.slices == 5 and BASICVSR.trains
    assert {8, 16} <= set(BASICVSR.scales)


@pytest.mark.parametrize("hw", [(16, 16), (7, 5)])
def test_full_spynet_handles_small_tiles(hw):
    """basicsr's SpyNet fails below 33 px (its coarsest level has no pixel left); ours
    resizes to at least 64 px like it resizes to multiples of 32."""
    model = build(8, **{**TINY, "spynet_levels": 6}).eval()
    with torch.no_grad():
        sr = model(torch.rand(1, 5, *hw))
    assert sr.shape == (1, 1, hw[0] * 8, hw[1] * 8) and torch.isfinite(sr).all()


def test_paper_parameter_count_matches_basicvsr():
    model = build(4, **PAPER)
    n = count_parameters(model)
    assert abs(n - BASICVSR_PARAMS) / BASICVSR_PARAMS < 0.02, n
    assert count_parameters(model.spynet) == SPYNET_PARAMS
    assert PAPER["num_feat"] == 64 and PAPER["num_block"] == 30 and PAPER["spynet_levels"] == 6


def test_upsampler_and_channels():
    for scale, stages in [(2, 1), (4, 2), (8, 3), (16, 4)]:
        assert build(scale, **TINY).num_up == stages
    m = build(8, **TINY)
    assert m.backward_trunk.main[0].in_channels == 8 + 1 and m.conv_last.out_channels == 1


@pytest.mark.parametrize("hw", [(33, 40), (40, 36)])
def test_centre_output_equals_basicsr_forward(hw):
    """Ours returns basicsr's BasicVSR output for the centre frame (same weights; basicsr's
    trunks and conv_last swapped for 1-channel ones; basicsr's SpyNet broadcasts the grey
    frame against its RGB mean/std, i.e. sees it replicated to 3 channels, as ours does).
    basicsr's SpyNet needs frames larger than 32 px, hence these sizes."""
    ours = build(4, **{**TINY, "hr_feat": 64}).eval()
    crb = basicsr_arch("basicvsr_arch", "ConvResidualBlocks")
    ref = basicsr_arch("basicvsr_arch", "BasicVSR")(num_feat=8, num_block=1)
    ref.backward_trunk, ref.forward_trunk = crb(9, 8, 1), crb(9, 8, 1)
    ref.conv_last = torch.nn.Conv2d(64, 1, 3, 1, 1)
    loaded = ref.load_state_dict(ours.state_dict(), strict=False)
    # ours keeps SPyNet's ImageNet mean/std as constants, basicsr as buffers (the same values)
    assert set(loaded.missing_keys) == {"spynet.mean", "spynet.std"} and not loaded.unexpected_keys
    x = torch.rand(1, 5, *hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x.unsqueeze(2))[:, 2], rtol=1e-5, atol=1e-6)


def test_model_files_with_basicsrs_spynet_buffers_load():
    """Model files saved while BasicVSR used basicsr's SpyNet class hold spynet.mean/std; they
    load strictly into today's network (the values are checked against ImageNet's)."""
    saved = build(8, **TINY).state_dict()
    saved |= {"spynet.mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)}
    saved |= {"spynet.std": torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)}
    torch.manual_seed(1)
    model = BASICVSR.module().build(8, **TINY)
    model.load_state_dict(saved)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())


def test_kaiming_init_starts_at_the_bilinear_base():
    model = build(8, **{**TINY, "init": "kaiming"}).eval()
    x = torch.rand(1, 5, 8, 8)
    base = torch.nn.functional.interpolate(x[:, 2:3], scale_factor=8, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(x), base)


def test_output_uses_the_neighbour_sections():
    model = build(8, **QUICK).eval()
    torch.nn.init.normal_(model.conv_last.weight, std=0.1)  # the quick init zeroes the last conv
    x = torch.rand(1, 5, 8, 8)
    with torch.no_grad():
        a = model(x)
        for z in (0, 1, 3, 4):
            y = x.clone()
            y[:, z] = torch.rand(8, 8)
            assert (model(y) - a).abs().max() > 1e-4, z


def spynet_registry(tmp_path, state: dict) -> Pretrained:
    """A weights dir holding a SPyNet checkpoint in basicsr's layout ({'params': ...}, no
    mean/std buffers) and a registry whose spynet entry has its sha256."""
    wdir = tmp_path / "weights"
    wdir.mkdir()
    path = wdir / "spynet_sintel_final-3d2a1287.pth"
    torch.save({"params": state}, path)
    reg = tmp_path / "registry.yaml"
    reg.write_text(
        yaml.safe_dump(
            {
                "spynet": {
                    "file": path.name,
                    "url": "https://example.invalid/spynet.pth",
                    "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                }
            }
        )
    )
    return Pretrained(wdir, reg)


def test_pretrained_spynet_present_is_loaded_and_frozen(tmp_path):
    torch.manual_seed(123)
    donor = basicsr_arch("spynet_arch", "SpyNet")(None)
    state = {k: v for k, v in donor.state_dict().items() if k.startswith("basic_module.")}
    pretrained = spynet_registry(tmp_path, state)
    model = build(8, **PAPER)
    assert not torch.equal(
        model.spynet.basic_module[0].basic_module[0].weight, state["basic_module.0.basic_module.0.weight"]
    )
    assert BASICVSR.module().init_pretrained(model, pretrained) == []
    for k, v in model.spynet.state_dict().items():
        if k in state:
            assert torch.equal(v, state[k]), k
    assert not any(p.requires_grad for p in model.spynet.parameters())  # fix_flow
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("spynet."))


def test_pretrained_spynet_wrong_file_is_an_error(tmp_path):
    from emsrbench.errors import EmsrError

    pretrained = spynet_registry(tmp_path, {"not.spynet": torch.zeros(1)})
    with pytest.raises(EmsrError, match="not a SPyNet checkpoint"):
        BASICVSR.module().init_pretrained(build(8, **TINY), pretrained)


def test_pretrained_spynet_absent_is_flagged_and_trained(tmp_path):
    model = build(8, **TINY)
    flags = BASICVSR.module().init_pretrained(model, Pretrained(tmp_path / "empty"))
    assert flags == [missing_flag("spynet", "SPyNet flow trained from scratch")]
    assert all(p.requires_grad for p in model.spynet.parameters())


def test_training_with_the_pretrained_spynet_keeps_it_fixed(tmp_path, degraded_x8):
    torch.manual_seed(7)
    donor = basicsr_arch("spynet_arch", "SpyNet")(None)
    state = {k: v for k, v in donor.state_dict().items() if k.startswith("basic_module.")}
    params = {**QUICK, **TINY}
    job = TrainJob(
        method=BASICVSR,
        scale=8,
        preset="quick",
        model_params=params,
        settings=TrainSettings.merged({**BASICVSR.preset("quick")["train"], "iterations": 2, "batch_size": 2}),
        train_files=[str(degraded_x8)],
        out_path=tmp_path / "m" / "model.pt",
        ckpt_dir=tmp_path / "m" / "ck",
        threads=1,
        pretrained=spynet_registry(tmp_path, state),
    )
    fit(job)
    meta = torch.load(job.out_path)
    assert meta["flags"] == []
    for k, v in state.items():
        assert torch.equal(meta["state_dict"][f"spynet.{k}"], v), k
    assert not torch.equal(meta["state_dict"]["fusion.weight"], build(8, **params).fusion.weight)  # the rest trained
