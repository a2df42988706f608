"""Loaders of the study's released weights (emsrbench.released): GPEMSR stages I, II and III
(8x, 16x), VGG19 and SPyNet.

No released file can be downloaded here, so each test writes a synthetic checkpoint in the
release's exact layout: keys, shapes and nesting recorded from the study's own modules
(jtshou/GPEMSR) in tests/data/released/gpemsr-layouts.json.gz, values from :func:`synthetic`.
Layout tests load the paper-size layouts (every tensor a one-element storage broadcast to its
shape, so no memory) and check every tensor lands where the table says, and hand-picked ones
where the study's code says.  Forward tests load tiny-config checkpoints into our networks and
compare with outputs of the study's modules run on the same synthetic weights
(tests/data/README.md says how each fixture was made).
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

from emsrbench.errors import EmsrError
from emsrbench.gpemsr import GPEMSR, VQGAN, Indexer, make_config
from emsrbench.gpemsr.mpf import mask_vgg
from emsrbench.nets.spynet import SpyNet
from emsrbench.nets.vgg19 import RELU3_4
from emsrbench.released import (
    load_released_spynet,
    load_released_stage1,
    load_released_stage2,
    load_released_stage3,
    load_released_vgg19,
)

DATA = Path(__file__).resolve().parent / "data" / "released"
IMAGENET = {
    "mean": torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
    "std": torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
}


# ---------------------------------------------------------------- synthetic weights


def _uniform(key: str, n: int) -> np.ndarray:
    """n values in [0, 1) from splitmix64 of (crc32(key), index): the same on every platform
    and numpy/torch version (the forward fixtures were made with it)."""
    with np.errstate(over="ignore"):
        x = (np.uint64(zlib.crc32(key.encode())) << np.uint64(32)) + np.arange(n, dtype=np.uint64)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) * 2.0**-53


def synthetic(key: str, shape: tuple) -> torch.Tensor:
    """The synthetic value of release tensor ``key``: uniform within 0.8 sqrt(6 / fan_in) for
    weights (He-uniform at gain 0.8: at full He scale the random network is chaotic, float32
    rounding differences of 1e-7 grow to 1e-3 through the deformable sampling and 3DA's
    products of embeddings; at 0.8 they stay near 1e-6 and the outputs near 1); 1 +- 0.5 for
    norm scales (1-D ``weight``); +- 0.1 for biases."""
    u = 2 * _uniform(key, math.prod(shape)) - 1
    if len(shape) > 1:
        v = u * 0.8 * math.sqrt(6 / math.prod(shape[1:]))
    elif key.endswith("weight"):
        v = 1 + 0.5 * u
    else:
        v = 0.1 * u
    return torch.from_numpy(v.astype(np.float32)).reshape(shape)


def synthetic_input(key: str, shape: tuple) -> torch.Tensor:
    """Images in [0, 1]."""
    return torch.from_numpy(_uniform(key, math.prod(shape)).astype(np.float32)).reshape(shape)


# ---------------------------------------------------------------- release files written here


@cache
def layouts() -> dict:
    """{name: {"file", "nesting", "keys": [[key, shape], ...], "config"?}} recorded from the
    study's modules: paper layouts (stage1, stage2_x8, ..., vgg19, spynet) and tiny_* ones."""
    with gzip.open(DATA / "gpemsr-layouts.json.gz", "rt") as f:
        return json.load(f)


def release_state(name: str, value) -> dict[str, torch.Tensor]:
    """Layout ``name`` with tensors from ``value(index, key, shape)``; SPyNet's mean/std buffers
    hold basicsr's constants, as in the study's stage III file."""
    state = {}
    for i, (key, shape) in enumerate(layouts()[name]["keys"]):
        buffer = key.rsplit(".", 1)[-1]
        state[key] = (
            IMAGENET[buffer].clone() if ".spynet." in f".{key}" and buffer in IMAGENET else value(i, key, tuple(shape))
        )
    return state


def tagged(i: int, key: str, shape: tuple) -> torch.Tensor:
    """Tensor number i of a paper-size layout: one stored element, broadcast to the shape (so
    a 90 M-parameter file costs nothing), whose value says which release tensor it is."""
    return torch.full((1,) * len(shape), float(i + 1)).expand(shape)


def write(path: Path, state: dict, nesting: str | None = None, prefix: str = "") -> Path:
    state = {prefix + k: v for k, v in state.items()}
    torch.save({nesting: state} if nesting else state, path)
    return path


def paper_release(tmp_path: Path, name: str) -> tuple[Path, dict]:
    state = release_state(name, tagged)
    return write(tmp_path / layouts()[name]["file"], state, layouts()[name]["nesting"]), state


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


# ---------------------------------------------------------------- loaders and our networks

PAPER = make_config("paper")
LOADERS = {
    "stage1": lambda p: load_released_stage1(p, PAPER),
    "stage2_x8": lambda p: load_released_stage2(p, PAPER, 8),
    "stage2_x16": lambda p: load_released_stage2(p, PAPER, 16),
    "stage3_x8": lambda p: load_released_stage3(p, PAPER, 8),
    "stage3_x16": lambda p: load_released_stage3(p, PAPER, 16),
    "vgg19": lambda p: load_released_vgg19(p, PAPER),
    "spynet": load_released_spynet,
}
OURS = {
    "stage1": lambda: VQGAN(PAPER),
    "stage2_x8": lambda: Indexer(PAPER, 8),
    "stage2_x16": lambda: Indexer(PAPER, 16),
    "stage3_x8": lambda: GPEMSR(PAPER, 8),
    "stage3_x16": lambda: GPEMSR(PAPER, 16),
    "vgg19": lambda: mask_vgg(full=True),
    "spynet": lambda: SpyNet(6),
}

# Written by hand from the study's code (model/*.py), not from the loaders' tables: where some
# release tensors must land in our networks.
SPOTS = {
    "stage1": {
        "encoder.input_layer.0.weight": "encoder.conv_in.0.weight",
        "encoder.feat_extract.7.downblock.weight": "encoder.body.7.weight",
        "encoder.feat_extract.8.q.weight": "encoder.attention.q.weight",
        "encoder.output_layer.3.weight": "encoder.out.3.weight",
        "codebook.embedding.weight": "quantizer.codebook.weight",
        "decoder.input_layer.3.block.4.bias": "decoder.conv_in.3.body.4.bias",
        "decoder.feat_extract.0.proj_out.weight": "decoder.attention.proj.weight",
        "decoder.feat_extract.2.upblock.weight": "decoder.ups.0.weight",
        "decoder.feat_extract.3.block.4.weight": "decoder.stages.1.0.body.4.weight",
        "decoder.output_layer.weight": "decoder.conv_out.weight",
    },
    "stage2_x8": {
        "feat_extract.3.channel_up.weight": "body.3.skip.weight",
        "feat_extract.7.downblock.weight": "body.7.weight",
        "feat_extract.8.gn.weight": "attention.norm.weight",
        "output_layer.3.bias": "out.3.bias",
        "embedding.weight": "classifier.weight",
    },
    "stage2_x16": {"feat_extract.7.channel_up.weight": "body.7.skip.weight", "embedding.bias": "classifier.bias"},
    "stage3_x8": {
        "feature_extraction.4.conv2.weight": "front.4.conv2.weight",
        "refmodel.indexer.embedding.weight": "prior.indexer.classifier.weight",
        "refmodel.codebook.embedding.weight": "prior.quantizer.codebook.weight",
        "refmodel.decoder.feat_extract.4.upblock.bias": "prior.decoder.ups.1.bias",
        "vgg.slice1.2.weight": "mpf.vgg.features.2.weight",
        "vgg.slice5.34.weight": "mpf.vgg.features.34.weight",
        "refmaskconv3.weight": "mpf.mask_net.4.weight",
        "reffea_L3_conv1.weight": "mpf.lift.1.weight",
        "reffusionconv3.weight": "mpf.fuse.2.weight",
        "fusion_fea_block1.0.conv1.weight": "mpf.fuse_blocks.0.0.conv1.weight",
        "down_fea_conv2.weight": "mpf.down.1.weight",
        "reduce_dim_conv.weight": "mpf.reduce.weight",
        "fea_L3_conv2.weight": "pyramid.1.2.weight",
        "align_module.L3_dcnpack.conv_offset.weight": "pod.dcn.2.offset_conv.weight",
        "align_module.L1_offset_conv3.weight": "pod.conv2.0.2.weight",
        "align_module.L3_offset_conv2.weight": "pod.conv2.2.0.weight",
        "align_module.L2_fea_conv.weight": "pod.fuse.1.weight",
        "align_module.flowdsconv2_2.weight": "pod.flow_down.1.2.weight",
        "align_module.cas_offset_conv2.weight": "pod.refine_offset.2.weight",
        "align_module.cas_dcnpack.weight": "pod.refine_dcn.weight",
        "align_module.spynet.basic_module.5.basic_module.8.weight": "pod.spynet.basic_module.5.basic_module.8.weight",
        "ThreeDA.temporal_attn1.weight": "fusion.embed_ref.weight",
        "ThreeDA.conv3D_fusion_2.weight": "fusion.fusion3d_2.weight",
        "ThreeDA.spatial_attn_l2.weight": "fusion.sa_l2.weight",
        "recon_trunk.9.conv2.weight": "trunk.9.conv2.weight",
        "upconv3.weight": "upconvs.2.weight",
        "HRconv.weight": "hr_conv.weight",
        "conv_last.bias": "conv_last.bias",
    },
    "stage3_x16": {
        "reffea_L4_conv1.weight": "mpf.lift.2.weight",
        "reffusionconv4.weight": "mpf.fuse.3.weight",
        "fusion_fea_block4.0.conv2.bias": "mpf.fuse_blocks.3.0.conv2.bias",
        "down_fea_conv3.weight": "mpf.down.2.weight",
        "upconv4.weight": "upconvs.3.weight",
        "refmodel.indexer.feat_extract.7.channel_up.weight": "prior.indexer.body.7.skip.weight",
    },
    "vgg19": {"features.0.weight": "features.0.weight", "features.34.bias": "features.34.bias"},
    "spynet": {"basic_module.0.basic_module.0.weight": "basic_module.0.basic_module.0.weight"},
}
# Release tensors our networks do not hold (each still checked), as the study's code says:
# the stage I encoder inside stage III, the 8x model's unused 4th MPF level, SPyNet's
# constant buffers, torchvision's classifier.
MPF_LEVEL4 = ("reffea_L4_conv1.", "reffusionconv4.", "fusion_fea_block4.", "down_fea_conv3.")
SPYNET_BUFFERS = ("align_module.spynet.mean", "align_module.spynet.std")
DROPPED = {
    "stage3_x8": lambda k: k.startswith(("refmodel.encoder.",) + MPF_LEVEL4) or k in SPYNET_BUFFERS,
    "stage3_x16": lambda k: k.startswith("refmodel.encoder.") or k in SPYNET_BUFFERS,
    "vgg19": lambda k: k.startswith("classifier."),
}


@pytest.mark.parametrize("name", list(LOADERS))
def test_paper_release_loads_tensor_by_tensor(tmp_path, name):
    """The paper-size release layout (recorded from the study's modules) loads completely:
    our network's every key, each tensor the release tensor the table names, of our shape,
    the hand-checked ones where the study's code puts them, the rest of the release exactly
    the tensors our network does not hold."""
    path, release = paper_release(tmp_path, name)
    keys = list(release)
    out = LOADERS[name](path)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in OURS[name]().state_dict().items()}
    assert set(out) == set(ours)
    source = {}
    for key, tensor in out.items():
        assert tuple(tensor.shape) == ours[key], key
        tag = int(tensor.flatten()[0])
        assert tag >= 1 and key not in source.values(), key
        source[keys[tag - 1]] = key
        assert tensor.numel() == release[keys[tag - 1]].numel(), key  # a reshape at most (Linear -> 1x1 conv)
    assert len(source) == len(out)  # no release tensor used twice
    for rel, our in SPOTS[name].items():
        assert source.get(rel) == our, rel
    dropped = {k for k in keys if k not in source}
    assert dropped == {k for k in keys if DROPPED.get(name, lambda k: False)(k)}


# ---------------------------------------------------------------- forward equivalence


def assert_matches(ours: torch.Tensor, study: np.ndarray, what: str) -> None:
    """Within 1e-5 of the study's output, relative to its largest value when that exceeds 1
    (float32 rounding grows with the values; ours computes e.g. the attention in another order)."""
    ref = torch.from_numpy(study)
    tol = 1e-5 * max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(ours, ref, rtol=0, atol=tol, msg=lambda m: f"{what}: {m}")


def tiny_release(tmp_path: Path, name: str) -> Path:
    meta = layouts()[name]
    return write(tmp_path / meta["file"], release_state(name, lambda i, k, s: synthetic(k, s)), meta["nesting"])


def fixture(name: str) -> dict:
    with np.load(DATA / f"gpemsr-{name}-forward.npz") as f:
        return dict(f)


# our settings equal to the study's tiny ones (layouts()[tiny_*]["config"], tests/data/README.md)
TINY_VQGAN = make_config(
    "paper", channels=(32, 32, 64, 64, 64), latent_dim=8, codebook_size=16, enc_out_blocks=1, dec_in_blocks=1
)
TINY_INDEXER = make_config("paper", channels=(32, 32, 64, 64, 64), latent_dim=8, codebook_size=1024, idx_out_blocks=1)


def tiny_fusion(frames: int):
    # stage III's fusion convs hard-code the paper decoder widths (64..512), nf 64 and the
    # 64-channel upsampler; only depth, latent size and frame count can shrink
    return make_config(
        "paper",
        channels=(32, 64, 128, 256, 512),
        latent_dim=8,
        codebook_size=1024,
        enc_out_blocks=1,
        idx_out_blocks=1,
        dec_in_blocks=0,
        frames=frames,
        front_blocks=1,
        back_blocks=1,
        vgg_full=False,
    )


def test_stage1_forward_matches_study(tmp_path):
    vq = VQGAN(TINY_VQGAN).eval()
    vq.load_state_dict(load_released_stage1(tiny_release(tmp_path, "tiny_stage1"), TINY_VQGAN))
    ref = fixture("stage1")
    with torch.no_grad():
        rec, indices, _ = vq(torch.from_numpy(ref["hr"]))
    assert torch.equal(indices, torch.from_numpy(ref["indices"]))
    assert_matches(rec, ref["rec"], "stage I reconstruction")


@pytest.mark.parametrize("scale", [8, 16])
def test_stage2_forward_matches_study(tmp_path, scale):
    indexer = Indexer(TINY_INDEXER, scale).eval()
    indexer.load_state_dict(load_released_stage2(tiny_release(tmp_path, f"tiny_stage2_x{scale}"), TINY_INDEXER, scale))
    ref = fixture(f"stage2-x{scale}")
    with torch.no_grad():
        logits = indexer(torch.from_numpy(ref["lr"]))
    assert_matches(logits, ref["logits"], f"x{scale} indexer logits")


@pytest.mark.parametrize("scale, frames", [(8, 3), (16, 1)])
def test_stage3_forward_matches_study(tmp_path, one_thread, scale, frames):
    """The whole stage III network (prior, MPF with its mask, POD with SPyNet, 3DA, upsampler)
    on LR sections in [0, 1], (B, frames, h, w), the centre section in the middle."""
    assert layouts()[f"tiny_stage3_x{scale}"]["config"]["nframes"] == frames
    cfg = tiny_fusion(frames)
    model = GPEMSR(cfg, scale).eval()
    release = tiny_release(tmp_path, f"tiny_stage3_x{scale}")
    model.load_state_dict(load_released_stage3(release, cfg, scale))
    ref = fixture(f"stage3-x{scale}")
    step = int(ref["step"])  # the fixture keeps every step-th HR pixel
    with torch.no_grad():
        sr, prior = model.forward_with_prior(torch.from_numpy(ref["lr"]))
    assert_matches(prior[:, frames // 2, :, ::step, ::step], ref["prior"], f"x{scale} prior image")
    assert_matches(sr[..., ::step, ::step], ref["sr"], f"x{scale} output")


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # basicsr's own
def test_spynet_release_loads_into_basicsr_and_ours_alike(tmp_path, one_thread):
    """The release layout is what basicsr's SpyNet loads (strictly, from {"params": ...});
    our SpyNet with the mapped weights gives its flow."""
    from emsrbench.compat import basicsr_arch

    path = write(tmp_path / "spynet.pth", release_state("spynet", lambda i, k, s: synthetic(k, s)), "params")
    theirs = basicsr_arch("spynet_arch", "SpyNet")(str(path)).eval()
    ours = SpyNet(6).eval()
    ours.load_state_dict(load_released_spynet(path))
    ref, supp = synthetic_input("ref", (1, 3, 64, 64)), synthetic_input("supp", (1, 3, 64, 64))
    with torch.no_grad():
        torch.testing.assert_close(ours(ref, supp), theirs(ref, supp), rtol=0, atol=1e-5)


def test_vgg19_release_gives_torchvision_features(tmp_path):
    """torchvision's file: our VGG (all 16 convs) gives torchvision's relu1_2 (the mask) and
    relu3_4 (the reference loss) features; without vgg_full the convs past relu1_2 are dropped."""
    import torchvision

    def value(i, key, shape):  # real values up to relu3_4, a broadcast tag for the rest (never run here)
        return (
            synthetic(key, shape)
            if key.startswith("features.") and int(key.split(".")[1]) < RELU3_4
            else tagged(i, key, shape)
        )

    path = write(tmp_path / "vgg19.pth", release_state("vgg19", value))
    tv = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs["E"][:10]).eval()  # features[:18]
    state = torch.load(path, weights_only=True)
    tv.load_state_dict({k: state[f"features.{k}"] for k in tv.state_dict()})
    ours = mask_vgg(full=True)
    ours.load_state_dict(load_released_vgg19(path, PAPER))
    x = synthetic_input("vgg input", (1, 3, 24, 24))
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv[:4](x), rtol=0, atol=1e-5)
        torch.testing.assert_close(ours(x, RELU3_4), tv[:RELU3_4](x), rtol=1e-5, atol=1e-5)
    short = load_released_vgg19(path, make_config("paper", vgg_full=False))
    assert set(short) == {"features.0.weight", "features.0.bias", "features.2.weight", "features.2.bias"}


# ---------------------------------------------------------------- broken files, other settings

# per layout, a tensor to delete / mis-shape (one our network holds, and for stage III one it drops)
VICTIM = {
    "stage1": "decoder.feat_extract.0.q.weight",
    "stage2_x8": "embedding.weight",
    "stage2_x16": "feat_extract.7.channel_up.weight",
    "stage3_x8": "align_module.L2_dcnpack.conv_offset.weight",
    "stage3_x16": "ThreeDA.conv3D_1.bias",
    "vgg19": "features.2.weight",
    "spynet": "basic_module.3.basic_module.4.bias",
}
DROPPED_VICTIM = {
    "stage3_x8": ["reffusionconv4.weight", "refmodel.encoder.output_layer.3.weight"],
    "stage3_x16": ["refmodel.encoder.feat_extract.8.q.bias"],
    "vgg19": ["classifier.6.weight"],
}


def broken(tmp_path: Path, name: str, edit) -> Path:
    state = release_state(name, tagged)
    edit(state)
    return write(tmp_path / "broken.pth", state, layouts()[name]["nesting"])


@pytest.mark.parametrize("name", list(LOADERS))
def test_missing_key_is_a_one_line_error(tmp_path, name):
    for key in [VICTIM[name]] + DROPPED_VICTIM.get(name, []):
        path = broken(tmp_path, name, lambda s, key=key: s.pop(key))
        with pytest.raises(EmsrError) as err:
            LOADERS[name](path)
        assert f"missing key {key} " in one_line(err) and str(path) in one_line(err)


@pytest.mark.parametrize("name", list(LOADERS))
def test_misshaped_key_is_a_one_line_error(tmp_path, name):
    for key in [VICTIM[name]] + DROPPED_VICTIM.get(name, []):

        def grow(state, key=key):
            shape = list(state[key].shape)
            shape[0] += 1
            state[key] = torch.zeros(1).expand(shape)

        with pytest.raises(EmsrError) as err:
            LOADERS[name](broken(tmp_path, name, grow))
        assert f"{key} has shape (" in one_line(err) and "expected" in one_line(err)


@pytest.mark.parametrize("name", list(LOADERS))
def test_unmapped_key_is_a_one_line_error(tmp_path, name):
    path = broken(tmp_path, name, lambda s: s.update({"extra_head.weight": torch.zeros(2)}))
    with pytest.raises(EmsrError) as err:
        LOADERS[name](path)
    assert "unmapped key extra_head.weight" in one_line(err)


@pytest.mark.parametrize("name", ["stage1", "stage3_x16", "spynet"])
def test_truncated_or_foreign_file_is_a_one_line_error(tmp_path, name):
    path, _ = paper_release(tmp_path, name)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(EmsrError) as err:
        LOADERS[name](path)
    assert one_line(err).startswith(f"{path}: not a readable torch checkpoint")
    for payload, what in (({"optimizer": {"lr": 1.0}}, "not a state dict"), ([1, 2], "not a state dict")):
        torch.save(payload, path)
        with pytest.raises(EmsrError, match=what):
            LOADERS[name](path)
    with pytest.raises(EmsrError, match="no such file"):
        LOADERS[name](tmp_path / "absent.pth")


def test_spynet_constants_are_checked(tmp_path):
    """Our SPyNet hard-codes ImageNet's mean/std: a stage III file holding others is refused; a
    SPyNet file with basicsr's buffers (a model's state dict, not the release) is accepted."""
    path = broken(tmp_path, "stage3_x8", lambda s: s["align_module.spynet.std"].fill_(0.5))
    with pytest.raises(EmsrError) as err:
        LOADERS["stage3_x8"](path)
    assert "align_module.spynet.std is [0.5, 0.5, 0.5]" in one_line(err)
    path = broken(tmp_path, "spynet", lambda s: s.update({k: v.clone() for k, v in IMAGENET.items()}))
    assert set(load_released_spynet(path)) == set(SpyNet(6).state_dict())


def test_release_nesting_and_prefixes(tmp_path):
    """Bare (the study's stage files), under "params" / "params_ema" / "state_dict" (BasicSR),
    and with DataParallel's "module." prefix: the same tensors."""
    state = release_state("stage2_x8", tagged)
    want = load_released_stage2(write(tmp_path / "bare.pth", state), PAPER, 8)
    for nesting, prefix in (
        ("params", ""),
        ("params_ema", ""),
        ("state_dict", ""),
        (None, "module."),
        ("params", "module."),
    ):
        got = load_released_stage2(write(tmp_path / "nested.pth", state, nesting, prefix), PAPER, 8)
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want), (nesting, prefix)
    both = {"params": {k: torch.zeros(1).expand(v.shape) for k, v in state.items()}, "params_ema": state}
    torch.save(both, tmp_path / "both.pth")
    got = load_released_stage2(tmp_path / "both.pth", PAPER, 8)  # EMA weights first, as BasicSR evaluates them
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_settings_the_release_does_not_have(tmp_path):
    path, _ = paper_release(tmp_path, "stage3_x8")
    for cfg, scale, what in (
        (make_config("paper", "no_pod"), 8, "turn off pod"),
        (make_config("paper", "mpf_no_mask"), 8, "turn off mpf_mask"),
        (PAPER, 4, "x8 and x16 only"),
        (make_config("paper", codebook_size=512), 8, "has shape (1024, 512), expected (512, 512)"),
        (make_config("paper", nf=32, deform_groups=8), 8, "has shape"),
    ):
        with pytest.raises(EmsrError) as err:
            load_released_stage3(path, cfg, scale)
        assert what in one_line(err)
    # a quick-preset VQGAN holds EMA codebook statistics the release cannot fill
    path, _ = paper_release(tmp_path, "stage1")
    with pytest.raises(EmsrError) as err:
        load_released_stage1(path, make_config("paper", codebook_ema=0.9))
    assert "no release key fills our quantizer.cluster_size" in one_line(err)
