"""GPEMSR stage II (the latent-code indexer, the study's ``stage2_x8.pth`` / ``stage2_x16.pth``)
in our naming.

The study's ``train_stage2.py`` saves ``lrgenerator.indexer.state_dict()`` bare: an
``Indexer8`` or ``Indexer16`` (model/indexer.py) with ``input_layer``, ``feat_extract`` (per
scale ``num_resblock_per_scale - 1`` residual blocks, then the transition to the next width: a
``DownBlock`` for the last one at 8x, a width-changing residual block otherwise; then the
``NonLocalBlock``), ``output_layer`` and ``embedding``, an ``nn.Linear(latent_dim, 1024)``
applied to channels-last features, which our classifier holds as the equivalent 1x1 conv.
"""

from __future__ import annotations

import math
from itertools import pairwise
from pathlib import Path

from ..gpemsr.config import GPEMSRConfig
from ..gpemsr.indexer import Indexer
from .checkpoint import Row, conv, meta_shapes, read_release, remap
from .vqgan import non_local, res_block


def indexer_rows(cfg: GPEMSRConfig, scale: int) -> list[Row]:
    ch = cfg.channels
    n_trans = len(ch) - 1
    downsamplings = int(math.log2(cfg.latent_factor // scale))  # as our Indexer (the study hard-codes i == 3 at 8x)
    rows = conv("input_layer.0", "conv_in.0")
    k = 0
    for i, (c_in, c_out) in enumerate(pairwise(ch)):
        for _ in range(cfg.idx_blocks - 1):
            rows += res_block(f"feat_extract.{k}", f"body.{k}", c_in, c_in)
            k += 1
        if i >= n_trans - downsamplings:
            rows += conv(f"feat_extract.{k}.downblock", f"body.{k}")
        else:
            rows += res_block(f"feat_extract.{k}", f"body.{k}", c_in, c_out)
        k += 1
    if cfg.indexer_attention:
        rows += non_local(f"feat_extract.{k}", "attention")
    for j in range(cfg.idx_out_blocks):
        rows += res_block(f"output_layer.{j}", f"out.{j}", ch[-1], ch[-1])
    rows += conv(f"output_layer.{cfg.idx_out_blocks}", f"out.{cfg.idx_out_blocks}")
    return rows + [Row("embedding.weight", "classifier.weight", linear=True), Row("embedding.bias", "classifier.bias")]


def load_released_stage2(path: str | Path, cfg: GPEMSRConfig, scale: int) -> dict:
    """The study's stage II file for ``scale`` as a state dict of our :class:`Indexer`."""
    ours = meta_shapes(lambda: Indexer(cfg, scale))
    return remap(read_release(path), indexer_rows(cfg, scale), ours, str(path), f"GPEMSR stage II x{scale} indexer")
