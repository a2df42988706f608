"""GPEMSR stage III (the full model, the study's ``stage3_x8.pth`` / ``stage3_x16.pth``) in our
naming.

The study's ``train_stage3.py`` saves ``GPEMSR.state_dict()`` bare (model/GPEMSR.py), and
``output_GPEMSR.py`` loads it strictly: every tensor the network holds, the frozen parts
included: ``refmodel`` (the stage II indexer, the stage I codebook and decoder, and the stage I
encoder, which stage III never runs), ``vgg`` (VGG19 in the study's slices) and
``align_module.spynet`` (with basicsr's ImageNet mean/std buffers).  At 8x the study builds a
fourth MPF level (``reffea_L4_conv1``, ``reffusionconv4``, ``fusion_fea_block4``,
``down_fea_conv3``) that its 8x forward never runs; ours does not build it, so those tensors are
checked against the shapes the 16x level has and dropped.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EmsrError
from ..gpemsr.config import GPEMSRConfig
from ..gpemsr.model import GPEMSR
from ..gpemsr.mpf import MPF
from ..gpemsr.pod import LEVELS as POD_LEVELS
from ..gpemsr.vqgan import VQGAN
from .checkpoint import Row, conv, meta_shapes, read_release, remap, rename, unused
from .indexer import indexer_rows
from .spynet import spynet_rows
from .vgg19 import feature_rows
from .vqgan import CODEBOOK, decoder_rows, encoder_rows

SCALES = (8, 16)  # the study releases these two
STUDY_MPF_LEVELS = 4  # built at both scales, run at 16x only
# the study's 3DA names -> ours (model/GPEMSR.py ThreeDA -> emsrbench.gpemsr.tda.ThreeDA)
THREE_DA = {
    "temporal_attn1": "embed_ref",
    "temporal_attn2": "embed",
    "feat_fusion": "fusion",
    "conv3D_1": "conv3d_1",
    "conv3D_2": "conv3d_2",
    "conv3D_fusion_1": "fusion3d_1",
    "conv3D_fusion_2": "fusion3d_2",
    "conv2D_fusion_3": "fusion_out",
    "spatial_attn1": "sa1",
    "spatial_attn2": "sa2",
    "spatial_attn3": "sa3",
    "spatial_attn4": "sa4",
    "spatial_attn5": "sa5",
    "spatial_attn_l1": "sa_l1",
    "spatial_attn_l2": "sa_l2",
    "spatial_attn_l3": "sa_l3",
    "spatial_attn_add1": "sa_add1",
    "spatial_attn_add2": "sa_add2",
}
POD_LEVEL_NAMES = ("L1", "L2", "L3")  # the study's names of our POD levels 0, 1, 2 (fine to coarse)


def edvr_blocks(release: str, ours: str, n: int) -> list[Row]:
    """basicsr ``ResidualBlockNoBN``s (conv1, conv2) made by ``make_layer``."""
    return [r for i in range(n) for c in ("conv1", "conv2") for r in conv(f"{release}.{i}.{c}", f"{ours}.{i}.{c}")]


def dcn(release: str, ours: str) -> list[Row]:
    """basicsr ``DCNv2Pack`` (weight, bias, ``conv_offset``) -> our ``ModulatedDeformConv``."""
    return conv(release, ours) + conv(f"{release}.conv_offset", f"{ours}.offset_conv")


def mpf_rows(cfg: GPEMSRConfig, scale: int) -> list[Row]:
    """MPF's lifts, fusion levels, reduction and mask convs (its VGG is mapped apart) under our
    ``mpf``.  The study builds four levels at both scales; ours builds log2(scale) (three at
    8x), the study's fourth is then checked against the shapes of our 16x one and dropped."""
    levels = cfg.levels(scale)
    used, dropped = [], []
    for k in range(STUDY_MPF_LEVELS):  # fine to coarse; lift k / down k lead to level k + 1
        if k < STUDY_MPF_LEVELS - 1:
            pair = conv(f"reffea_L{k + 2}_conv1", f"lift.{k}") + conv(f"down_fea_conv{k + 1}", f"down.{k}")
            (used if k < levels - 1 else dropped).extend(pair)
        level = conv(f"reffusionconv{k + 1}", f"fuse.{k}")
        level += edvr_blocks(f"fusion_fea_block{k + 1}", f"fuse_blocks.{k}", cfg.fusion_blocks)
        (used if k < levels else dropped).extend(level)
    used += conv("reduce_dim_conv", "reduce")
    for i, j in ((1, 0), (2, 2), (3, 4)):  # the mask's convs (LeakyReLU between)
        used += conv(f"refmaskconv{i}", f"mask_net.{j}")
    decoder_widths = tuple(reversed(cfg.channels))[:-1]
    level16 = meta_shapes(lambda: MPF(cfg, 16, decoder_widths))
    return rename(used, "", "mpf") + unused(
        dropped, level16, "the 4th MPF level, which the study builds but runs at 16x only"
    )


def pod_rows() -> list[Row]:
    """POD relative to the study's ``align_module`` / our ``pod``."""
    rows = []
    for branch, suffix in enumerate(("1", "2")):  # FL^1 and FL^2 branches
        for lvl in range(POD_LEVELS):
            rows += conv(f"flowdsconv{lvl}_{suffix}", f"flow_down.{branch}.{lvl}")
    for lvl, name in enumerate(POD_LEVEL_NAMES):
        rows += conv(f"{name}_offset_conv1", f"conv1.{lvl}")
        rows += conv(f"{name}_offset_conv2", f"conv2.{lvl}.0")
        if lvl < POD_LEVELS - 1:  # levels below the coarsest have a third offset conv
            rows += conv(f"{name}_offset_conv3", f"conv2.{lvl}.2")
            rows += conv(f"{name}_fea_conv", f"fuse.{lvl}")
        rows += dcn(f"{name}_dcnpack", f"dcn.{lvl}")
    rows += conv("cas_offset_conv1", "refine_offset.0") + conv("cas_offset_conv2", "refine_offset.2")
    rows += dcn("cas_dcnpack", "refine_dcn")
    return rows + rename(spynet_rows(buffers_required=True), "spynet", "spynet")


def stage3_rows(cfg: GPEMSRConfig, scale: int) -> list[Row]:
    rows = conv("conv_first", "conv_first") + edvr_blocks("feature_extraction", "front", cfg.front_blocks)
    # the prior: stage II indexer, stage I codebook and decoder; the stage I encoder is dropped
    rows += rename(indexer_rows(cfg, scale), "refmodel.indexer", "prior.indexer")
    rows += rename(CODEBOOK, "refmodel.codebook", "prior.quantizer")
    rows += rename(decoder_rows(cfg), "refmodel.decoder", "prior.decoder")
    encoder = rename(encoder_rows(cfg), "refmodel.encoder", "encoder")
    rows += unused(encoder, meta_shapes(lambda: VQGAN(cfg)), "the stage I encoder, which stage III never runs")
    rows += rename(feature_rows(cfg, study_slices=True), "vgg", "mpf.vgg") + mpf_rows(cfg, scale)
    for lvl in (2, 3):  # the POD feature pyramid (ours: stride-2 conv, LeakyReLU, conv, LeakyReLU)
        rows += conv(f"fea_L{lvl}_conv1", f"pyramid.{lvl - 2}.0") + conv(f"fea_L{lvl}_conv2", f"pyramid.{lvl - 2}.2")
    rows += rename(pod_rows(), "align_module", "pod")
    rows += [r for study, ours in THREE_DA.items() for r in conv(f"ThreeDA.{study}", f"fusion.{ours}")]
    rows += edvr_blocks("recon_trunk", "trunk", cfg.back_blocks)
    for i in range(cfg.levels(scale)):
        rows += conv(f"upconv{i + 1}", f"upconvs.{i}")
    return rows + conv("HRconv", "hr_conv") + conv("conv_last", "conv_last")


def load_released_stage3(path: str | Path, cfg: GPEMSRConfig, scale: int) -> dict:
    """The study's stage III file for ``scale`` as a state dict of our :class:`GPEMSR` of
    ``cfg`` (the paper preset, full variant, for the released files): the whole network,
    prior, VGG and SPyNet included."""
    what = f"GPEMSR stage III x{scale}"
    if scale not in SCALES:
        raise EmsrError(f"{path}: {what}: the study releases x8 and x16 only")
    off = [k for k in ("mpf", "mpf_mask", "pod", "tda") if not getattr(cfg, k)]
    if off:
        raise EmsrError(f"{path}: {what}: the release is the full model; these settings turn off {', '.join(off)}")
    ours = meta_shapes(lambda: GPEMSR(cfg, scale))
    return remap(read_release(path), stage3_rows(cfg, scale), ours, str(path), what)
