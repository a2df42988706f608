"""The GPEMSR study's released segmenters (superhuman.pt, MALA.pt) read into our networks.

No released file can be downloaded here, so the checkpoints are synthetic, written in the
release's layout as recorded from the study's code (tests/data/released/segment-*-layout.json:
keys, shapes and dtypes of its networks' state_dicts, the ``model_weights`` wrapper, the
``module.`` prefix).  Forward equivalence: segment-*-forward.npz hold outputs of the study's
own modules with the weights of :func:`synthetic_weights` (tests/data/README.md says how they
were made); our networks with the mapped weights must reproduce them to 1e-5.  Tiling:
segment-study-tiling.json holds the block origins and window of the study's Provider_valid.
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from emsrbench.errors import EmsrError
from emsrbench.segment import networks, released
from emsrbench.segment.blockwise import BlockSpec, predict_affinities, study_window

DATA = Path(__file__).parent / "data" / "released"
NETS = ("superhuman", "mala")


def release_layout(net: str) -> dict:
    return json.loads((DATA / f"segment-{net}-layout.json").read_text())


def synthetic_weights(tensors, seed: int) -> OrderedDict:
    """Deterministic weights for a release layout ([key, shape, dtype] in the release's order),
    scaled so that activations neither vanish nor saturate the sigmoid (2 / fan-in saturates
    it, through Superhuman's nine residual blocks): conv weights N(0, 1 / fan-in), biases and
    running means N(0, 0.1^2), BN weights 1 + N(0, 0.1^2), running variances U(0.5, 1.5),
    num_batches_tracked its index.  The fixtures' script used it too."""
    g = torch.Generator().manual_seed(seed)
    out = OrderedDict()
    for i, (key, shape, dtype) in enumerate(tensors):
        if dtype == "torch.int64":
            out[key] = torch.tensor(1000 + i, dtype=torch.int64).reshape(shape)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        elif key.endswith("weight") and len(shape) > 1:
            out[key] = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        elif key.endswith("weight"):  # BatchNorm scale
            out[key] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:  # biases, running means
            out[key] = 0.1 * torch.randn(shape, generator=g)
    return out


def forward_input(meta: dict) -> torch.Tensor:
    """The fixture's input: stored, or (MALA's, 7 MB) regenerated from its seed."""
    if "input" in meta:
        return torch.from_numpy(meta["input"])
    g = torch.Generator().manual_seed(int(meta["input_seed"]))
    return torch.rand(tuple(int(v) for v in meta["input_shape"]), generator=g)


def write_release_file(path: Path, weights: dict, *, wrap: bool = True, prefix: str = released.PREFIX) -> Path:
    """A checkpoint as the study's lineage saves one (training under nn.DataParallel)."""
    state = OrderedDict((prefix + k, v) for k, v in weights.items())
    torch.save({"current_iter": 200000, "valid_result": None, released.WRAPPER: state} if wrap else state, path)
    return path


@pytest.fixture(scope="module")
def superhuman_weights():
    return synthetic_weights(release_layout("superhuman")["tensors"], seed=13)


def one_line_error(excinfo, *needles) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


@pytest.mark.parametrize("net", NETS)
def test_key_table_maps_every_release_tensor_to_one_of_ours_with_its_shape(net):
    """The table is a bijection between the recorded release keys and our paper network's."""
    layout = release_layout(net)
    table = released.key_table(net)
    ours = networks.build(net, networks.preset(net, "paper")["model"]).state_dict()
    assert list(table) == [k for k, _, _ in layout["tensors"]]  # every key, in the release's order
    assert sorted(table.values()) == sorted(ours) and len(set(table.values())) == len(table)
    for key, shape, dtype in layout["tensors"]:
        assert list(ours[table[key]].shape) == shape, key
        assert str(ours[table[key]].dtype) == dtype, key
    params = sum(math.prod(s) for k, s, d in layout["tensors"] if d == "torch.float32" and "running" not in k)
    assert params == layout["parameters"] == {"superhuman": 1_477_659, "mala": 81_489_387}[net]


@pytest.mark.parametrize("net", NETS)
def test_released_file_loads_every_tensor_in_its_place(net, tmp_path):
    """A checkpoint in the release's exact layout (model_weights, module. prefix, the
    lineage's other entries) loads into the paper network, whatever preset the run uses."""
    layout = release_layout(net)
    if net == "mala":  # 81.5 M values: distinct and cheap (the forward test uses random ones)
        weights = OrderedDict()
        for i, (key, shape, dtype) in enumerate(layout["tensors"]):
            n = math.prod(shape)
            weights[key] = (
                torch.tensor(1000 + i)
                if dtype == "torch.int64"
                else torch.arange(n, dtype=torch.float32).mul_(1e-7).add_(i).reshape(shape)
            )
    else:
        weights = synthetic_weights(layout["tensors"], seed=13)
    path = write_release_file(tmp_path / released.FILE_NAMES[net], weights)
    model, meta = networks.load(path, net, "quick")
    state = model.state_dict()
    table = released.key_table(net)
    for key, tensor in weights.items():
        assert torch.equal(state[table[key]], tensor), key
    paper = networks.preset(net, "paper")
    assert meta["released_weights"] is True and meta["preset"] == meta["infer_preset"] == "paper"
    assert meta["block"] == paper["block"] and meta["model_params"] == paper["model"]
    assert meta["parameters"] == layout["parameters"]
    assert meta["flags"] == [f"released weights: the GPEMSR study's {released.DISPLAY[net]} ({path.name})"]


def test_bare_and_unprefixed_release_state_dicts_load(superhuman_weights, tmp_path):
    for wrap, prefix in ((False, released.PREFIX), (True, ""), (False, "")):
        path = write_release_file(tmp_path / "sh.pt", superhuman_weights, wrap=wrap, prefix=prefix)
        model, meta = networks.load(path, "superhuman", "paper")
        assert meta["released_weights"]
        assert torch.equal(
            model.state_dict()["down.4.exit.0.running_var"], superhuman_weights["center.block3.running_var"]
        )


@pytest.mark.parametrize("net", NETS)
def test_forward_reproduces_the_study_modules(net):
    """Our network with the mapped weights gives the study's module's output (stored) to 1e-5."""
    fixture = dict(np.load(DATA / f"segment-{net}-forward.npz"))
    layout = release_layout(net)
    weights = synthetic_weights(layout["tensors"], seed=int(fixture["weights_seed"]))
    model = networks.build(net, networks.preset(net, "paper")["model"])
    model.load_state_dict(released.map_weights(weights, net, model, "fixture"))
    x = forward_input(fixture)
    assert float(x.double().sum()) == pytest.approx(float(fixture["input_sum"]), rel=1e-12)
    with torch.no_grad():
        y = model.eval()(x).numpy()
    expected = fixture["output"]
    assert y.shape == expected.shape
    assert 0.02 < expected.std() and 0.05 < expected.mean() < 0.95  # not saturated: the check has teeth
    np.testing.assert_allclose(y, expected, atol=1e-5, rtol=0)


def test_errors_are_one_line_and_name_the_file_and_key(superhuman_weights, tmp_path):
    good = write_release_file(tmp_path / "superhuman.pt", superhuman_weights)

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(EmsrError) as e:
        networks.load(truncated, "superhuman", "paper")
    one_line_error(e, "truncated.pt", "not a readable torch model file")

    cases = {
        "missing": (
            {k: v for k, v in superhuman_weights.items() if k != "conv2.block2.3.weight"},
            ["module.conv2.block2.3.weight", "is missing"],
        ),
        "unknown": (
            {**superhuman_weights, "conv2.block2.4.weight": torch.zeros(3)},
            ["'module.conv2.block2.4.weight' is not a tensor of the study's Superhuman"],
        ),
        "shape": (
            {**superhuman_weights, "up1.1.weight": torch.zeros(64, 48, 1, 1, 1)},  # in/out swapped
            ["'module.up1.1.weight' has shape [64, 48, 1, 1, 1]", "has [48, 64, 1, 1, 1]"],
        ),
    }
    for name, (weights, needles) in cases.items():
        path = write_release_file(tmp_path / f"{name}.pt", weights)
        with pytest.raises(EmsrError) as e:
            networks.load(path, "superhuman", "paper")
        one_line_error(e, f"{name}.pt: model_weights: ", *needles)

    mixed = OrderedDict((("module." if i else "") + k, v) for i, (k, v) in enumerate(superhuman_weights.items()))
    torch.save({released.WRAPPER: mixed}, tmp_path / "mixed.pt")
    with pytest.raises(EmsrError) as e:
        networks.load(tmp_path / "mixed.pt", "superhuman", "paper")
    one_line_error(e, "mixed.pt", "'embed_in.0.weight' lacks the 'module.' prefix")

    torch.save({released.WRAPPER: {"module.conv1.weight": [1, 2]}}, tmp_path / "odd.pt")
    with pytest.raises(EmsrError) as e:
        networks.load(tmp_path / "odd.pt", "superhuman", "paper")
    one_line_error(e, "odd.pt", "'module.conv1.weight' holds a list")

    with pytest.raises(EmsrError) as e:
        networks.load(good, "mala", "paper")
    one_line_error(e, "superhuman.pt", "holds the study's Superhuman (UNet_PNI) weights, not MALA")


def test_study_tiling_places_blocks_as_the_study():
    """Block origins and window of the study's Provider_valid on its 50-section 1024x1024 test
    volume (segment-study-tiling.json): MALA's stride (56) ignores its 27-voxel pooling grid
    and its last block ends with the volume; Superhuman blends with the study's window."""
    study = json.loads((DATA / "segment-study-tiling.json").read_text())
    for net in NETS:
        s = study[net]
        infer = networks.preset(net, "paper")["infer"]
        # MALA: the study pads by the context (14x106x106), which blockwise adds to ``pad``
        pad = [0, 0, 0] if net == "mala" else s["padding"]
        assert (infer["stride"], infer["pad"], infer["tiling"]) == (s["stride"], pad, "study")
        factor = {"superhuman": 16, "mala": 27}[net]  # the paper networks' lateral pooling
        spec = BlockSpec.make(
            s["in_block"], s["out_block"], infer["stride"], infer["pad"], factor=factor, tiling=infer["tiling"]
        )
        assert [list(a) for a in spec.origins(s["volume"])] == s["origins_per_axis"]
        assert math.prod(len(a) for a in s["origins_per_axis"]) == s["blocks"]
        assert spec.overwrites == (net == "mala")
    with pytest.raises(EmsrError, match="multiple of the network's pooling factor 27"):
        BlockSpec.make((53, 268, 268), (25, 56, 56), (25, 56, 56), factor=27)  # our grid tiling refuses it
    w = study_window((18, 160, 160))
    lines = study["superhuman"]["window_lines"]
    np.testing.assert_allclose(w[:, 80, 80], lines["z"], rtol=1e-5, atol=0)
    np.testing.assert_allclose(w[9, :, 80], lines["y"], rtol=1e-5, atol=0)
    np.testing.assert_allclose(w[9, 80, :], lines["x"], rtol=1e-5, atol=0)


def test_study_tiling_of_a_valid_network_lets_later_blocks_overwrite():
    """A valid network whose every output block is the number of its call: with the study's
    tiling every voxel holds the number of the last block that covered it (blocks in the
    study's order: z, then y, then x), unblended."""

    class CallCounter(torch.nn.Module):  # 'valid' by 2 voxels per side
        calls = 0

        def forward(self, x):
            ids = torch.arange(self.calls + 1, self.calls + 1 + x.shape[0], dtype=x.dtype)
            self.calls += x.shape[0]
            shape = (x.shape[0], 3, x.shape[2] - 4, x.shape[3] - 4, x.shape[4] - 4)
            return ids.reshape(-1, 1, 1, 1, 1).expand(shape).contiguous()

    raw = np.zeros((7, 23, 23), dtype=np.uint8)
    spec = BlockSpec.make((7, 14, 14), (3, 10, 10), (3, 10, 10), tiling="study")
    zs, ys, xs = spec.origins(raw.shape)
    assert (zs, ys, xs) == ([0, 3, 4], [0, 10, 13], [0, 10, 13])
    affs = predict_affinities(CallCounter(), raw, spec, torch.device("cpu"), batch=4)
    expected, first_wins = np.zeros(raw.shape, dtype=np.float32), np.zeros(raw.shape, dtype=np.float32)
    blocks = [(z, y, x) for z in zs for y in ys for x in xs]
    for i, (z0, y0, x0) in enumerate(blocks):
        expected[z0 : z0 + 3, y0 : y0 + 10, x0 : x0 + 10] = i + 1
    for i, (z0, y0, x0) in reversed(list(enumerate(blocks))):
        first_wins[z0 : z0 + 3, y0 : y0 + 10, x0 : x0 + 10] = i + 1
    np.testing.assert_array_equal(affs[1], expected)
    assert (expected != first_wins).any()  # the overlaps exist: the order is checked


def test_segment_volume_with_released_weights_uses_the_study_settings(superhuman_weights, tmp_path):
    """segmentation.weights.superhuman = the released file in a quick run: the paper network,
    the study's 18x160x160 blocks and tiling, and rows flagged as released weights."""
    from emsrbench import phantom
    from emsrbench.io import write_cremi
    from emsrbench.segment.stage import segment_volume

    raw, labels = phantom.generate((4, 64, 64), seed=3)
    write_cremi(tmp_path / "test.h5", raw, labels, resolution=(40, 4, 4))
    weights = write_release_file(tmp_path / "superhuman.pt", superhuman_weights)
    stats = segment_volume("superhuman", "quick", weights, tmp_path / "test.h5", tmp_path / "seg.h5", threads=1)
    assert stats["blocks"] == {
        "in": [18, 160, 160],
        "out": [18, 160, 160],
        "stride": [10, 80, 80],
        "pad": [4, 48, 48],
        "tiling": "study",
    }
    assert stats["parameters"] == 1_477_659
    assert "released weights: the GPEMSR study's Superhuman (UNet_PNI) (superhuman.pt)" in stats["flags"]
