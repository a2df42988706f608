"""Stage I: the VQGAN generative prior (supplement Sec. 1 and Fig. 1).

Encoder: conv3x3 + ReLU, then per scale ``enc_blocks`` residual blocks and a stride-2 conv to
the next width of ``channels`` ([64, 64, 128, 256, 512]: four x2 downsamplings, a latent grid
of HR/16), the self-attention block, ``enc_out_blocks`` residual blocks and a 1x1 conv to the
latent dimension.  Decoder: the mirror image (1x1 conv, ``dec_in_blocks`` residual blocks, the
self-attention block, per scale a residual block and a x2 transposed conv, a 3x3 conv to the
image).  The decoder's per-scale features are the multi-level prior of stage III.

Codebook: ``codebook_size`` vectors of ``latent_dim``; nearest-neighbour quantisation with the
straight-through gradient and the VQ-VAE loss ||sg[z_q] - z||^2 + beta ||z_q - sg[z]||^2, as the
study writes it (beta multiplies the term that moves the codebook; with the study's beta = 1
this is the usual codebook + commitment loss).

Discriminator: the study's PatchGAN (4x4 convs without padding, InstanceNorm, LeakyReLU 0.2,
``disc_filters`` filters in the first layer, ``disc_layers`` layers).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .blocks import VQResBlock, group_norm
from .config import GPEMSRConfig


class SelfAttention(nn.Module):
    """Supplement Eq. 1: Q, K, V each a 1x1 conv of the GroupNorm-ed input,
    Atten = V softmax(K^T Q / sqrt(d_k)) (softmax over the keys, one column per query
    position), then a 1x1 conv, added to the block input."""

    def __init__(self, channels: int, groups: int = 32):
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        y = self.norm(x)
        # positions as tokens (b, h*w, c): query i takes softmax_j(q_i . k_j / sqrt(c)) of the
        # values. scaled_dot_product_attention never holds the (h*w)^2 weights at once on a GPU
        # (flash / memory-efficient kernels); the result is the same formula.
        q, k, v = (f(y).reshape(b, c, h * w).transpose(1, 2) for f in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, c, h, w)
        return x + self.proj(out)


class Encoder(nn.Module):
    """Image (B, 1, H, W) -> latent (B, latent_dim, H/f, W/f), f = 2**(len(channels)-1)."""

    def __init__(self, cfg: GPEMSRConfig, in_channels: int = 1):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = nn.Sequential(nn.Conv2d(in_channels, ch[0], 3, 1, 1), nn.ReLU(inplace=True))
        body: list[nn.Module] = []
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            body += [VQResBlock(c_in, c_in, g) for _ in range(cfg.enc_blocks)]
            body.append(nn.Conv2d(c_in, c_out, 3, 2, 1))
        self.body = nn.Sequential(*body)
        self.attention = SelfAttention(ch[-1], g) if cfg.encoder_attention else nn.Identity()
        self.out = nn.Sequential(
            *(VQResBlock(ch[-1], ch[-1], g) for _ in range(cfg.enc_out_blocks)), nn.Conv2d(ch[-1], cfg.latent_dim, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.attention(self.body(self.conv_in(x))))


class Decoder(nn.Module):
    """Latent (B, latent_dim, h, w) -> image (B, 1, f h, f w); :meth:`features` also returns
    the feature map of every scale (coarse to fine, before each x2 upsampling)."""

    def __init__(self, cfg: GPEMSRConfig, out_channels: int = 1):
        super().__init__()
        ch, g = tuple(reversed(cfg.channels)), cfg.norm_groups
        self.channels = ch
        self.conv_in = nn.Sequential(
            nn.Conv2d(cfg.latent_dim, ch[0], 1), *(VQResBlock(ch[0], ch[0], g) for _ in range(cfg.dec_in_blocks))
        )
        self.attention = SelfAttention(ch[0], g) if cfg.decoder_attention else nn.Identity()
        self.stages = nn.ModuleList(
            nn.Sequential(*(VQResBlock(c_in, c_in, g) for _ in range(cfg.dec_blocks))) for c_in in ch[:-1]
        )
        self.ups = nn.ModuleList(
            nn.ConvTranspose2d(c_in, c_out, 3, 2, 1, output_padding=1) for c_in, c_out in zip(ch[:-1], ch[1:])
        )
        self.conv_out = nn.Conv2d(ch[-1], out_channels, 3, 1, 1)

    @property
    def feature_channels(self) -> tuple:
        """Widths of :meth:`features`' maps, coarse to fine (study: 512, 256, 128, 64)."""
        return self.channels[:-1]

    def features(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """([feature at HR/f, HR/(f/2), ..., HR/2], image): the multi-level prior."""
        x = self.attention(self.conv_in(z))
        feats = []
        for stage, up in zip(self.stages, self.ups):
            x = stage(x)
            feats.append(x)
            x = up(x)
        return feats, self.conv_out(x)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(z)[1]


class Quantizer(nn.Module):
    """The codebook (an ``nn.Embedding`` of ``codebook_size`` x ``latent_dim``).

    ``ema`` > 0 (a quick-preset deviation, see ``GPEMSRConfig.codebook_ema``): the codebook is
    the EMA k-means estimate of the latents assigned to each code, not a trained parameter."""

    def __init__(self, codebook_size: int, latent_dim: int, beta: float = 1.0, ema: float = 0.0):
        super().__init__()
        self.beta = float(beta)
        self.ema = float(ema)
        self.codebook = nn.Embedding(codebook_size, latent_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if self.ema:
            # k-means statistics; buffers, so they are checkpointed and handed to later stages
            self.codebook.weight.requires_grad_(False)
            self.register_buffer("cluster_size", torch.zeros(codebook_size))
            self.register_buffer("embed_sum", torch.zeros(codebook_size, latent_dim))
            self.register_buffer("initialised", torch.zeros((), dtype=torch.bool))

    # a code whose EMA assignment count falls below this is dead and restarted
    DEAD = 0.03

    @torch.no_grad()
    def _ema_update(self, z: torch.Tensor, indices: torch.Tensor | None) -> None:
        flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        k, d = self.size, self.ema
        w = self.codebook.weight
        if not bool(self.initialised):
            # codes start at latents of the first batch (torch's RNG: fit seeds it per step)
            pick = torch.randint(0, flat.shape[0], (k,), device=flat.device)
            w.copy_(flat[pick])
            self.embed_sum.copy_(flat[pick])
            self.cluster_size.fill_(1.0)
            self.initialised.fill_(True)
            return
        onehot = F.one_hot(indices.reshape(-1), k).to(flat.dtype)
        self.cluster_size.mul_(d).add_(onehot.sum(0), alpha=1 - d)
        self.embed_sum.mul_(d).add_(onehot.t() @ flat, alpha=1 - d)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + 1e-5) / (n + k * 1e-5) * n  # Laplace smoothing
        w.copy_(self.embed_sum / smoothed.unsqueeze(1))
        dead = self.cluster_size < self.DEAD
        if dead.any():
            pick = torch.randint(0, flat.shape[0], (int(dead.sum()),), device=flat.device)
            w[dead] = flat[pick]
            self.embed_sum[dead] = flat[pick]
            self.cluster_size[dead] = 1.0

    @property
    def size(self) -> int:
        return self.codebook.num_embeddings

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, h, w) of the code nearest (squared Euclidean) to each latent vector;
        in fp32 even under autocast (bf16 distances would tie and mis-assign codes)."""
        with torch.autocast(z.device.type, enabled=False):
            flat = z.float().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
            e = self.codebook.weight.float()
            d = flat.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * flat @ e.t()
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors (B, latent_dim, h, w) of indices (B, h, w)."""
        return self.codebook(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_q with the straight-through gradient, indices, codebook + commitment loss)."""
        z = z.float()
        if self.ema and self.training and not bool(self.initialised):
            self._ema_update(z.detach(), None)
        indices = self.nearest(z.detach())
        zq = self.lookup(indices)
        if self.ema:  # the codebook moves by its EMA; only the commitment term is a loss
            loss = F.mse_loss(z, zq.detach())
            if self.training:
                self._ema_update(z.detach(), indices)
        else:
            loss = F.mse_loss(z, zq.detach()) + self.beta * F.mse_loss(zq, z.detach())
        return z + (zq - z).detach(), indices, loss


class VQGAN(nn.Module):
    """The stage I generator: encoder, quantizer, decoder."""

    def __init__(self, cfg: GPEMSRConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quantizer = Quantizer(cfg.codebook_size, cfg.latent_dim, cfg.beta, cfg.codebook_ema)
        self.decoder = Decoder(cfg)

    def forward(self, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """HR (B, 1, H, W), H and W multiples of the latent factor -> (reconstruction,
        code indices (B, H/f, W/f), quantizer loss)."""
        zq, indices, q_loss = self.quantizer(self.encoder(hr))
        return self.decoder(zq), indices, q_loss


class PatchDiscriminator(nn.Module):
    """PatchGAN: (B, 1, H, W) -> (B, 1, h', w') real/fake scores."""

    def __init__(self, cfg: GPEMSRConfig, in_channels: int = 1):
        super().__init__()
        nf, n = cfg.disc_filters, cfg.disc_layers
        layers: list[nn.Module] = [nn.Conv2d(in_channels, nf, 4, 2, 0), nn.LeakyReLU(0.2, True)]
        mult = 1
        for i in range(1, n + 1):
            prev, mult = mult, min(2**i, 8)
            layers += [
                nn.Conv2d(nf * prev, nf * mult, 4, 2 if i < n else 1, 0, bias=False),
                nn.InstanceNorm2d(nf * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(nf * mult, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def min_size(self) -> int:
        """Smallest input side that still gives a score map of at least 1x1."""
        convs = [m for m in self.net if isinstance(m, nn.Conv2d)]
        size = 1
        for conv in reversed(convs):
            size = (size - 1) * conv.stride[0] + conv.kernel_size[0]
        return size
