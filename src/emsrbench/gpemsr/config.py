"""GPEMSR settings: one dataclass for all three stages, the ``paper`` and ``quick`` presets, and
the ablation variants as named overrides.

``paper`` is the study's configuration (jtshou/GPEMSR, GPEMSR-CREMI/GPEMSR/option/
train_stage{1,2,3}_x{8,16}.yml); every value below that differs between the presets says so.
``quick`` keeps every module and every connection but narrows them, so that one
forward/backward pass of each stage takes a fraction of a second on 2 CPU cores for 5
sections of 8x8 LR pixels at 8x.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, fields, replace

from ..errors import EmsrError


@dataclass(frozen=True)
class GPEMSRConfig:
    # --- stage I: VQGAN (encoder, codebook, decoder, PatchGAN) ---
    channels: tuple = (64, 64, 128, 256, 512)  # encoder; the decoder mirrors it
    latent_dim: int = 512
    codebook_size: int = 1024
    beta: float = 1.0  # commitment weight of the quantizer loss
    # A codebook-collapse remedy, off in the study's preset: > 0: the codebook follows an
    # exponential moving average of the latents assigned to each code (k-means style, VQ-VAE-2),
    # initialised from the first batch's latents, with codes unused for long restarted at random
    # latents; the codebook loss term is then dropped and only the commitment term trains the
    # encoder. 0: the study's codebook loss.
    codebook_ema: float = 0.0
    enc_blocks: int = 1  # residual blocks per scale
    enc_out_blocks: int = 3  # residual blocks after the last downsampling
    dec_blocks: int = 1
    dec_in_blocks: int = 3
    encoder_attention: bool = True  # ablation: supp. Table 2 "w/o Att." encoder
    decoder_attention: bool = True  # ablation: supp. Table 2 "w/o Att." decoder
    norm_groups: int = 32  # GroupNorm groups (capped to a divisor of each width)
    disc_filters: int = 64
    disc_layers: int = 3
    # --- stage II: latent vector indexer ---
    idx_blocks: int = 2  # per scale, the last of them the scale transition (study's count)
    idx_out_blocks: int = 3
    indexer_attention: bool = True
    # --- stage III: multi-image fusion ---
    nf: int = 64
    frames: int = 5
    deform_groups: int = 8
    front_blocks: int = 5
    back_blocks: int = 10
    fusion_blocks: int = 1  # residual blocks after each MPF fusion conv (ref_fusion_feat_RBs)
    hr_feat: int = 64  # channels of the pixel-shuffle stages and the HR conv
    # Quick-preset deviations that let a few hundred CPU iterations leave the bilinear base (as
    # the EDVR quick preset does, see emsrbench.weight_init): a grey level subtracted from the
    # sections the stage III feature extractor sees (not from the prior's or the flow's input,
    # not from the base), and "kaiming" init: Kaiming-normal convs outside the residual blocks
    # and frozen parts, zero last conv. "study": PyTorch's default init, grey_mean 0.
    grey_mean: float = 0.0
    init: str = "study"
    mpf: bool = True  # ablation: without MPF (no prior at all)
    mpf_mask: bool = True  # ablation: MPF without the learned mask (supp. Table 5)
    pod: bool = True  # ablation: without POD (features stacked unaligned)
    tda: bool = True  # ablation: without 3DA (1x1-conv fusion of the stacked features)
    vgg_full: bool = True  # keep all 16 VGG19 convs (the study's module); False: only relu1_2's two
    mask_patch: int = 16  # side of the patches whose VGG features the mask compares (HR px)
    spynet_levels: int = 6
    flow_upsample: int = 4  # SPyNet sees the LR sections upsampled by this (study: 4)
    flows: str = "study"  # "study": FL^1 = FL^2 = SPyNet(nbr, centre) | "bidirectional"

    def validate(self, scale: int | None = None, source: str = "gpemsr") -> "GPEMSRConfig":
        ch = tuple(int(c) for c in self.channels)
        if len(ch) < 2 or min(ch) < 1:
            raise EmsrError(f"{source}: channels must list at least two positive widths, got {list(self.channels)}")
        positive = (
            "latent_dim",
            "codebook_size",
            "enc_blocks",
            "dec_blocks",
            "idx_blocks",
            "nf",
            "frames",
            "deform_groups",
            "hr_feat",
            "norm_groups",
            "disc_filters",
            "spynet_levels",
            "flow_upsample",
            "mask_patch",
        )
        for name in positive:
            if int(getattr(self, name)) < 1:
                raise EmsrError(f"{source}: {name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.codebook_ema < 1:
            raise EmsrError(
                f"{source}: codebook_ema must be in [0, 1) (0: the study's codebook loss), got {self.codebook_ema}"
            )
        for name in (
            "enc_out_blocks",
            "dec_in_blocks",
            "idx_out_blocks",
            "front_blocks",
            "back_blocks",
            "fusion_blocks",
            "disc_layers",
        ):
            if int(getattr(self, name)) < 0:
                raise EmsrError(f"{source}: {name} must be >= 0, got {getattr(self, name)}")
        if self.frames % 2 == 0:
            raise EmsrError(f"{source}: frames must be odd (2N+1 sections), got {self.frames}")
        if self.nf % self.deform_groups:
            raise EmsrError(f"{source}: nf {self.nf} is not divisible by deform_groups {self.deform_groups}")
        if not 1 <= self.spynet_levels <= 6:
            raise EmsrError(f"{source}: spynet_levels must be in 1..6 (SPyNet has 6), got {self.spynet_levels}")
        if self.init not in ("study", "kaiming"):
            raise EmsrError(f"{source}: init must be 'study' or 'kaiming', got {self.init!r}")
        if self.flows not in ("study", "bidirectional"):
            raise EmsrError(f"{source}: flows must be 'study' or 'bidirectional', got {self.flows!r}")
        if self.flow_upsample & (self.flow_upsample - 1):
            raise EmsrError(f"{source}: flow_upsample must be a power of two, got {self.flow_upsample}")
        if scale is not None:
            self.check_scale(scale, source)
        return replace(self, channels=ch)

    @property
    def latent_factor(self) -> int:
        """HR pixels per latent-grid cell: one x2 per encoder scale (study: 16)."""
        return 2 ** (len(self.channels) - 1)

    def check_scale(self, scale: int, source: str = "gpemsr") -> None:
        """The LR grid must be at least as fine as the latent grid (the indexer only
        downsamples), and the MPF uses one decoder level per x2 of the scale."""
        if scale < 2 or scale & (scale - 1) or scale > self.latent_factor:
            raise EmsrError(
                f"{source}: scale must be a power of two in 2..{self.latent_factor} "
                f"(the latent grid is HR/{self.latent_factor}), got {scale}"
            )

    @staticmethod
    def levels(scale: int) -> int:
        """MPF fusion levels (and pixel-shuffle stages): one per x2 of the scale."""
        return int(math.log2(scale))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d


PRESETS: dict[str, dict] = {
    # The study (train_stage*.yml): everything is the dataclass default.
    "paper": {},
    # Narrow and shallow, every module present: VQGAN widths 8-32 (study 64-512), nf 16,
    # a 64-code codebook of dimension 32, one block wherever the study has several, SPyNet on
    # the LR sections themselves with its 3 finest levels (8 px patches; the study upsamples
    # 32 px patches x4 for a 6-level pyramid), only the two VGG convs the mask reads.
    "quick": {
        "channels": (8, 8, 16, 16, 32),
        "latent_dim": 32,
        "codebook_size": 64,
        "norm_groups": 4,
        "enc_out_blocks": 1,
        "dec_in_blocks": 1,
        "disc_filters": 8,
        "disc_layers": 2,
        "idx_blocks": 1,
        "idx_out_blocks": 1,
        "nf": 16,
        "deform_groups": 4,
        "front_blocks": 1,
        "back_blocks": 2,
        "fusion_blocks": 1,
        "hr_feat": 16,
        "vgg_full": False,
        "spynet_levels": 3,
        "flow_upsample": 1,
        # Deviations measured necessary on the CPU budget (README): an EMA codebook (with the
        # stage I objective's auto-encoder warm-up, quantize_start) instead of the codebook
        # loss, which collapses to a near-constant prior; stage III started at its bilinear base
        # (Kaiming init, zero last conv) on sections shifted by a grey mean of 0.5.
        "codebook_ema": 0.9,
        "init": "kaiming",
        "grey_mean": 0.5,
    },
}

# Ablations (supp. Table 2, Table 5, Fig. 6) as overrides of a preset; "full" is the model itself.
VARIANTS: dict[str, dict] = {
    "full": {},
    "no_enc_attn": {"encoder_attention": False},
    "no_dec_attn": {"decoder_attention": False},
    "mpf_no_mask": {"mpf_mask": False},
    "no_pod": {"pod": False},
    "no_3da": {"tda": False},
    "no_mpf": {"mpf": False},
}
# The variant that switches off each ablated setting ({"encoder_attention": "no_enc_attn", ...}):
# the report's ablation tables (emsrbench.report.tables) name their rows through this, so a
# variant renamed here is renamed there.
ABLATED: dict[str, str] = {key: name for name, over in VARIANTS.items() for key in over}
OWN_VARIANT = "full"  # the model itself (no overrides)


def make_config(preset: str = "paper", variant: str = "full", scale: int | None = None, **overrides) -> GPEMSRConfig:
    """The settings of ``preset`` with ``variant``'s switches, then ``overrides`` (checked)."""
    if preset not in PRESETS:
        raise EmsrError(f"gpemsr: unknown preset '{preset}' (known: {sorted(PRESETS)})")
    if variant not in VARIANTS:
        raise EmsrError(f"gpemsr: unknown variant '{variant}' (known: {sorted(VARIANTS)})")
    known = {f.name for f in fields(GPEMSRConfig)}
    for key in overrides:
        if key not in known:
            raise EmsrError(f"gpemsr: unknown model setting '{key}' (known: {sorted(known)})")
    values = {**PRESETS[preset], **VARIANTS[variant], **overrides}
    if "channels" in values:
        values["channels"] = tuple(values["channels"])
    return GPEMSRConfig(**values).validate(scale)


# The settings each stage's weights depend on (besides the scale, for the indexer): variants
# that agree on them can share that stage's model file (e.g. every stage III ablation reuses
# the full model's stages I and II; the attention ablations need their own).
STAGE_FIELDS: dict[str, tuple[str, ...]] = {
    "vqgan": (
        "channels",
        "latent_dim",
        "codebook_size",
        "beta",
        "codebook_ema",
        "enc_blocks",
        "enc_out_blocks",
        "dec_blocks",
        "dec_in_blocks",
        "encoder_attention",
        "decoder_attention",
        "norm_groups",
        "disc_filters",
        "disc_layers",
    ),
}
STAGE_FIELDS["indexer"] = STAGE_FIELDS["vqgan"] + ("idx_blocks", "idx_out_blocks", "indexer_attention")


def stage_key(cfg: GPEMSRConfig, stage: str) -> str:
    """A short digest of the settings ``stage`` ("vqgan" or "indexer") depends on, for naming
    shareable stage files."""
    if stage not in STAGE_FIELDS:
        raise EmsrError(f"gpemsr: no shareable stage '{stage}' (known: {sorted(STAGE_FIELDS)})")
    values = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items() if k in STAGE_FIELDS[stage]}
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:10]
