"""GPEMSR training objectives (src/emsrbench/gpemsr/objectives.py) and stage hand-off: each
stage's loss goes down on tiny inputs, the stage I objective resumes exactly, the harness
``fit`` runs every stage, and a checkpoint of other settings is refused in one line."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from emsrbench.errors import EmsrError
from emsrbench.gpemsr import VQGAN, Indexer, build, make_config
from emsrbench.gpemsr.mpf import mask_vgg
from emsrbench.gpemsr.objectives import FusionObjective, IndexerObjective, VQGANObjective, contextual_loss
from emsrbench.gpemsr.stages import load_prior, load_vqgan, read_state
from emsrbench.train import TrainJob, TrainSettings, fit

JOB = SimpleNamespace(method=SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5), scale=8)


def smooth(n: int, size: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(n, 1, size + 6, size + 6, generator=g), 7, 1)
    return (x - x.amin()) / (x.amax() - x.amin())


def run(objective, model, lr_b, hr_b, steps: int, lr: float = 2e-3):
    settings = TrainSettings(iterations=steps, lr=lr, lr_schedule="constant")
    objective.setup(JOB, model, settings, torch.device("cpu"))
    return [objective.step(lr_b, hr_b, s) for s in range(steps)]


def first_last(losses, key="loss", k=3):
    return sum(d[key] for d in losses[:k]) / k, sum(d[key] for d in losses[-k:]) / k


def test_stage1_vqgan_loss_goes_down_and_gan_phase_runs(one_thread):
    torch.manual_seed(0)
    cfg = make_config("quick")
    hr = smooth(4, 64)
    losses = run(VQGANObjective(gan_start=20, r1_every=2), VQGAN(cfg), None, hr, 30)
    before, after = first_last(losses[:20], "rec")
    assert after < 0.7 * before, (before, after)
    assert "disc" in losses[-1] and "gan" in losses[-1] and "disc" not in losses[19]


def test_stage1_resume_is_exact(one_thread):
    torch.manual_seed(0)
    cfg = make_config("quick")
    hr = smooth(2, 64)
    model = VQGAN(cfg)
    obj = VQGANObjective(gan_start=2, r1_every=2)
    run(obj, model, None, hr, 3)
    saved_model, saved_obj = copy.deepcopy(model.state_dict()), copy.deepcopy(obj.state_dict())
    a = [obj.step(None, hr, s) for s in (3, 4)]
    model2 = VQGAN(cfg)
    obj2 = VQGANObjective(gan_start=2, r1_every=2)
    obj2.setup(JOB, model2, TrainSettings(iterations=3, lr=2e-3, lr_schedule="constant"), torch.device("cpu"))
    model2.load_state_dict(saved_model)
    obj2.load_state_dict(saved_obj)
    b = [obj2.step(None, hr, s) for s in (3, 4)]
    assert a == b


def test_stage2_indexer_learns_the_codes(one_thread):
    torch.manual_seed(0)
    cfg = make_config("quick")
    vq = VQGAN(cfg)
    hr = smooth(4, 64)
    lr = F.avg_pool2d(hr, 8).expand(-1, 5, -1, -1)  # (B, 5, 8, 8): the centre is read
    losses = run(IndexerObjective(vq, latent_weight=0.1), Indexer(cfg, 8), lr, hr, 25)
    before, after = first_last(losses, "ce")
    assert after < 0.5 * before, (before, after)
    assert losses[-1]["code_acc"] > losses[0]["code_acc"]


def test_stage3_fusion_l1_goes_down(one_thread):
    """A smoke test of the step: EDVR-style networks (0.1-scaled residual blocks, a residual
    over the bilinear base) start slowly, so the drop over 30 steps is small but steady."""
    g = torch.Generator().manual_seed(0)
    hr = F.interpolate(torch.rand(2, 1, 6, 6, generator=g), size=64, mode="bicubic", align_corners=False).clamp(0, 1)
    lr = F.avg_pool2d(hr, 8).expand(-1, 5, -1, -1).contiguous()
    torch.manual_seed(0)
    losses = run(FusionObjective(), build(8, "quick"), lr, hr, 30, lr=2e-3)
    before, after = first_last(losses)
    assert after < 0.98 * before, (before, after)


def test_contextual_loss_is_zero_for_identical_images_and_has_gradient():
    torch.manual_seed(0)
    vgg = mask_vgg(full=True)
    x = smooth(1, 32)
    same = contextual_loss(vgg, x, x.unsqueeze(1).expand(-1, 3, -1, -1, -1))
    other = contextual_loss(vgg, x, smooth(3, 32, seed=1).unsqueeze(0))
    assert same.item() < 1e-3 < other.item()
    xg = x.clone().requires_grad_(True)
    contextual_loss(vgg, xg, smooth(3, 32, seed=1).unsqueeze(0)).backward()
    assert xg.grad.abs().sum() > 0
    with pytest.raises(EmsrError, match=r"features\[:18\] asked of a stack of 4 layers"):
        contextual_loss(mask_vgg(full=False), x, x.unsqueeze(1))
    with pytest.raises(EmsrError, match="ref_weight"):
        run(FusionObjective(ref_weight=0.01), build(8, "quick"), None, None, 0)


def test_stage_handoff_and_codebook_mismatch(tmp_path):
    torch.manual_seed(0)
    cfg = make_config("quick")
    vq, idx = VQGAN(cfg), Indexer(cfg, 8)
    torch.save({"state_dict": vq.state_dict()}, tmp_path / "stage1.pt")
    torch.save({"state_dict": idx.state_dict()}, tmp_path / "stage2.pt")
    s1, s2 = read_state(tmp_path / "stage1.pt"), read_state(tmp_path / "stage2.pt")
    assert isinstance(load_vqgan(cfg, s1, "stage1.pt"), VQGAN)
    model = build(8, "quick")
    load_prior(model, s1, s2, "stage1.pt", "stage2.pt")
    lr = torch.rand(1, 1, 8, 8)
    feats, img = model.prior(lr)
    torch.testing.assert_close(img, vq.decoder(vq.quantizer.lookup(idx(lr).argmax(1))))
    assert not any(p.requires_grad for p in model.prior.parameters())
    # a stage I model with another codebook is refused by stage II and stage III, in one line
    other = make_config("quick", codebook_size=32)
    with pytest.raises(EmsrError, match=r"stage I codebook is 64 x 32 .* expect 32 x 32") as err:
        load_vqgan(other, s1, "stage1.pt")
    assert "\n" not in str(err.value)
    with pytest.raises(EmsrError, match="stage I codebook is 64 x 32"):
        load_prior(build(8, "quick", codebook_size=32), s1, s2, "stage1.pt", "stage2.pt")
    with pytest.raises(EmsrError, match="indexer predicts 32 codes"):
        load_prior(model, s1, Indexer(other, 8).state_dict(), "stage1.pt", "x.pt")
    with pytest.raises(EmsrError, match="not a stage I VQGAN of these settings"):
        load_vqgan(make_config("quick", encoder_attention=False), s1, "stage1.pt")
    with pytest.raises(EmsrError, match="no such checkpoint"):
        read_state(tmp_path / "absent.pt")


def test_every_stage_runs_under_the_harness_fit(tmp_path, degraded_x8, one_thread):
    """fit() with each objective: checkpoints, resumes, writes the model file."""
    cfg = make_config("quick")
    method = SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5)
    settings = TrainSettings(iterations=4, batch_size=2, patch_size=8, lr=1e-3, checkpoint_every=2)

    def job(stage):
        return TrainJob(
            method=method,
            scale=8,
            preset="quick",
            model_params={},
            settings=settings,
            train_files=[str(degraded_x8)],
            out_path=tmp_path / f"{stage}.pt",
            ckpt_dir=tmp_path / f"ckpt_{stage}",
            threads=1,
        )

    j1 = job("stage1")
    vq = VQGAN(cfg)
    assert fit(j1, max_steps=2, objective=VQGANObjective(gan_start=1, r1_every=2), model=vq) is None
    fit(j1, objective=VQGANObjective(gan_start=1, r1_every=2), model=VQGAN(cfg))  # resumes from step 2
    s1 = read_state(j1.out_path)
    fit(job("stage2"), objective=IndexerObjective(load_vqgan(cfg, s1, "stage1.pt")), model=Indexer(cfg, 8))
    net = build(8, "quick")
    load_prior(net, s1, read_state(tmp_path / "stage2.pt"), "stage1.pt", "stage2.pt")
    fit(job("stage3"), objective=FusionObjective(), model=net)
    final = torch.load(tmp_path / "stage3.pt", weights_only=True)
    assert final["parameters"] > 0 and (tmp_path / "ckpt_stage3" / "last.pt").exists()


def test_three_stage_train_writes_every_stage_and_flags(tmp_path, degraded_x8, one_thread):
    """training.train(job): stages I-III from the preset's stage settings, stage files beside
    the model, missing VGG/SPyNet flagged; a bad objective keyword is a one-line error."""
    from emsrbench.gpemsr import training
    from emsrbench.pretrained import Pretrained

    method = SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5)
    # stage I patches count HR pixels (scale-independent), the others LR pixels
    stages = {
        "vqgan": {"iterations": 2, "patch_size": 64, "objective": {"gan_start": 1, "r1_every": 1}},
        "indexer": {"iterations": 2, "objective": {"latent_weight": 0.1}},
        "fusion": {"iterations": 2},
    }
    settings = TrainSettings(iterations=6, batch_size=2, patch_size=8, lr=1e-3, checkpoint_every=1, stages=stages)
    job = TrainJob(
        method=method,
        scale=8,
        preset="quick",
        model_params={"preset": "quick"},
        settings=settings,
        train_files=[str(degraded_x8)],
        val_files=[str(degraded_x8)],
        out_path=tmp_path / "m.pt",
        ckpt_dir=tmp_path / "ckpt",
        threads=1,
        pretrained=Pretrained(tmp_path / "weights"),
    )
    training.train(job)
    stage1, stage2, final = (
        torch.load(tmp_path / f, weights_only=True) for f in ("m.stage1.pt", "m.stage2.pt", "m.pt")
    )
    assert (stage1["gpemsr_stage"], stage2["gpemsr_stage"], final["gpemsr_stage"]) == ("vqgan", "indexer", "fusion")
    assert final["train_seconds"] > stage1["train_seconds"] + stage2["train_seconds"]
    assert len(final["flags"]) == 2 and final["val_psnr"] > 0
    model = build(8, **final["model_params"])
    model.load_state_dict(final["state_dict"])  # what inference does
    bad = dict(stages, vqgan={"iterations": 2, "objective": {"gan_strat": 1}})
    job.settings = TrainSettings(iterations=6, batch_size=2, patch_size=8, stages=bad)
    with pytest.raises(EmsrError, match="stages.vqgan.objective: .*gan_strat"):
        training.train_vqgan(job, tmp_path / "x.pt", tmp_path / "ckpt_x")


def test_ema_codebook_starts_from_latents_after_the_autoencoder_warmup(one_thread):
    """Quick preset: the stage I objective trains a plain auto-encoder for quantize_start
    steps, then the EMA codebook starts at that step's latents and follows them (no gradient)."""
    torch.manual_seed(0)
    cfg = make_config("quick")
    assert cfg.codebook_ema > 0 and make_config("paper").codebook_ema == 0
    vq = VQGAN(cfg)
    q = vq.quantizer
    assert not q.codebook.weight.requires_grad and {"cluster_size", "embed_sum", "initialised"} <= set(
        dict(q.named_buffers())
    )
    hr = smooth(4, 64)
    losses = run(VQGANObjective(gan_start=100, quantize_start=3), vq, None, hr, 6)
    assert [d["codebook"] for d in losses[:3]] == [0.0, 0.0, 0.0] and losses[3]["codebook"] > 0
    assert bool(q.initialised)
    with torch.no_grad():
        z = vq.encoder(hr)
    # every code is some latent's running mean: the codebook lives where the latents are
    assert q.codebook.weight.abs().mean() > 10 * (1.0 / cfg.codebook_size)
    assert q.nearest(z).unique().numel() > 1
    # eval-mode forwards (stages II and III) never move the codebook
    before = q.codebook.weight.clone()
    vq.eval()
    vq(hr)
    torch.testing.assert_close(q.codebook.weight, before)


def test_quick_stage3_starts_at_the_bilinear_base_through_the_lr_path():
    """init "kaiming": zero last conv (the output is the bilinear base) and F^Out = the LR
    features, so the network starts as its "without MPF" ablation whatever the prior says."""
    torch.manual_seed(0)
    model = build(8, "quick").eval()
    lr = torch.rand(1, 5, 8, 8)
    base = F.interpolate(lr[:, 2:3], scale_factor=8, mode="bilinear", align_corners=False)
    with torch.no_grad():
        torch.testing.assert_close(model(lr), base)
        flat = lr.reshape(5, 1, 8, 8)
        feat = model.front(model.act(model.conv_first(flat - model.cfg.grey_mean)))
        prior_feats, prior_img = model.prior(flat)
        torch.testing.assert_close(model.mpf(feat, flat, prior_feats, prior_img), feat)
    paper = make_config("paper")
    assert (paper.init, paper.grey_mean) == ("study", 0.0)


def test_stage1_samples_hr_patches_in_hr_pixels(degraded_x8):
    import numpy as np

    from emsrbench.gpemsr.training import HRSampler

    sampler = HRSampler([str(degraded_x8)])
    a, b = sampler.batch(np.random.default_rng(0), 3, 32, True)
    assert a.shape == (3, 1, 32, 32) and a is b and 0 <= a.min() and a.max() <= 1
    with pytest.raises(EmsrError, match="smaller than the stage I patch_size 128"):
        sampler.batch(np.random.default_rng(0), 1, 128, False)


def test_reference_loss_is_dropped_for_variants_without_the_prior(tmp_path, degraded_x8, one_thread, capsys):
    from emsrbench.gpemsr import training

    method = SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5)
    settings = TrainSettings(
        iterations=1,
        batch_size=1,
        patch_size=8,
        stages={"fusion": {"iterations": 1, "objective": {"ref_weight": 0.01}}},
    )
    job = TrainJob(
        method=method,
        scale=8,
        preset="quick",
        model_params={"preset": "quick", "variant": "no_mpf"},
        settings=settings,
        train_files=[str(degraded_x8)],
        out_path=tmp_path / "m.pt",
        ckpt_dir=tmp_path / "c",
        threads=1,
    )
    training.train_fusion(job, None, None, tmp_path / "m.pt", tmp_path / "c")
    assert "no reference loss" in capsys.readouterr().err and (tmp_path / "m.pt").exists()


def test_flow_lr_mul_slows_only_a_trained_spynet():
    model = build(8, "quick")
    model.pod.spynet.requires_grad_(True)  # as when its pretrained weights are absent
    obj = FusionObjective(flow_lr_mul=0.125)
    obj.setup(JOB, model, TrainSettings(iterations=2, lr=1e-3), torch.device("cpu"))
    rest, flow = obj.opt.param_groups
    assert flow["lr"] == pytest.approx(1.25e-4) and rest["lr"] == pytest.approx(1e-3)
    assert sum(p.numel() for p in flow["params"]) == sum(p.numel() for p in model.pod.spynet.parameters())


# -- resume within stages II and III (stage I: test_stage1_resume_is_exact) ---------------


def _stage_job(tmp_path: Path, train_file: Path, name: str, stages: dict, scale: int = 8):
    method = SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5)
    settings = TrainSettings.merged(
        {
            "iterations": sum(s["iterations"] for s in stages.values()),
            "batch_size": 2,
            "patch_size": 8,
            "lr": 1e-3,
            "checkpoint_every": 100,
            "stages": stages,
        }
    )
    return TrainJob(
        method=method,
        scale=scale,
        preset="quick",
        model_params={"preset": "quick"},
        settings=settings,
        train_files=[str(train_file)],
        out_path=tmp_path / name / "model.pt",
        ckpt_dir=tmp_path / name / "ckpt",
        threads=1,
    )


def _killed_then_resumed(monkeypatch, stage_fn, kill_at: int, ckpt_dir: Path):
    """Run ``stage_fn`` as a job killed right after its checkpoint at step ``kill_at`` (the
    trainer's own simulated kill: ``fit(max_steps=...)``), then rerun it as the workflow would."""
    from emsrbench.gpemsr import training

    real = training.fit
    monkeypatch.setattr(training, "fit", lambda *a, **k: real(*a, max_steps=kill_at, **k))
    stage_fn()
    monkeypatch.setattr(training, "fit", real)
    assert torch.load(ckpt_dir / "last.pt", weights_only=True)["step"] == kill_at
    stage_fn()


def _same_weights(a: Path, b: Path) -> None:
    wa, wb = read_state(a), read_state(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def _stage1_file(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "stage1.pt"
    torch.save({"state_dict": VQGAN(make_config("quick")).state_dict(), "train_seconds": 0.0}, path)
    return path


def test_stage2_resume_equals_uninterrupted(tmp_path, degraded_x8, one_thread, monkeypatch):
    """Stage II (indexer) killed after step 3 of 6 and rerun gives the uninterrupted weights,
    with the cosine-restarts schedule (its position is part of the checkpoint)."""
    from emsrbench.gpemsr import training

    stages = {
        "indexer": {
            "iterations": 6,
            "lr_schedule": "cosine_restarts",
            "lr_periods": [2, 4],
            "lr_restart_weights": [1, 0.5],
            "objective": {"latent_weight": 0.1},
        }
    }
    vq = _stage1_file(tmp_path)
    whole, broken = (
        _stage_job(tmp_path, degraded_x8, "whole", stages),
        _stage_job(tmp_path, degraded_x8, "broken", stages),
    )
    training.train_indexer(whole, vq, whole.out_path, whole.ckpt_dir)
    _killed_then_resumed(
        monkeypatch, lambda: training.train_indexer(broken, vq, broken.out_path, broken.ckpt_dir), 3, broken.ckpt_dir
    )
    _same_weights(whole.out_path, broken.out_path)
    # the kill's checkpoint carried the schedule's position (in its second period by then)
    sched = torch.load(broken.ckpt_dir / "last.pt", weights_only=True)["objective"]["scheduler"]
    assert sched["last_epoch"] == 3 and sched["periods"] == [2, 4]


def test_stage3_resume_equals_uninterrupted(tmp_path, degraded_x8, one_thread, monkeypatch):
    """Stage III (fusion, the quick preset's objective: MSE, SPyNet at 1/8 of the rate) killed
    after step 2 of 4 and rerun gives the uninterrupted weights."""
    from emsrbench.gpemsr import training

    stages = {"fusion": {"iterations": 4, "loss": "mse", "objective": {"flow_lr_mul": 0.125}}}
    cfg = make_config("quick")
    vq = _stage1_file(tmp_path)
    torch.manual_seed(1)
    idx = tmp_path / "stage2.pt"
    torch.save({"state_dict": Indexer(cfg, 8).state_dict(), "train_seconds": 0.0}, idx)
    whole, broken = (
        _stage_job(tmp_path, degraded_x8, "whole", stages),
        _stage_job(tmp_path, degraded_x8, "broken", stages),
    )
    training.train_fusion(whole, vq, idx, whole.out_path, whole.ckpt_dir)
    _killed_then_resumed(
        monkeypatch,
        lambda: training.train_fusion(broken, vq, idx, broken.out_path, broken.ckpt_dir),
        2,
        broken.ckpt_dir,
    )
    _same_weights(whole.out_path, broken.out_path)
    # the run did move the weights (resume is not trivially equal to the initialisation)
    init = build(8, "quick")
    moved = read_state(whole.out_path)
    assert any(not torch.equal(moved[k], v) for k, v in init.state_dict().items() if not k.startswith("prior."))


# -- the paper preset's schedule: cosine annealing with restarts ------------------------


def basicsr_restart_lr(t: int, base: float, periods, weights, eta_min: float) -> float:
    """BasicSR's CosineAnnealingRestartLR at iteration t, computed directly."""
    ends = [sum(periods[: i + 1]) for i in range(len(periods))]
    i = next(i for i, e in enumerate(ends) if t <= e)
    start = ends[i - 1] if i else 0
    return eta_min + weights[i] * 0.5 * (base - eta_min) * (1 + math.cos(math.pi * (t - start) / periods[i]))


def test_cosine_restarts_follows_the_formula_step_by_step():
    from emsrbench.train import make_scheduler

    periods, weights = [3, 5, 4], [1.0, 0.5, 0.25]
    st = TrainSettings.merged(
        {
            "iterations": 12,
            "lr": 1e-3,
            "lr_min": 1e-5,
            "lr_schedule": "cosine_restarts",
            "lr_periods": periods,
            "lr_restart_weights": weights,
        }
    )
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=st.lr)
    sched = make_scheduler(opt, st)
    seen = []
    for _ in range(12):
        seen.append(opt.param_groups[0]["lr"])  # the rate of this step
        opt.step()
        sched.step()
    seen.append(opt.param_groups[0]["lr"])
    expected = [basicsr_restart_lr(t, 1e-3, periods, weights, 1e-5) for t in range(13)]
    assert seen == pytest.approx(expected, rel=1e-12, abs=0)
    # the shape: the base rate at 0, eta_min at each period's end, a restart at weight x base after it
    assert seen[0] == pytest.approx(1e-3) and seen[3] == pytest.approx(1e-5) and seen[8] == pytest.approx(1e-5)
    assert seen[4] == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi / 5)))
    # periods that do not add up to the run's iterations are rescaled (a smoke-test override)
    short = TrainSettings.merged(
        {"iterations": 6, "lr_schedule": "cosine_restarts", "lr_periods": periods, "lr_restart_weights": weights}
    )
    assert short.restart_periods() == ([2, 2, 2], weights)
    tiny = TrainSettings.merged({"iterations": 1, "lr_schedule": "cosine_restarts", "lr_periods": periods})
    assert tiny.restart_periods() == ([1], [1.0])


def test_paper_preset_restarts_the_cosine_as_the_study():
    from emsrbench.methods import METHODS_DIR, load_method
    from emsrbench.train import make_scheduler

    method = load_method(METHODS_DIR / "gpemsr")
    for scale in (8, 16):
        st = TrainSettings.merged({}, method.preset("paper", scale)["train"])
        for stage in ("vqgan", "indexer", "fusion"):
            s = st.stage(stage)
            # the study's T_period [40k, 80k, 120k, 120k, 120k], restart weights 1, eta_min 1e-7, 480k iterations
            assert s.iterations == 480000 and s.lr == 4e-4 and s.lr_min == 1e-7
            assert s.restart_periods() == ([40000, 80000, 120000, 120000, 120000], [1.0] * 5)
    opt = torch.optim.Adam(torch.nn.Linear(2, 2).parameters(), lr=4e-4)
    sched = make_scheduler(opt, st.stage("fusion"))
    for t in (0, 1, 20000, 40000, 40001, 100000, 120000, 120001, 300000, 479999, 480000):
        sched.last_epoch = t  # the schedule is closed-form in the iteration
        expected = basicsr_restart_lr(t, 4e-4, [40000, 80000, 120000, 120000, 120000], [1] * 5, 1e-7)
        assert sched.get_lr()[0] == pytest.approx(expected, rel=1e-12), t
    assert basicsr_restart_lr(40000, 4e-4, [40000, 80000], [1, 1], 1e-7) == pytest.approx(1e-7)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"lr_schedule": "cosine_restarts"}, "needs lr_periods"),
        ({"lr_schedule": "cosine_restarts", "lr_periods": [10, 0]}, "needs lr_periods"),
        ({"lr_schedule": "cosine_restarts", "lr_periods": [10, 2.5]}, "needs lr_periods"),
        (
            {"lr_schedule": "cosine_restarts", "lr_periods": [10, 20], "lr_restart_weights": [1]},
            "lr_restart_weights has 1 entries, lr_periods 2",
        ),
        ({"lr_schedule": "cosine_restarts", "lr_periods": [10], "lr_restart_weights": [-1]}, "numbers >= 0"),
        ({"lr_periods": [10]}, "need lr_schedule: cosine_restarts"),
        ({"lr_schedule": "restarts"}, "'cosine', 'constant' or 'cosine_restarts'"),
    ],
)
def test_cosine_restarts_settings_errors(settings, message):
    with pytest.raises(EmsrError, match=message) as err:
        TrainSettings.merged(settings, source="m/method.yaml presets.paper.train")
    assert str(err.value).startswith("m/method.yaml presets.paper.train: ") and "\n" not in str(err.value)


def test_contextual_loss_in_row_blocks_equals_the_whole_tensor():
    """Blocks of rows (recomputed in the backward pass) give the loss and its gradient of the
    whole (N, P_x, P_y) computation to 1e-5, whatever the block size (1 row, uneven, all)."""
    torch.manual_seed(0)
    vgg = mask_vgg(full=True)
    x = smooth(2, 24).requires_grad_(True)
    prior = torch.stack([smooth(3, 24, seed=1), smooth(3, 24, seed=2)])
    whole = contextual_loss(vgg, x, prior, block_elements=10**9)
    (g_whole,) = torch.autograd.grad(whole, x)
    n, p = 2 * 3, 6 * 6  # relu3_4 of 24 px: 6 x 6 positions
    for rows in (1, 5, p):
        loss = contextual_loss(vgg, x, prior, block_elements=rows * n * p)
        (grad,) = torch.autograd.grad(loss, x)
        assert abs(loss.item() - whole.item()) < 1e-5
        assert torch.allclose(grad, g_whole, atol=1e-5, rtol=1e-4)
