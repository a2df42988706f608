"""The three GPEMSR training objectives, for :func:`emsrbench.train.fit` (one call per stage).

Stage I, :class:`VQGANObjective` (the study's train_stage1): L1 reconstruction (factor 1) +
quantizer loss (factor 10) on HR patches (after ``quantize_start`` auto-encoder steps, 0 in the
study); from ``gan_start`` on, a PatchGAN adversarial term (factor 0.05, generator loss -D(x^))
and discriminator steps on 0.5 (-D(x) + D(x^)), with an R1 penalty (weight 1e-4, every 16
discriminator steps, scaled by 16 as the study does).  The discriminator is owned here and
checkpointed with the optimizers; the model file holds the generator (encoder, codebook,
decoder) only.  The discriminator's Adam takes the generator's current learning rate (the study
runs a second cosine-restart schedule started at gan_start).

Stage II, :class:`IndexerObjective` (train_stage2): the frozen stage I encoder + codebook give
each HR patch's code indices; the indexer reads the centre LR section and is trained by
cross-entropy over the codes (the study's only loss) plus, with ``latent_weight`` > 0, an MSE
between its pre-classifier latent and the quantised HR latent (CodeFormer's feature loss; the
issue asks for "latent losses", the study's code has none, so the paper preset leaves it 0).

Stage III, :class:`FusionObjective` (train_stage3): L1 (MSE with ``loss: mse``) to the HR centre section (factor 1) +
the reference loss (factor 0.001 at 8x, 0.01 at 16x in the study): a contextual loss between
VGG19 relu3_4 features of the output and of each section's prior HR image
(:func:`contextual_loss`).  Only the non-frozen parameters are optimised.

Learning rate, betas, schedule and clipping come from the stage's ``TrainSettings``; loss
weights are the objective's keyword arguments (``train.objective`` of the preset).
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import nn

from .. import device as devices
from ..errors import EmsrError
from ..nets.imagenet import imagenet_rgb
from ..nets.vgg19 import RELU3_4
from ..pretrained import missing_flag
from ..train import AdamObjective, make_scheduler
from .blocks import frozen
from .indexer import Indexer
from .model import GPEMSR
from .vqgan import VQGAN, PatchDiscriminator


class VQGANObjective(AdamObjective):
    def __init__(
        self,
        rec_weight: float = 1.0,
        codebook_weight: float = 10.0,
        gan_weight: float = 0.05,
        gan_start: int = 40000,
        r1_weight: float = 1e-4,
        r1_every: int = 16,
        quantize_start: int = 0,
    ):
        self.rec_weight, self.codebook_weight, self.gan_weight = rec_weight, codebook_weight, gan_weight
        self.gan_start, self.r1_weight, self.r1_every = int(gan_start), r1_weight, max(1, int(r1_every))
        # Steps of plain auto-encoder training (the decoder reads the unquantised latent) before
        # the codebook comes in (0: the study). An EMA codebook (``codebook_ema``) is then
        # initialised from latents that already carry the image; quantised from step 0 the quick
        # preset's codebook collapses (README).
        self.quantize_start = int(quantize_start)

    def setup(self, job, model, settings, device):
        if not isinstance(model, VQGAN):
            raise EmsrError(f"gpemsr stage I: the model must be a VQGAN, got {type(model).__name__}")
        super().setup(job, model, settings, device)
        torch.manual_seed(settings.seed + 7)  # the discriminator's init, reproducible on resume
        self.disc = PatchDiscriminator(model.cfg).to(device)
        # the discriminator follows the generator's learning rate (set after each step)
        self.opt_d = torch.optim.Adam(
            self.disc.parameters(), lr=settings.lr, betas=settings.betas, weight_decay=settings.weight_decay
        )

    def step(self, lr_b, hr_b, step):
        f = self.model.cfg.latent_factor
        if hr_b.shape[-1] % f or hr_b.shape[-2] % f:
            raise EmsrError(
                f"gpemsr stage I: HR patches of {tuple(hr_b.shape[-2:])} px are not multiples of "
                f"the latent cell ({f} px); choose a stage I patch_size (HR pixels) divisible by {f}"
            )
        if hr_b.shape[-1] < self.disc.min_size() and self.gan_weight > 0:
            raise EmsrError(
                f"gpemsr stage I: HR patches of {hr_b.shape[-1]} px are smaller than the "
                f"discriminator's {self.disc.min_size()} px receptive field"
            )
        gan = self.gan_weight > 0 and step >= self.gan_start
        with devices.autocast(self.device):
            if step < self.quantize_start:
                rec, q_loss = self.model.decoder(self.model.encoder(hr_b)), torch.zeros((), device=hr_b.device)
            else:
                rec, _, q_loss = self.model(hr_b)
        rec = rec.float()
        rec_loss = F.l1_loss(rec, hr_b)
        loss = self.rec_weight * rec_loss + self.codebook_weight * q_loss.float()
        out = {"rec": rec_loss.detach(), "codebook": q_loss.detach()}
        if gan:
            self.disc.requires_grad_(False)
            g_loss = -self.disc(rec).mean()
            loss = loss + self.gan_weight * g_loss
            out["gan"] = g_loss.detach()
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        if gan:
            self.disc.requires_grad_(True)
            for group in self.opt_d.param_groups:
                group["lr"] = self.opt.param_groups[0]["lr"]
            d_loss = 0.5 * (self.disc(rec.detach()).mean() - self.disc(hr_b).mean())
            if step % self.r1_every == 0:
                real = hr_b.detach().requires_grad_(True)
                (grad,) = torch.autograd.grad(self.disc(real).sum(), real, create_graph=True)
                d_loss = d_loss + self.r1_weight / 2 * grad.pow(2).flatten(1).sum(1).mean() * self.r1_every
            self.check_finite(d_loss, step)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
            out["disc"] = d_loss.detach()
        return {"loss": loss.detach(), **out}

    def state_dict(self):
        return {**super().state_dict(), "disc": self.disc.state_dict(), "optimizer_d": self.opt_d.state_dict()}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.disc.load_state_dict(state["disc"])
        self.opt_d.load_state_dict(state["optimizer_d"])


class IndexerObjective(AdamObjective):
    def __init__(self, vqgan: VQGAN, ce_weight: float = 1.0, latent_weight: float = 0.0):
        self.vqgan, self.ce_weight, self.latent_weight = vqgan, ce_weight, latent_weight

    def setup(self, job, model, settings, device):
        if not isinstance(model, Indexer):
            raise EmsrError(f"gpemsr stage II: the model must be an Indexer, got {type(model).__name__}")
        if model.classifier.out_channels != self.vqgan.quantizer.size:
            raise EmsrError(
                f"gpemsr stage II: the indexer predicts {model.classifier.out_channels} codes, "
                f"the stage I codebook has {self.vqgan.quantizer.size}"
            )
        super().setup(job, model, settings, device)
        self.vqgan = self.vqgan.to(device).requires_grad_(False).eval()

    def step(self, lr_b, hr_b, step):
        centre = lr_b[:, lr_b.shape[1] // 2 :][:, :1]  # the LR section of the HR patch
        with torch.no_grad():
            target = self.vqgan.quantizer.nearest(self.vqgan.encoder(hr_b))
            zq = self.vqgan.quantizer.lookup(target)
        with devices.autocast(self.device):
            logits, latent = self.model(centre, with_latent=True)
        if logits.shape[-2:] != target.shape[-2:]:
            raise EmsrError(
                f"gpemsr stage II: LR patch {tuple(centre.shape[-2:])} gives a {tuple(logits.shape[-2:])} "
                f"code grid, the HR patch a {tuple(target.shape[-2:])} one; use an LR patch_size "
                f"divisible by {2**self.model.downsamplings}"
            )
        ce = F.cross_entropy(logits.float(), target)
        latent_loss = F.mse_loss(latent.float(), zq)
        loss = self.ce_weight * ce + self.latent_weight * latent_loss
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        acc = (logits.argmax(1) == target).float().mean()
        return {"loss": loss.detach(), "ce": ce.detach(), "latent": latent_loss.detach(), "code_acc": acc.detach()}


# Elements of one block of the (N, P_x, P_y) similarity tensors: at the paper patch a whole
# tensor is ~2.7 GB, and the loss builds several; rows are taken in blocks of about this many
# elements (256 MB in fp32), each recomputed in the backward pass instead of being kept.
CONTEXTUAL_BLOCK_ELEMENTS = 2**26


def _contextual_rows(nx: torch.Tensor, ny: torch.Tensor, band_width: float):
    """For a block of x's feature rows: the best contextual similarity of each y position
    within the block and the cosine distance at that best row."""
    dist = (1 - torch.bmm(nx.transpose(1, 2), ny)).clamp(min=0)  # (N, rows, P_y)
    rel = dist / (dist.min(dim=2, keepdim=True).values + 1e-5)
    w = torch.exp((1 - rel) / band_width)
    cx = w / (w.sum(dim=2, keepdim=True) + 1e-5)
    best, arg = cx.max(dim=1, keepdim=True)  # (N, 1, P_y)
    return best, torch.gather(dist, 1, arg)


def contextual_loss(
    vgg: nn.Module,
    sr: torch.Tensor,
    prior: torch.Tensor,
    band_width: float = 0.5,
    block_elements: int = CONTEXTUAL_BLOCK_ELEMENTS,
) -> torch.Tensor:
    """The study's reference loss: a contextual loss (Mechrez et al., ECCV 2018) between VGG19
    relu3_4 features of the output x (B, 1, H, W) and of each section's prior image y
    (B, T, 1, H, W), ImageNet-normalised grey replicated to RGB.

    Cosine distances d_ij between x's feature vectors i and y's j, centred on y's mean;
    relative d~_ij = d_ij / (min_j d_ij + 1e-5); affinities w = exp((1 - d~) / h) normalised
    over j; for each y position j the best match i*(j) = argmax_i cx_ij and its weight
    c_j = exp((1 - d_i*j) / h); CX = sum_j cx_i*j c_j / sum_j c_j; loss = mean(-log(CX + 1e-5))
    (the study's weighted variant of CX = mean_j max_i cx_ij).

    Every step but the max over i is local to a row i, so the rows are taken in blocks of about
    ``block_elements`` similarity entries, the running best (and the first index on ties, as
    one max over all rows) kept across blocks; each block is recomputed in the backward pass
    (activation checkpointing), so memory grows with the block, not with P_x * P_y.
    """
    b, t = prior.shape[:2]
    x = sr.unsqueeze(1).expand(-1, t, -1, -1, -1).reshape(b * t, 1, *sr.shape[-2:])
    y = prior.reshape(b * t, 1, *prior.shape[-2:])
    fx = vgg(imagenet_rgb(x), RELU3_4).float()
    fy = vgg(imagenet_rgb(y), RELU3_4).float()
    mu = fy.mean(dim=(0, 2, 3), keepdim=True)
    nx = F.normalize((fx - mu).flatten(2), dim=1)  # (N, C, P_x)
    ny = F.normalize((fy - mu).flatten(2), dim=1)  # (N, C, P_y)
    n, _, px = nx.shape
    rows = max(1, block_elements // max(1, n * ny.shape[2]))
    best = best_dist = None
    for r0 in range(0, px, rows):
        block = nx[:, :, r0 : r0 + rows]
        if torch.is_grad_enabled() and (block.requires_grad or ny.requires_grad):
            b_best, b_dist = torch.utils.checkpoint.checkpoint(
                _contextual_rows, block, ny, band_width, use_reentrant=False
            )
        else:
            b_best, b_dist = _contextual_rows(block, ny, band_width)
        if best is None:
            best, best_dist = b_best, b_dist
        else:
            better = b_best > best  # strict: an earlier row wins a tie, as argmax over all rows
            best, best_dist = torch.where(better, b_best, best), torch.where(better, b_dist, best_dist)
    c = torch.exp((1 - best_dist) / band_width)
    score = (best * c).sum(dim=(1, 2)) / c.sum(dim=(1, 2))
    return torch.mean(-torch.log(score + 1e-5))


class FusionObjective(AdamObjective):
    def __init__(
        self, rec_weight: float = 1.0, ref_weight: float = 0.0, band_width: float = 0.5, flow_lr_mul: float = 1.0
    ):
        self.rec_weight, self.ref_weight, self.band_width = rec_weight, ref_weight, band_width
        # learning-rate factor of POD's SPyNet when it trains (no pretrained weights): basicsr's
        # ``flow_lr_mul`` (BasicVSR: 0.125). 1 in the study (its SPyNet is frozen).
        self.flow_lr_mul = float(flow_lr_mul)

    def optimiser(self, params):
        if self.flow_lr_mul == 1.0:
            return super().optimiser(params)
        st = self.settings
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        flow = [p for n, p in named if ".spynet." in f".{n}"]
        rest = [p for n, p in named if ".spynet." not in f".{n}"]
        groups = [{"params": rest}] + ([{"params": flow, "lr": st.lr * self.flow_lr_mul}] if flow else [])
        opt = torch.optim.Adam(groups, lr=st.lr, betas=st.betas, weight_decay=st.weight_decay)
        return opt, make_scheduler(opt, st)

    def setup(self, job, model, settings, device):
        if not isinstance(model, GPEMSR):
            raise EmsrError(f"gpemsr stage III: the model must be a GPEMSR network, got {type(model).__name__}")
        if self.ref_weight > 0 and not (model.cfg.mpf and model.cfg.mpf_mask and model.cfg.vgg_full):
            raise EmsrError(
                "gpemsr stage III: ref_weight > 0 needs the prior and the full VGG "
                "(mpf, mpf_mask and vgg_full on); set ref_weight: 0"
            )
        super().setup(job, model, settings, device)
        self.loss_vgg = self._loss_network(job, model)

    def _loss_network(self, job, model: GPEMSR) -> nn.Module | None:
        """The contextual loss's VGG19: the pretrained one of the MPF mask, frozen and in no
        optimiser. Without the pretrained file the mask's VGG is random: a loss measured through
        random features is not the study's loss, so the reference loss is disabled instead, and
        flagged."""
        if self.ref_weight <= 0:
            return None
        vgg = model.mpf.vgg
        if "vgg19" in model.pretrained_parts:
            if not frozen(vgg):
                raise EmsrError("gpemsr stage III: the pretrained VGG19 of the MPF mask must be frozen")
            return vgg
        flag = missing_flag("vgg19", "contextual reference loss disabled")
        if flag not in job.flags:
            job.flags.append(flag)
        print(
            f"gpemsr stage III: no pretrained VGG19: the reference (contextual) loss is disabled "
            f"(ref_weight {self.ref_weight})",
            file=sys.stderr,
        )
        return None

    def step(self, lr_b, hr_b, step):
        with devices.autocast(self.device):
            sr, prior = self.model.forward_with_prior(lr_b)
        if sr.shape != hr_b.shape:
            raise EmsrError(
                f"gpemsr stage III: output {tuple(sr.shape)} for LR {tuple(lr_b.shape)}, expected {tuple(hr_b.shape)}"
            )
        # the study's L1, or MSE where the stage's harness setting ``loss`` says so (quick preset)
        rec = (F.mse_loss if self.settings.loss == "mse" else F.l1_loss)(sr.float(), hr_b)
        loss = self.rec_weight * rec
        out = {"rec": rec.detach()}
        if self.loss_vgg is not None:
            ref = contextual_loss(self.loss_vgg, sr.float(), prior.float(), self.band_width)
            loss = loss + self.ref_weight * ref
            out["ref"] = ref.detach()
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        return {"loss": loss.detach(), **out}
