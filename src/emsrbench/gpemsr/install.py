"""The study's released stage III file installed as our model file (rule ``gpemsr_released``).

With ``method_presets: {gpemsr: released}`` nothing of GPEMSR is trained: the released
``stage3_x{8,16}.pth`` holds the whole network (prior, indexer, MPF with its VGG, POD with its
SPyNet, 3DA), so stages I and II are not read. :func:`install_stage3` maps it to our keys
(:func:`emsrbench.released.load_released_stage3`: every key and shape checked), checks it fills
our network of the preset's architecture (the paper preset), and writes the model file the
generic ``infer`` rule reads, in the trainer's format (:func:`emsrbench.train.loop.save_model`):
``planned`` is :meth:`emsrbench.plan.Plan.training_identity` (the released file's content
digest), so ``infer`` refuses it once the file or the preset changes. No network is built in
memory: the check runs on the meta device and the tensors go to the file as read.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import EmsrError
from ..fingerprint import Fingerprint, file_digest
from ..io import atomic_path
from ..released import load_released_stage3
from .model import GPEMSR
from .workflow import config

RELEASED_FLAG = "flag: released weights (the study's stage III file, not trained here)"
NOT_TRAINED = "missing: not trained here (the study's released weights)"


def unverified_flag(name: str, digest: str) -> str:
    """The flag of a released file checked against no published checksum."""
    return f"flag: {name} unverified (no published checksum), sha256 {digest[:16]}"


def install_stage3(
    release: str | Path,
    out_path: str | Path,
    *,
    method: str,
    scale: int,
    model_params: dict,
    identity: Fingerprint | None,
    name: str = "",
    verified: bool = False,
    threads: int = 1,
) -> dict:
    """Write the model file of ``method`` x``scale`` from the released stage III file
    ``release`` (registry entry ``name``; ``verified``: checked against a checksum) in the
    architecture of ``model_params``; returns the file's metadata (without the weights)."""
    release = Path(release)
    scale = int(scale)
    cfg = config(model_params, scale)
    state = load_released_stage3(release, cfg, scale)
    with torch.device("meta"):
        net = GPEMSR(cfg, scale)
    try:  # what infer's load_state_dict will do, on shapes only
        net.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise EmsrError(f"{release}: does not fit {method}'s model: {str(err).splitlines()[0]}") from None
    digest = file_digest(release)
    meta = {
        "method": method,
        "scale": scale,
        "preset": identity.components["preset"] if identity is not None else "released",
        "model_params": dict(model_params),
        "parameters": sum(p.numel() for p in net.parameters()),
        "train_seconds": float("nan"),
        "train_seconds_note": NOT_TRAINED,
        "iterations": 0,
        "final_loss": float("nan"),
        "val_psnr": float("nan"),
        "device": "none (not trained here)",
        "threads": threads,
        "flags": [RELEASED_FLAG] + ([] if verified else [unverified_flag(name or release.name, digest)]),
        "planned": identity.record() if identity is not None else None,
        "gpemsr_stage": "released",
        "released": {"entry": name, "file": release.name, "sha256": digest, "verified": bool(verified)},
    }
    with atomic_path(Path(out_path)) as tmp:
        torch.save({**meta, "state_dict": state}, tmp)
    return meta


def install_job(smk, plan) -> None:
    """The body of a ``gpemsr_released`` job (``plan``: the job's :class:`~emsrbench.plan.Plan`)."""
    method, scale = smk.wildcards.method, int(smk.wildcards.scale)
    entry = smk.params.entry
    registry = plan.pretrained([entry], who=f"gpemsr_released {method} x{scale}")
    path, why = registry.status(entry)
    if path is None:
        raise EmsrError(f"{method} x{scale} (preset {smk.params.preset}): {why}")
    meta = install_stage3(
        path,
        smk.output[0],
        method=method,
        scale=scale,
        model_params=dict(smk.params.model),
        identity=plan.training_identity(method, scale),
        name=entry,
        verified=registry.entry(entry).verified,
        threads=smk.threads,
    )
    print(
        f"gpemsr released: {path} (sha256 {meta['released']['sha256']}) -> {smk.output[0]}, "
        f"{meta['parameters']} parameters",
        file=sys.stderr,
    )
