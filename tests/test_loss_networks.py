"""No trainable loss networks (issue #12): a network inside a loss (GPEMSR's contextual-loss
VGG19, Real-ESRGAN's perceptual VGG19) is frozen and in no optimiser; without its pretrained
weights the loss term is disabled and flagged, never measured through a network that learns."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from emsrbench.gpemsr.model import attach_pretrained, build
from emsrbench.gpemsr.objectives import FusionObjective
from emsrbench.methods import METHODS_DIR, load_method
from emsrbench.pretrained import Pretrained, missing_flag
from emsrbench.train import TrainSettings

REALESRGAN = load_method(METHODS_DIR / "realesrgan")


def optimised(objective) -> set[int]:
    """ids of every parameter some optimiser of ``objective`` steps."""
    return {
        id(p)
        for value in vars(objective).values()
        if isinstance(value, torch.optim.Optimizer)
        for group in value.param_groups
        for p in group["params"]
    }


def fusion_job(pretrained: Pretrained):
    return SimpleNamespace(
        method=SimpleNamespace(name="gpemsr", model_py=Path("gpemsr/model.py"), slices=5),
        scale=8,
        flags=[],
        pretrained=pretrained,
    )


def gpemsr_with_reference_loss(pretrained: Pretrained):
    torch.manual_seed(0)
    model = build(8, "quick", vgg_full=True)
    job = fusion_job(pretrained)
    job.flags.extend(attach_pretrained(model, pretrained))
    objective = FusionObjective(ref_weight=0.01)
    objective.setup(job, model, TrainSettings(iterations=2, lr_schedule="constant"), torch.device("cpu"))
    return job, model, objective


def test_gpemsr_contextual_loss_vgg_is_frozen_and_in_no_optimiser(random_vgg19, one_thread):
    pretrained, state = random_vgg19
    job, model, objective = gpemsr_with_reference_loss(pretrained)
    vgg = objective.loss_vgg
    assert vgg is not None and torch.equal(vgg.features[0].weight, state["features.0.weight"])
    assert not any(p.requires_grad for p in vgg.parameters())
    assert not optimised(objective) & {id(p) for p in vgg.parameters()}
    assert missing_flag("vgg19", "contextual reference loss disabled") not in job.flags
    before = {k: v.clone() for k, v in vgg.state_dict().items()}
    lr_b, hr_b = torch.rand(1, 5, 4, 4), torch.rand(1, 1, 32, 32)
    losses = objective.step(lr_b, hr_b, 0)
    assert losses["ref"] > 0
    assert all(torch.equal(before[k], v) for k, v in vgg.state_dict().items())


def test_gpemsr_without_vgg19_disables_the_contextual_loss(tmp_path, one_thread):
    job, model, objective = gpemsr_with_reference_loss(Pretrained(tmp_path))
    # the MPF mask's VGG stays random and frozen, as the study freezes it (flagged) ...
    before = {k: v.clone() for k, v in model.mpf.vgg.state_dict().items()}
    assert not any(p.requires_grad for p in model.mpf.vgg.parameters())
    assert not optimised(objective) & {id(p) for p in model.mpf.vgg.parameters()}
    assert missing_flag("vgg19", "MPF mask VGG random and frozen") in job.flags
    # ... and no loss is measured through random features
    assert objective.loss_vgg is None
    assert missing_flag("vgg19", "contextual reference loss disabled") in job.flags
    losses = objective.step(torch.rand(1, 5, 4, 4), torch.rand(1, 1, 32, 32), 0)
    assert "ref" not in losses
    assert all(torch.equal(before[k], v) for k, v in model.mpf.vgg.state_dict().items())


def test_realesrgan_perceptual_vgg_is_in_no_optimiser(tmp_path, random_vgg19, one_thread):
    pretrained, _ = random_vgg19
    mod = REALESRGAN.module()
    job = SimpleNamespace(method=REALESRGAN, scale=8, flags=[], pretrained=pretrained)
    objective = mod.RealESRGANObjective(d_num_feat=4)
    settings = TrainSettings(iterations=2, batch_size=2, patch_size=4)
    objective.setup(job, mod.build(8, num_feat=8, num_block=1, num_grow_ch=4), settings, torch.device("cpu"))
    loss_net = {id(p) for p in objective.perceptual.parameters()}
    assert loss_net and not optimised(objective) & loss_net
    assert not any(p.requires_grad for p in objective.perceptual.parameters())
