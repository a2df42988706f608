"""Real-ESRGAN: the RRDBNet generator at 8x/16x, the published size, both training stages
(L1, then L1 + perceptual + GAN), resume after a kill in stage 2, the VGG19 registry paths."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from emsrbench.compat import basicsr_arch
from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.pretrained import Pretrained, missing_flag
from emsrbench.train import TrainJob, TrainSettings, count_parameters

METHOD = load_method(METHODS_DIR / "realesrgan")
MOD = METHOD.module()
TINY = {"num_feat": 8, "num_block": 1, "num_grow_ch": 4}
NO_VGG = missing_flag("vgg19", "perceptual loss disabled")


def quick_model(scale):
    return MOD.build(scale, **METHOD.preset("quick")["model"])


@pytest.mark.parametrize("scale", [2, 4, 8, 16])
def test_forward_shape_any_power_of_two(scale):
    with torch.no_grad():
        sr = quick_model(scale)(torch.rand(2, 1, 7, 5))
    assert sr.shape == (2, 1, 7 * scale, 5 * scale) and torch.isfinite(sr).all()


def test_upsampler_extends_basicsr_rrdbnet():
    RRDBNet = basicsr_arch("rrdbnet_arch", "RRDBNet")
    # The trap this method works around: basicsr's RRDBNet asked for 8x returns 4x.
    with torch.no_grad():
        assert RRDBNet(1, 1, scale=8, **TINY)(torch.rand(1, 1, 6, 6)).shape[-1] == 24
    # One nearest-x2 + conv stage per factor of two; at 4x it is exactly basicsr's network.
    for scale, ups in [(4, 2), (8, 3), (16, 4)]:
        net = MOD.build(scale, **TINY)
        assert isinstance(net, RRDBNet)
        assert sorted(k for k, _ in net.named_children() if k.startswith("conv_up")) == [
            f"conv_up{i}" for i in range(1, ups + 1)
        ]
    ours, ref = MOD.build(4, **TINY), RRDBNet(1, 1, scale=4, **TINY)
    ref.load_state_dict(ours.state_dict())  # same keys and shapes
    x = torch.rand(2, 1, 6, 7)
    with torch.no_grad():
        assert torch.equal(ours(x), ref(x))


def test_paper_parameter_count():
    # ESRGAN/Real-ESRGAN RRDBNet (23 blocks, 64 features, growth 32) at 4x: 16,697,987 (RGB).
    params = METHOD.preset("paper")["model"]
    assert params == {"num_feat": 64, "num_block": 23, "num_grow_ch": 32}
    n = count_parameters(MOD.build(4, **params))
    assert abs(n - 16_697_987) / 16_697_987 < 0.02, n
    # 8x/16x add one 64x64 3x3 conv per extra x2 stage.
    assert count_parameters(MOD.build(16, **params)) - n == 2 * (64 * 64 * 9 + 64)


def tiny_job(tmp_path: Path, train_file: Path, name: str, pretrained=None, **settings) -> TrainJob:
    base = {
        "iterations": 6,
        "batch_size": 2,
        "patch_size": 4,
        "checkpoint_every": 2,
        "log_every": 1,
        "stages": {
            "esrnet": {"iterations": 3, "lr": 1e-3},
            "esrgan": {
                "iterations": 3,
                "lr": 1e-4,
                "lr_schedule": "constant",
                "ema_decay": 0.5,
                "objective": {"d_num_feat": 4},
            },
        },
    }
    return TrainJob(
        method=METHOD,
        scale=8,
        preset="quick",
        model_params=TINY,
        settings=TrainSettings.merged({**base, **settings}),
        train_files=[str(train_file)],
        out_path=tmp_path / name / "model.pt",
        ckpt_dir=tmp_path / name / "ckpt",
        threads=1,
        pretrained=pretrained or Pretrained(tmp_path / "no-weights"),
    )


def test_two_stages_write_the_generator_only_and_flag_missing_vgg(tmp_path, degraded_x8):
    job = tiny_job(tmp_path, degraded_x8, "two")
    job.val_files = [str(degraded_x8)]
    MOD.train(job)
    meta = torch.load(job.out_path, weights_only=True)
    assert meta["state_dict"].keys() == MOD.build(8, **TINY).state_dict().keys()  # no discriminator
    assert meta["flags"] == [NO_VGG]
    assert meta["iterations"] == 6 and meta["stages"]["esrnet"]["iterations"] == 3
    assert meta["train_seconds"] > meta["stages"]["esrnet"]["train_seconds"] > 0
    assert 5 < meta["val_psnr"] < 60 and math.isfinite(meta["final_loss"])
    esrnet = torch.load(job.ckpt_dir / "esrnet" / "model.pt", weights_only=True)
    assert esrnet["stage"] == "esrnet"
    assert any(not torch.equal(esrnet["state_dict"][k], meta["state_dict"][k]) for k in esrnet["state_dict"])
    # The stage-2 checkpoint holds the discriminator and both optimizers, as plain tensors.
    ckpt = torch.load(job.ckpt_dir / "esrgan" / "last.pt", weights_only=True)
    assert {"net_d", "opt_g", "opt_d", "sched_g", "sched_d"} <= set(ckpt["objective"]) and "ema" in ckpt
    assert any(k.endswith("weight_orig") for k in ckpt["objective"]["net_d"])  # spectral norm
    # The harness loads the file as a plain generator.
    from emsrbench.infer import load_model

    model, _ = load_model(METHOD, 8, TINY, job.out_path, torch.device("cpu"))
    with torch.no_grad():
        assert model(torch.rand(1, 1, 5, 6)).shape == (1, 1, 40, 48)


def test_kill_in_stage_two_then_resume_equals_uninterrupted(tmp_path, degraded_x8, capfd):
    whole = tiny_job(tmp_path, degraded_x8, "whole")
    MOD.train(whole)
    broken = tiny_job(tmp_path, degraded_x8, "broken")
    assert MOD.train(broken, max_steps=4) is None  # stage 1 (3 steps) done, killed after step 1 of stage 2
    assert not broken.out_path.exists()
    stage1 = broken.ckpt_dir / "esrnet" / "model.pt"
    before = stage1.stat().st_mtime_ns
    assert torch.load(broken.ckpt_dir / "esrgan" / "last.pt", weights_only=True)["step"] == 1
    MOD.train(broken)
    err = capfd.readouterr().err
    # stage 1's file has this run's fingerprint: kept, not redone; stage 2 resumes
    assert (
        "esrnet/model.pt is trained from these inputs already" in err
        and "resuming realesrgan x8 esrgan from step 1" in err
    )
    assert stage1.stat().st_mtime_ns == before
    a, b = torch.load(whole.out_path)["state_dict"], torch.load(broken.out_path)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_kill_in_stage_one_then_resume_equals_uninterrupted(tmp_path, degraded_x8):
    whole, broken = tiny_job(tmp_path, degraded_x8, "whole"), tiny_job(tmp_path, degraded_x8, "broken")
    MOD.train(whole)
    assert MOD.train(broken, max_steps=2) is None
    assert not (broken.ckpt_dir / "esrnet" / "model.pt").exists()
    MOD.train(broken)
    a, b = torch.load(whole.out_path)["state_dict"], torch.load(broken.out_path)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_objective_settings_are_checked(tmp_path, degraded_x8):
    from emsrbench.errors import EmsrError

    job = tiny_job(
        tmp_path,
        degraded_x8,
        "bad",
        stages={"esrnet": {"iterations": 3}, "esrgan": {"iterations": 3, "objective": {"gan_wieght": 1}}},
    )
    with pytest.raises(EmsrError, match="stages.esrgan.objective.*gan_wieght"):
        MOD.train(job)
    job = tiny_job(tmp_path, degraded_x8, "nostage", stages={"esrnet": {"iterations": 3}})
    with pytest.raises(EmsrError, match="no stage 'esrgan'"):
        MOD.train(job)


def test_perceptual_loss_with_vgg19_from_the_registry(tmp_path, degraded_x8, random_vgg19):
    pretrained, state = random_vgg19
    job = tiny_job(tmp_path, degraded_x8, "vgg", pretrained=pretrained)
    objective = MOD.RealESRGANObjective(d_num_feat=4)
    model = MOD.build(8, **TINY)
    objective.setup(job, model, job.settings.stage("esrgan"), torch.device("cpu"))
    assert job.flags == []
    percep = objective.perceptual
    assert percep is not None and len(percep.vgg.features) == 35  # up to conv5_4
    assert torch.equal(percep.vgg.features[34].weight, state["features.34.weight"])
    assert not any(p.requires_grad for p in percep.parameters())
    # Features are taken before the activation, on ImageNet-normalised grey -> RGB input.
    x = torch.rand(1, 1, 32, 32)
    feats = percep.extract(x)
    ref = torchvision.models.vgg19(weights=None)
    ref.load_state_dict(state)
    norm = (x.repeat(1, 3, 1, 1) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(feats["conv5_4"], ref.features[:35](norm), atol=1e-5)
        assert torch.allclose(feats["conv1_2"], ref.features[:3](norm), atol=1e-5)
        assert (feats["conv3_4"] < 0).any()  # pre-activation
    # The weighted sum of Real-ESRGAN's five layers.
    y = torch.rand(1, 1, 32, 32)
    fy = percep.extract(y)
    expected = sum(w * torch.nn.functional.l1_loss(feats[k], fy[k]) for k, w in MOD.REAL_ESRGAN_LAYERS.items())
    assert percep(x, y).item() == pytest.approx(expected.item(), rel=1e-5)
    # A GAN step uses it, and gradients reach the generator only.
    lr_b, hr_b = torch.rand(2, 1, 4, 4), torch.rand(2, 1, 32, 32)
    torch.manual_seed(0)
    losses = {k: float(v) for k, v in objective.step(lr_b, hr_b, 0).items()}  # detached 0-d tensors
    assert losses["l_percep"] > 0 and losses["loss"] == pytest.approx(
        losses["l_pix"] + losses["l_percep"] + losses["l_gan"], rel=1e-5
    )
    assert all(p.grad is None for p in percep.parameters())


def test_missing_vgg19_disables_the_perceptual_term(tmp_path, degraded_x8):
    job = tiny_job(tmp_path, degraded_x8, "novgg")
    objective = MOD.RealESRGANObjective(d_num_feat=4)
    objective.setup(job, MOD.build(8, **TINY), job.settings.stage("esrgan"), torch.device("cpu"))
    assert objective.perceptual is None and job.flags == [NO_VGG]
    losses = objective.step(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 32, 32), 0)
    assert losses["l_percep"] == 0
