"""Stage hand-off: what each stage takes from the previous ones, checked.

Stage I writes a VQGAN (encoder, quantizer, decoder); stage II trains an indexer against that
frozen VQGAN's encoder + codebook; stage III freezes the stage I decoder and codebook and the
stage II indexer inside its :class:`~.indexer.PriorNet`.  A checkpoint built with other
settings (a different codebook above all) is refused with a one-line message naming the file,
never loaded partially.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import EmsrError
from .config import GPEMSRConfig
from .model import GPEMSR
from .vqgan import VQGAN

CODEBOOK_KEY = "quantizer.codebook.weight"


def read_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The weights of a model file written by the harness (``{"state_dict": ...}``) or a bare
    state dict."""
    path = Path(path)
    if not path.is_file():
        raise EmsrError(f"{path}: no such checkpoint (run the previous GPEMSR stage first)")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("state_dict", payload) if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise EmsrError(f"{path}: not a model file (no state_dict)")
    return state


def _load(module: nn.Module, state: dict, what: str, source: str) -> None:
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise EmsrError(
            f"{source}: not a {what} of these settings ({detail}; "
            f"e.g. an attention switch that differs between the stages)"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise EmsrError(
                f"{source}: {what} {key} has shape {tuple(state[key].shape)}, "
                f"these settings expect {tuple(value.shape)}"
            )
    module.load_state_dict(state)


def check_codebook(state: dict, cfg: GPEMSRConfig, source: str, key: str = CODEBOOK_KEY) -> None:
    if key not in state:
        raise EmsrError(f"{source}: not a GPEMSR stage I checkpoint (no {key})")
    have = tuple(state[key].shape)
    want = (cfg.codebook_size, cfg.latent_dim)
    if have != want:
        raise EmsrError(
            f"{source}: stage I codebook is {have[0]} x {have[1]} (codebook_size x latent_dim), "
            f"these settings expect {want[0]} x {want[1]}; retrain stage I with the same preset"
        )


def load_vqgan(cfg: GPEMSRConfig, state: dict, source: str) -> VQGAN:
    """The frozen stage I VQGAN for stage II (its encoder and codebook give the targets)."""
    check_codebook(state, cfg, source)
    vq = VQGAN(cfg)
    _load(vq, state, "stage I VQGAN", source)
    return vq.requires_grad_(False).eval()


def load_prior(model: GPEMSR, vqgan_state: dict, indexer_state: dict, vqgan_source: str, indexer_source: str) -> None:
    """Fill ``model.prior`` with the stage I decoder + codebook and the stage II indexer, frozen."""
    cfg = model.cfg
    if not cfg.mpf:
        return
    check_codebook(vqgan_state, cfg, vqgan_source)
    n_cls = tuple(indexer_state.get("classifier.weight", torch.empty(0)).shape[:1])
    if n_cls != (cfg.codebook_size,):
        raise EmsrError(
            f"{indexer_source}: stage II indexer predicts {n_cls[0] if n_cls else '?'} codes, "
            f"the stage I codebook has {cfg.codebook_size}"
        )
    prior = model.prior
    _load(
        prior.quantizer,
        {k[len("quantizer.") :]: v for k, v in vqgan_state.items() if k.startswith("quantizer.")},
        "stage I codebook",
        vqgan_source,
    )
    _load(
        prior.decoder,
        {k[len("decoder.") :]: v for k, v in vqgan_state.items() if k.startswith("decoder.")},
        "stage I decoder",
        vqgan_source,
    )
    _load(prior.indexer, indexer_state, f"x{model.scale} stage II indexer", indexer_source)
    prior.requires_grad_(False)
