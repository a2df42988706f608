"""The affinity networks (one module per architecture) behind one interface, and their model files.

Each architecture module (:mod:`.superhuman`, :mod:`.mala`) defines ``NAME``, ``DISPLAY_NAME``,
``CITATION``, ``PRESETS`` (``paper``: the study's sizes; ``quick``: minutes on 2 CPU cores),
``build(**model)``, ``shapes(model, block) -> (input block, output block)`` of an output block and
``input_shapes(model, in_block)``, the same of an input block.

A preset is ``{"model": build kwargs, "block": output block (z, y, x), "train": TrainSettings
layer, "infer": {"stride", "pad"}}``.  The model file (``results/segmenters/<net>/model.pt``)
is the harness trainer's payload plus ``network``, ``block`` and the block shapes; users may
point the config at their own file instead: such a payload, a bare ``state_dict`` of the
preset's architecture, or the file the GPEMSR study released for that network (:mod:`.released`;
read into the paper architecture, segmented with the paper preset's blocks and tiling).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from ..errors import EmsrError
from . import mala, released, superhuman

NETWORKS: dict[str, ModuleType] = {m.NAME: m for m in (superhuman, mala)}


@dataclass(frozen=True)
class Segmenter:
    """What :func:`emsrbench.train.fit` needs to know about the network it trains (the
    counterpart of a method folder's :class:`~emsrbench.methods.Method`)."""

    name: str
    display_name: str
    model_py: Path
    slices: int = 1


def network(name: str) -> ModuleType:
    if name not in NETWORKS:
        raise EmsrError(f"segmentation: unknown network '{name}' (known: {sorted(NETWORKS)})")
    return NETWORKS[name]


def segmenter(name: str) -> Segmenter:
    mod = network(name)
    return Segmenter(name=name, display_name=mod.DISPLAY_NAME, model_py=Path(mod.__file__))


def preset(name: str, which: str) -> dict:
    presets = network(name).PRESETS
    if which not in presets:
        raise EmsrError(f"segmentation: network '{name}' has no preset '{which}' (has {sorted(presets)})")
    return copy.deepcopy(presets[which])


def build(name: str, model_params: dict) -> nn.Module:
    try:
        return network(name).build(**model_params)
    except TypeError as err:
        raise EmsrError(f"segmentation: bad model settings for '{name}': {err}") from None


def block_shapes(name: str, model: nn.Module, block) -> tuple[tuple, tuple]:
    """(input, output) blocks of the output block ``block``."""
    return network(name).shapes(model, block)


def input_block_shapes(name: str, model: nn.Module, in_block) -> tuple[tuple, tuple]:
    """(input, output) blocks of the input block ``in_block``."""
    return network(name).input_shapes(model, in_block)


def load(path: str | Path, name: str, which: str) -> tuple[nn.Module, dict]:
    """The network of a model file and its metadata (``block``, ``stride``, ``pad``, ...).

    ``which`` is the preset whose architecture and block a bare ``state_dict`` is read with;
    a released file (:mod:`.released`) is read with the paper preset's, and its metadata says
    so (``released_weights``, a flag for the rows, ``infer_preset: paper``).
    """
    path = Path(path)
    if not path.exists():
        raise EmsrError(f"{path}: segmentation model file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a non-checkpoint
        raise EmsrError(f"{path}: not a readable torch model file ({str(err).splitlines()[0]})") from None
    if released.release_weights(payload) is not None:
        paper = preset(name, "paper")
        model = build(name, paper["model"])
        return model, released.load(payload, path, name, model, paper)
    pre = preset(name, which)
    if isinstance(payload, dict) and "state_dict" in payload:
        if payload.get("network", name) != name:
            raise EmsrError(f"{path}: holds a '{payload['network']}' network, not '{name}'")
        params = payload.get("model_params", pre["model"])
        state = payload["state_dict"]
        meta = {k: v for k, v in payload.items() if k != "state_dict"}
        meta.setdefault("block", pre["block"])
    elif isinstance(payload, dict) and payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        params, state = pre["model"], payload
        meta = {
            "block": pre["block"],
            "model_params": params,
            "flags": [],
            "train_seconds": float("nan"),
            "parameters": None,
            "preset": which,
            "user_weights": str(path),
        }
    else:
        raise EmsrError(f"{path}: expected an emsrbench segmenter file or a state_dict of the '{which}' {name} network")
    model = build(name, params)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "mismatch"
        raise EmsrError(
            f"{path}: weights do not fit the {name} network of preset '{which}' (model settings {params}): {first}"
        ) from None
    meta["parameters"] = sum(p.numel() for p in model.parameters())
    return model, meta
