"""GPEMSR stage I (the VQGAN generator, the study's ``stage1.pth``) in our naming.

The study's ``train_stage1.py`` saves ``Generator.state_dict()`` bare: ``encoder.*``,
``codebook.embedding.weight``, ``decoder.*`` (model/vqgan.py, encoder.py, decoder.py,
codebook.py, blocks.py).  Its modules keep their layers in flat ``nn.Sequential``s
(``feat_extract``), ours split them by role; the row builders below walk both in the same
order.  They are shared with stage II (the encoder design) and stage III (the decoder and
codebook inside the prior).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

from ..gpemsr.config import GPEMSRConfig
from ..gpemsr.vqgan import VQGAN
from .checkpoint import Row, conv, meta_shapes, read_release, remap, rename


def res_block(release: str, ours: str, c_in: int, c_out: int) -> list[Row]:
    """The study's ``ResidualBlock`` (``block`` = conv, GroupNorm, ReLU, conv, GroupNorm, ReLU;
    ``channel_up`` 1x1 conv when the width changes) -> our ``VQResBlock`` (``body``, ``skip``)."""
    rows = []
    for i in (0, 1, 3, 4):  # 2 and 5 are the parameterless ReLUs
        rows += conv(f"{release}.block.{i}", f"{ours}.body.{i}")
    if c_in != c_out:
        rows += conv(f"{release}.channel_up", f"{ours}.skip")
    return rows


def non_local(release: str, ours: str) -> list[Row]:
    """The study's ``NonLocalBlock`` (gn, q, k, v, proj_out) -> our ``SelfAttention``."""
    rows = conv(f"{release}.gn", f"{ours}.norm")
    for name in ("q", "k", "v"):
        rows += conv(f"{release}.{name}", f"{ours}.{name}")
    return rows + conv(f"{release}.proj_out", f"{ours}.proj")


def encoder_rows(cfg: GPEMSRConfig) -> list[Row]:
    """``input_layer`` (conv, ReLU); ``feat_extract``: per scale ``enc_blocks`` residual blocks
    and a ``DownBlock`` (``downblock`` conv), then the ``NonLocalBlock``; ``output_layer``:
    ``enc_out_blocks`` residual blocks and a 1x1 conv."""
    ch = cfg.channels
    rows = conv("input_layer.0", "conv_in.0")
    k = 0
    for c_in, c_out in pairwise(ch):
        for _ in range(cfg.enc_blocks):
            rows += res_block(f"feat_extract.{k}", f"body.{k}", c_in, c_in)
            k += 1
        rows += conv(f"feat_extract.{k}.downblock", f"body.{k}")
        k += 1
    if cfg.encoder_attention:
        rows += non_local(f"feat_extract.{k}", "attention")
    for j in range(cfg.enc_out_blocks):
        rows += res_block(f"output_layer.{j}", f"out.{j}", ch[-1], ch[-1])
    return rows + conv(f"output_layer.{cfg.enc_out_blocks}", f"out.{cfg.enc_out_blocks}")


def decoder_rows(cfg: GPEMSRConfig) -> list[Row]:
    """``input_layer``: 1x1 conv and ``dec_in_blocks`` residual blocks; ``feat_extract``: the
    ``NonLocalBlock`` first, then per scale ``dec_blocks`` residual blocks and an ``UpBlock``
    (``upblock`` transposed conv); ``output_layer`` conv."""
    ch = tuple(reversed(cfg.channels))
    rows = conv("input_layer.0", "conv_in.0")
    for j in range(1, cfg.dec_in_blocks + 1):
        rows += res_block(f"input_layer.{j}", f"conv_in.{j}", ch[0], ch[0])
    k = 0
    if cfg.decoder_attention:
        rows += non_local("feat_extract.0", "attention")
        k = 1
    for level, (c_in, c_out) in enumerate(pairwise(ch)):
        for j in range(cfg.dec_blocks):
            rows += res_block(f"feat_extract.{k}", f"stages.{level}.{j}", c_in, c_in)
            k += 1
        rows += conv(f"feat_extract.{k}.upblock", f"ups.{level}")
        k += 1
    return rows + conv("output_layer", "conv_out")


# the study's Codebook is an nn.Embedding named "embedding"; ours is "codebook"
CODEBOOK = [Row("embedding.weight", "codebook.weight")]


def stage1_rows(cfg: GPEMSRConfig) -> list[Row]:
    return (
        rename(encoder_rows(cfg), "encoder", "encoder")
        + rename(CODEBOOK, "codebook", "quantizer")
        + rename(decoder_rows(cfg), "decoder", "decoder")
    )


def load_released_stage1(path: str | Path, cfg: GPEMSRConfig) -> dict:
    """The study's stage I file (``stage1.pth``) as a state dict of our :class:`VQGAN` of
    ``cfg`` (the paper preset for the released file)."""
    ours = meta_shapes(lambda: VQGAN(cfg))
    return remap(read_release(path), stage1_rows(cfg), ours, str(path), "GPEMSR stage I VQGAN")
