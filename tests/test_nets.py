"""The shared network pieces (src/emsrbench/nets): SPyNet against basicsr's, its pyramid depth
and the state dicts it accepts; the VGG19 feature stack against torchvision's, its layer names,
depths, taps and files."""

from __future__ import annotations

import pytest
import torch
import torchvision

from emsrbench.compat import basicsr_arch
from emsrbench.errors import EmsrError
from emsrbench.nets.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_rgb
from emsrbench.nets.spynet import SpyNet
from emsrbench.nets.vgg19 import ALL_CONVS, CONV_LAYERS, LAYERS, RELU1_2, RELU3_4, VGG19Features, depth_through

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")  # basicsr's own
@pytest.mark.parametrize("hw", [(64, 96), (40, 72)])
def test_six_level_spynet_is_basicsrs(hw):
    """With 6 levels on frames larger than 32 px: basicsr's SpyNet, up to float rounding
    (basicsr's state dict, ImageNet buffers included, loads as it is)."""
    torch.manual_seed(0)
    theirs = basicsr_arch("spynet_arch", "SpyNet")(None).eval()
    ours = SpyNet(6).eval()
    ours.load_state_dict(theirs.state_dict())
    ref, supp = torch.rand(2, 3, *hw), torch.rand(2, 3, *hw)
    with torch.no_grad():
        torch.testing.assert_close(ours(ref, supp), theirs(ref, supp), rtol=1e-5, atol=1e-5)


def test_spynet_levels_and_small_frames():
    ref, supp = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 7, 5)
    with torch.no_grad():
        assert SpyNet(3)(ref, ref).shape == (1, 2, 8, 8)
        flow = SpyNet(6)(supp, supp)  # basicsr's fails below 33 px
    assert flow.shape == (1, 2, 7, 5) and torch.isfinite(flow).all()
    assert len(SpyNet(2).basic_module) == 6  # always all six modules: one file fits every depth
    with pytest.raises(EmsrError, match="SPyNet has 6 levels, asked for 7"):
        SpyNet(7)


def test_spynet_state_dict_keys_and_basicsr_buffers():
    """Our state dict is basicsr's without the ImageNet mean/std; a state dict with them (a
    BasicVSR model file saved when it used basicsr's class) loads when they are ImageNet's,
    and fails, naming the key, when they are not."""
    theirs = basicsr_arch("spynet_arch", "SpyNet")(None).state_dict()
    ours = SpyNet()
    assert set(ours.state_dict()) == set(theirs) - {"mean", "std"}
    wrapped = torch.nn.Module()
    wrapped.spynet = SpyNet()
    wrapped.load_state_dict({f"spynet.{k}": v for k, v in theirs.items()})  # strict
    assert torch.equal(
        wrapped.spynet.basic_module[5].basic_module[8].bias, theirs["basic_module.5.basic_module.8.bias"]
    )
    assert torch.equal(wrapped.spynet.mean.flatten(), torch.tensor(IMAGENET_MEAN))
    theirs["std"] = torch.full((1, 3, 1, 1), 0.5)
    with pytest.raises(RuntimeError, match=r"std is \[0.5, 0.5, 0.5\], SPyNet's ImageNet std is"):
        ours.load_state_dict(theirs)


def test_spynet_file(tmp_path):
    torch.manual_seed(1)
    donor = SpyNet()
    torch.save({"params": donor.state_dict()}, tmp_path / "spynet.pth")
    ours = SpyNet()
    ours.load(tmp_path / "spynet.pth")
    assert all(torch.equal(v, donor.state_dict()[k]) for k, v in ours.state_dict().items())
    torch.save({"params": {"not.spynet": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(EmsrError, match="bad.pth: not a SPyNet checkpoint"):
        ours.load(tmp_path / "bad.pth")


def test_vgg19_layer_names_and_depths():
    tv = torchvision.models.vgg19(weights=None).features
    assert len(LAYERS) == len(tv) == 37
    for name, i in LAYERS.items():
        kind = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}[name[:4]]
        assert isinstance(tv[i], kind), name
    assert list(CONV_LAYERS.values()) == [i for i, m in enumerate(tv) if isinstance(m, torch.nn.Conv2d)]
    assert (RELU1_2, RELU3_4, ALL_CONVS) == (4, 18, 36)
    assert depth_through("conv5_4") == 35
    with pytest.raises(EmsrError, match="no layer 'relu6_1'"):
        depth_through("relu6_1")


def test_vgg19_features_equal_torchvisions(tmp_path):
    torch.manual_seed(0)
    tv = torchvision.models.vgg19(weights=None)
    torch.save(tv.state_dict(), tmp_path / "vgg19.pth")
    x = torch.rand(1, 3, 32, 32)
    vgg = VGG19Features(ALL_CONVS, output=RELU1_2)
    vgg.load(tmp_path / "vgg19.pth")
    assert set(vgg.state_dict()) == {
        k for k in tv.state_dict() if k.startswith("features.") and int(k.split(".")[1]) < 36
    }
    with torch.no_grad():
        torch.testing.assert_close(vgg(x), tv.features[:RELU1_2](x))  # the default output
        torch.testing.assert_close(vgg(x, RELU3_4), tv.features[:RELU3_4](x))
        taps = vgg.taps(x, [CONV_LAYERS["conv1_2"], CONV_LAYERS["conv3_4"]])
        # taken before the in-place ReLU that follows each conv
        torch.testing.assert_close(taps[2], tv.features[:3](x))
        torch.testing.assert_close(taps[16], tv.features[:17](x))
    assert (taps[16] < 0).any()
    assert not any(p.requires_grad for p in vgg.parameters())  # frozen until a caller trains it
    with pytest.raises(EmsrError, match=r"features\[:36\] asked of a stack of 4 layers"):
        VGG19Features(RELU1_2)(x, ALL_CONVS)
    with pytest.raises(EmsrError, match="depth 38 outside"):
        VGG19Features(38)


def test_vgg19_from_file_takes_every_tensor_and_leaves_the_generator(tmp_path):
    """Built on the meta device: the file's tensors, no random draw (Real-ESRGAN builds its
    loss network mid-setup, so a draw would shift every later initialisation)."""
    torch.manual_seed(0)
    state = torchvision.models.vgg19(weights=None).state_dict()
    torch.save(state, tmp_path / "vgg19.pth")
    torch.manual_seed(5)
    vgg = VGG19Features.from_file(tmp_path / "vgg19.pth", depth_through("conv5_4"))
    after = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(after, torch.rand(3))
    assert len(vgg.features) == 35 and torch.equal(vgg.features[34].weight, state["features.34.weight"])
    assert not any(p.requires_grad or p.is_meta for p in vgg.parameters())
    torch.save({"classifier.0.bias": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(EmsrError, match="bad.pth: not a torchvision VGG19 checkpoint"):
        VGG19Features.from_file(tmp_path / "bad.pth", RELU1_2)


def test_imagenet_rgb():
    x = torch.rand(2, 1, 4, 4)
    rgb = imagenet_rgb(x)
    assert rgb.shape == (2, 3, 4, 4)
    for c in range(3):
        torch.testing.assert_close(rgb[:, c], (x[:, 0] - IMAGENET_MEAN[c]) / IMAGENET_STD[c])
