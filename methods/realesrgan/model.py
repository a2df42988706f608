"""Real-ESRGAN (Wang et al., ICCVW 2021): RRDBNet trained in two stages.

1. Real-ESRNet: the RRDBNet generator trained with L1 (the harness objective).
2. Real-ESRGAN: initialised from stage 1, trained with L1 + VGG19 perceptual loss + vanilla
   GAN loss against a U-Net discriminator with spectral normalisation.

The architectures are basicsr 1.4.2's (``RRDBNet``, ``UNetDiscriminatorSN``); the losses and
the update order follow basicsr's ``PerceptualLoss`` / ``GANLoss`` and Real-ESRGAN's
``RealESRGANModel.optimize_parameters``. Both stages run in the harness loop
(:func:`emsrbench.train.fit`), so each is seeded per step and resumable; stage 1 checkpoints
in ``<ckpt_dir>/esrnet`` and leaves its result in ``<ckpt_dir>/esrnet/model.pt``, stage 2
checkpoints in ``<ckpt_dir>/esrgan``. The model file holds the generator only.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

from emsrbench import device as devices
from emsrbench import train as harness
from emsrbench.compat import basicsr_arch
from emsrbench.errors import EmsrError
from emsrbench.nets.imagenet import imagenet_rgb
from emsrbench.nets.vgg19 import CONV_LAYERS, VGG19Features
from emsrbench.pretrained import Pretrained, missing_flag

STAGES = ("esrnet", "esrgan")


# --------------------------------------------------------------------------- generator


@lru_cache(maxsize=None)
def _rrdbnet_class():
    RRDBNet = basicsr_arch("rrdbnet_arch", "RRDBNet")
    pixel_unshuffle = basicsr_arch("arch_util", "pixel_unshuffle")

    class RRDBNetEM(RRDBNet):
        """basicsr's RRDBNet with one grey channel and any power-of-two scale.

        basicsr builds 4x from exactly two (nearest x2 -> conv -> LeakyReLU) stages and reaches
        2x by pixel-unshuffling the input first; asked for scale=8 it silently returns 4x.
        Here scale 2^k (k >= 2) has k such stages: ``conv_up1``, ``conv_up2`` are basicsr's,
        ``conv_up3`` (8x) and ``conv_up4`` (16x) are added the same way (as ESRGAN's 8x
        models do), so at 2x/4x the weights are exactly basicsr's.
        """

        def __init__(self, scale: int, num_feat: int, num_block: int, num_grow_ch: int):
            if scale < 2 or scale & (scale - 1):
                raise ValueError(f"scale must be a power of two >= 2, got {scale}")
            super().__init__(
                1, 1, scale=2 if scale == 2 else 4, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch
            )
            self.scale = scale
            self.num_up = 2 if scale == 2 else int(math.log2(scale))
            for i in range(3, self.num_up + 1):
                setattr(self, f"conv_up{i}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))

        def forward(self, x):
            h, w = x.shape[-2:]
            if self.scale == 2:
                # pixel-unshuffle needs even sizes: reflect-pad, crop the output.
                x = F.pad(x, (0, w % 2, 0, h % 2), mode="reflect")
                feat = pixel_unshuffle(x, scale=2)
            else:
                feat = x
            feat = self.conv_first(feat)
            feat = feat + self.conv_body(self.body(feat))
            for i in range(1, self.num_up + 1):
                feat = self.lrelu(getattr(self, f"conv_up{i}")(F.interpolate(feat, scale_factor=2, mode="nearest")))
            out = self.conv_last(self.lrelu(self.conv_hr(feat)))
            return out[..., : h * self.scale, : w * self.scale]

    return RRDBNetEM


def build(scale: int, num_feat: int = 64, num_block: int = 23, num_grow_ch: int = 32) -> nn.Module:
    """The Real-ESRGAN generator (the inference network): RRDBNet, 1 grey channel in and out."""
    return _rrdbnet_class()(scale, num_feat, num_block, num_grow_ch)


# --------------------------------------------------------------------------- losses

REAL_ESRGAN_LAYERS = {"conv1_2": 0.1, "conv2_2": 0.1, "conv3_4": 1.0, "conv4_4": 1.0, "conv5_4": 1.0}


class VGGPerceptualLoss(nn.Module):
    """basicsr's ``PerceptualLoss`` as Real-ESRGAN configures it: frozen ImageNet VGG19 (from
    the file at ``vgg_file``), features of convs before their activation, ImageNet input
    normalisation, L1 per layer, weighted sum. Grey images are repeated to three channels."""

    def __init__(self, vgg_file, layer_weights: dict, weight: float = 1.0):
        super().__init__()
        unknown = set(layer_weights) - set(CONV_LAYERS)
        if unknown:
            raise EmsrError(
                f"realesrgan: perceptual layer_weights: unknown VGG19 layer(s) {sorted(unknown)} "
                f"(known: {list(CONV_LAYERS)})"
            )
        self.layers = {CONV_LAYERS[k]: k for k in layer_weights}
        self.vgg = VGG19Features.from_file(vgg_file, depth=max(self.layers) + 1).eval()
        self.layer_weights = dict(layer_weights)
        self.weight = weight

    def train(self, mode: bool = True):  # the loss network stays in eval mode
        return super().train(False)

    def extract(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {self.layers[i]: f for i, f in self.vgg.taps(imagenet_rgb(x), self.layers).items()}

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        f_sr = self.extract(sr)
        with torch.no_grad():
            f_hr = self.extract(hr.detach())
        loss = sum(w * F.l1_loss(f_sr[k], f_hr[k]) for k, w in self.layer_weights.items())
        return self.weight * loss


def load_perceptual(pretrained, layer_weights: dict, weight: float) -> tuple[VGGPerceptualLoss | None, list[str]]:
    """The VGG19 perceptual loss from the pretrained registry, or (None, [flag]) without it."""
    if weight == 0:
        return None, []
    path, why = pretrained.status("vgg19")
    if path is None:
        print(f"realesrgan: {why}; perceptual loss disabled", flush=True)
        return None, [missing_flag("vgg19", "perceptual loss disabled")]
    return VGGPerceptualLoss(path, layer_weights, weight), []


class RealESRGANObjective(harness.Objective):
    """Stage 2: L1 + perceptual + vanilla GAN for the generator, BCE real/fake for the U-Net
    discriminator (one D step per G step, D frozen during the G step, fake detached), both
    with Adam and the stage's ``lr_schedule``. Defaults are Real-ESRGAN's (x4plus)."""

    def __init__(
        self,
        pixel_weight: float = 1.0,
        perceptual_weight: float = 1.0,
        layer_weights: dict | None = None,
        gan_weight: float = 0.1,
        d_num_feat: int = 64,
        d_skip_connection: bool = True,
    ):
        self.pixel_weight, self.perceptual_weight, self.gan_weight = pixel_weight, perceptual_weight, gan_weight
        self.layer_weights = dict(layer_weights if layer_weights is not None else REAL_ESRGAN_LAYERS)
        self.d_num_feat, self.d_skip_connection = d_num_feat, d_skip_connection

    def setup(self, job, model, settings, device):
        super().setup(job, model, settings, device)
        st = settings
        hr_patch = st.patch_size * job.scale
        if hr_patch % 8:
            raise EmsrError(
                f"{job.method.model_py}: the U-Net discriminator halves its input three times; the HR patch "
                f"(patch_size {st.patch_size} x scale {job.scale} = {hr_patch}) must be divisible by 8"
            )
        self.perceptual, flags = load_perceptual(
            job.pretrained or Pretrained(), self.layer_weights, self.perceptual_weight
        )
        job.flags.extend([f for f in flags if f not in job.flags])
        if self.perceptual is not None:
            self.perceptual = self.perceptual.to(device)
        UNetDiscriminatorSN = basicsr_arch("discriminator_arch", "UNetDiscriminatorSN")
        self.net_d = UNetDiscriminatorSN(1, num_feat=self.d_num_feat, skip_connection=self.d_skip_connection).to(device)
        self.net_d.train()
        adam = dict(lr=st.lr, betas=st.betas, weight_decay=st.weight_decay)
        self.opt_g = torch.optim.Adam(model.parameters(), **adam)
        self.opt_d = torch.optim.Adam(self.net_d.parameters(), **adam)
        self.sched_g = harness.make_scheduler(self.opt_g, st)
        self.sched_d = harness.make_scheduler(self.opt_d, st)

    def discriminate(self, x: torch.Tensor) -> torch.Tensor:
        with devices.autocast(self.device):
            return self.net_d(x).float()

    @staticmethod
    def bce(pred: torch.Tensor, real: bool) -> torch.Tensor:
        target = torch.ones_like(pred) if real else torch.zeros_like(pred)
        return F.binary_cross_entropy_with_logits(pred, target)

    def step(self, lr_b, hr_b, step):
        # Generator: D frozen.
        for p in self.net_d.parameters():
            p.requires_grad_(False)
        sr = self.forward(lr_b, hr_b).float()
        l_pix = self.pixel_weight * F.l1_loss(sr, hr_b)
        if self.perceptual is not None:
            with devices.autocast(self.device):
                l_percep = self.perceptual(sr, hr_b).float()
        else:
            l_percep = torch.zeros((), device=sr.device)
        l_gan = self.gan_weight * self.bce(self.discriminate(sr), True)
        l_g = l_pix + l_percep + l_gan
        self.check_finite(l_g, step)
        self.opt_g.zero_grad(set_to_none=True)
        l_g.backward()
        if self.settings.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.opt_g.step()
        # Discriminator: real, then the detached fake.
        for p in self.net_d.parameters():
            p.requires_grad_(True)
        self.opt_d.zero_grad(set_to_none=True)
        real_pred = self.discriminate(hr_b)
        l_d_real = self.bce(real_pred, True)
        l_d_real.backward()
        fake_pred = self.discriminate(sr.detach().clone())
        l_d_fake = self.bce(fake_pred, False)
        l_d_fake.backward()
        self.check_finite(l_d_real + l_d_fake, step)
        self.opt_d.step()
        self.sched_g.step()
        self.sched_d.step()
        return {
            "loss": l_g.detach(),
            "l_pix": l_pix.detach(),
            "l_percep": l_percep.detach(),
            "l_gan": l_gan.detach(),
            "l_d_real": l_d_real.detach(),
            "l_d_fake": l_d_fake.detach(),
        }

    def lr(self):
        return self.sched_g.get_last_lr()[0]

    def state_dict(self):
        return {
            "net_d": self.net_d.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
        }

    def load_state_dict(self, state):
        self.net_d.load_state_dict(state["net_d"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])


# --------------------------------------------------------------------------- training


def train(job: harness.TrainJob, max_steps: int | None = None):
    """Both stages; ``max_steps`` (tests) stops after that many steps counted over both stages,
    as a kill would. A rerun skips stage 1 when its result exists and resumes the rest."""
    source = f"{job.method.folder / 'method.yaml'}: train"
    st1, st2 = (job.settings.stage(s, source) for s in STAGES)
    esrnet_dir, esrgan_dir = job.ckpt_dir / "esrnet", job.ckpt_dir / "esrgan"
    esrnet_file = esrnet_dir / "model.pt"
    try:  # checked before stage 1 runs
        objective = RealESRGANObjective(**st2.objective)
    except TypeError as err:
        raise EmsrError(f"{source}: stages.esrgan.objective: {err}") from None
    # a finished stage 1 of the same inputs is kept (fit checks its fingerprint)
    done = harness.fit(
        job,
        max_steps,
        objective=harness.L1Objective(),
        settings=st1,
        ckpt_dir=esrnet_dir,
        out_path=esrnet_file,
        stage="esrnet",
        meta={"stage": "esrnet", "stage_iterations": st1.iterations},
    )
    if done is None:
        return None
    if max_steps is not None:
        max_steps -= st1.iterations
        if max_steps <= 0:
            return None
    esrnet = torch.load(esrnet_file, map_location="cpu", weights_only=True)
    generator = build(job.scale, **job.model_params)
    generator.load_state_dict(esrnet["state_dict"])
    stages = {
        "esrnet": {
            "iterations": st1.iterations,
            "train_seconds": esrnet["train_seconds"],
            "final_loss": esrnet["final_loss"],
            "val_psnr": esrnet["val_psnr"],
        },
        "esrgan": {"iterations": st2.iterations},
    }
    return harness.fit(
        job,
        max_steps,
        objective=objective,
        settings=st2,
        ckpt_dir=esrgan_dir,
        model=generator,
        stage="esrgan",
        prior_seconds=esrnet["train_seconds"],
        meta={"stages": stages},
        shaped_by={"esrnet": esrnet_file},
    )
