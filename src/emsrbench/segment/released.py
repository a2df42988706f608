"""The affinity networks the GPEMSR study released, read into ours.

The study (jtshou/GPEMSR, ``GPEMSR-CREMI/GPEMSR/inference_code``) publishes ``superhuman.pt``
and ``MALA.pt`` (its README's Google Drive folder; ``inference_seg.py`` reads them from
``pre-train_model/``).  Each is a dict whose ``model_weights`` holds the state_dict of a network
trained under ``nn.DataParallel``: every key starts with ``module.`` (the study's loader cuts
the first 7 characters of every key); the lineage's training scripts also store
``current_iter`` and ``valid_result`` beside it, which are not needed here.

* ``superhuman.pt``: ``UNet_PNI`` (``model/model_superhuman.py``) with the study's config
  (``config/seg_x*_superhuman.yaml``: filters 28-36-48-64-80, ``upsample_mode: bilinear``,
  ``merge_mode: add``, zero padding, BatchNorm, ELU): 196 tensors, 1,477,659 parameters.
* ``MALA.pt``: ``UNet3D_MALA`` (``model/unet3d_mala.py``, ``output_nc`` 3): 39 tensors,
  81,489,387 parameters.

Both networks are our ``paper`` presets (:mod:`.superhuman`, :mod:`.mala` follow the release
wherever the forward pass depends on it), so a released file loads into the paper
architecture whatever preset the run uses.  Every release key maps to one of ours through the
tables below (module to module, expanded to parameter names); an unknown, missing or
mis-shaped key is a one-line error naming the file and the key.  Also accepted: the same
state_dict bare (not wrapped in ``model_weights``) or without the ``module.`` prefix.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import EmsrError

WRAPPER = "model_weights"  # the study's checkpoint['model_weights']
PREFIX = "module."  # nn.DataParallel's

# The file names the study's inference script loads (pre-train_model/<name>).
FILE_NAMES = {"superhuman": "superhuman.pt", "mala": "MALA.pt"}
DISPLAY = {"superhuman": "Superhuman (UNet_PNI)", "mala": "MALA (UNet3D_MALA)"}

# What each kind of layer holds in a state_dict.
_PARAMS = {
    "conv": ("weight", "bias"),
    "conv_nobias": ("weight",),
    "bn": ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"),
}

# The release's resBlock_pni -> our ResidualBlock (conv, BN, ELU; conv, BN, ELU, conv; BN, ELU).
_RESIDUAL = (
    ("block1.0", "entry.0", "conv_nobias"),
    ("block1.1", "entry.1", "bn"),
    ("block2.0", "body.0", "conv_nobias"),
    ("block2.1", "body.1", "bn"),
    ("block2.3", "body.3", "conv_nobias"),
    ("block3", "exit.0", "bn"),
)

# The release's UNet_PNI modules -> ours ("res": a residual block, expanded by _RESIDUAL).
# upN = Sequential(Upsample, Conv3d 1x1x1): only its conv (index 1) holds weights.
_SUPERHUMAN = (
    ("embed_in.0", "embed.0", "conv"),
    ("conv0", "down.0", "res"),
    ("conv1", "down.1", "res"),
    ("conv2", "down.2", "res"),
    ("conv3", "down.3", "res"),
    ("center", "down.4", "res"),
    ("up0.1", "up.0.project", "conv"),
    ("cat0.0", "up.0.post.0", "bn"),
    ("conv4", "up_blocks.0", "res"),
    ("up1.1", "up.1.project", "conv"),
    ("cat1.0", "up.1.post.0", "bn"),
    ("conv5", "up_blocks.1", "res"),
    ("up2.1", "up.2.project", "conv"),
    ("cat2.0", "up.2.post.0", "bn"),
    ("conv6", "up_blocks.2", "res"),
    ("up3.1", "up.3.project", "conv"),
    ("cat3.0", "up.3.post.0", "bn"),
    ("conv7", "up_blocks.3", "res"),
    ("embed_out.0", "head.0", "conv"),
    ("out_put.0", "head.2", "conv"),
)

# The release's UNet3D_MALA layers -> ours: two valid convs per level (down.L / up_convs.L),
# upsampling = per-channel transposed conv (no bias) + 1x1x1 conv (up.L.0, up.L.1).
_MALA = (
    ("conv1", "down.0.0", "conv"),
    ("conv2", "down.0.2", "conv"),
    ("conv3", "down.1.0", "conv"),
    ("conv4", "down.1.2", "conv"),
    ("conv5", "down.2.0", "conv"),
    ("conv6", "down.2.2", "conv"),
    ("conv7", "down.3.0", "conv"),
    ("conv8", "down.3.2", "conv"),
    ("dconv1", "up.0.0", "conv_nobias"),
    ("conv9", "up.0.1", "conv"),
    ("conv10", "up_convs.0.0", "conv"),
    ("conv11", "up_convs.0.2", "conv"),
    ("dconv2", "up.1.0", "conv_nobias"),
    ("conv12", "up.1.1", "conv"),
    ("conv13", "up_convs.1.0", "conv"),
    ("conv14", "up_convs.1.2", "conv"),
    ("dconv3", "up.2.0", "conv_nobias"),
    ("conv15", "up.2.1", "conv"),
    ("conv16", "up_convs.2.0", "conv"),
    ("conv17", "up_convs.2.2", "conv"),
    ("conv18", "head", "conv"),
)

_MODULES = {"superhuman": _SUPERHUMAN, "mala": _MALA}


def key_table(net: str) -> dict[str, str]:
    """Release key (without ``module.``) -> our state_dict key, for every tensor of the release."""
    table = {}
    for theirs, ours, kind in _MODULES[net]:
        if kind == "res":
            layers = [(f"{theirs}.{t}", f"{ours}.{o}", k) for t, o, k in _RESIDUAL]
        else:
            layers = [(theirs, ours, kind)]
        for t, o, k in layers:
            for param in _PARAMS[k]:
                table[f"{t}.{param}"] = f"{o}.{param}"
    return table


def release_weights(payload) -> dict | None:
    """The release-layout state_dict in a loaded file, or None when it is not in that layout:
    a dict with ``model_weights``, or a bare dict of tensors named as the release names them."""
    if not isinstance(payload, dict):
        return None
    if WRAPPER in payload:
        return payload[WRAPPER]
    if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
        known = set(key_table("superhuman")) | set(key_table("mala"))
        if any(_strip(k) in known for k in payload):
            return payload
    return None


def _strip(key) -> str:
    return key[len(PREFIX) :] if isinstance(key, str) and key.startswith(PREFIX) else key


def _unprefixed(weights, where: str) -> tuple[dict, str]:
    """({key without ``module.``: (key as in the file, tensor)}, the prefix the file uses):
    ``module.`` on every key or on none."""
    if not isinstance(weights, dict) or not weights:
        raise EmsrError(f"{where}: expected a non-empty state_dict, got {type(weights).__name__}")
    keys = list(weights)
    prefixed = [isinstance(k, str) and k.startswith(PREFIX) for k in keys]
    if any(prefixed) and not all(prefixed):
        raise EmsrError(f"{where}: key '{keys[prefixed.index(False)]}' lacks the '{PREFIX}' prefix the others have")
    out = {}
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor):
            raise EmsrError(f"{where}: key '{k}' holds a {type(v).__name__}, not a tensor")
        out[_strip(k)] = (k, v)
    return out, PREFIX if prefixed[0] else ""


def _first(keys: list, what: str) -> str:
    more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
    return f"'{keys[0]}' {what}{more}"


def map_weights(weights, net: str, model: nn.Module, where: str) -> dict[str, torch.Tensor]:
    """Our state_dict for ``model`` (the paper architecture) from the release's ``weights``.

    Every release key must be in the table and every table key in the file, with the shape
    of the tensor it goes to; errors name the key as the file spells it."""
    entries, prefix = _unprefixed(weights, where)
    table = key_table(net)
    target = model.state_dict()
    if set(table.values()) != set(target):  # the table and our architecture drifted apart
        odd = sorted(set(target) ^ set(table.values()))
        raise EmsrError(f"released {net}: the key table does not cover our network (first: '{odd[0]}')")
    unknown = [orig for key, (orig, _) in entries.items() if key not in table]
    if unknown:
        other = "mala" if net == "superhuman" else "superhuman"
        if all(key in key_table(other) for key in entries):
            raise EmsrError(f"{where}: holds the study's {DISPLAY[other]} weights, not {DISPLAY[net]}")
        what = "is not a tensor of the study's " + DISPLAY[net]
        raise EmsrError(f"{where}: key {_first(unknown, what)}")
    missing = [prefix + key for key in table if key not in entries]
    if missing:
        raise EmsrError(
            f"{where}: key {_first(missing, 'is missing')} (the study's {DISPLAY[net]} has {len(table)} tensors)"
        )
    state = {}
    for key, (orig, tensor) in entries.items():
        ours = target[table[key]]
        if tuple(tensor.shape) != tuple(ours.shape):
            raise EmsrError(
                f"{where}: key '{orig}' has shape {list(tensor.shape)}, the study's {DISPLAY[net]} "
                f"has {list(ours.shape)}"
            )
        if tensor.is_floating_point() != ours.is_floating_point():
            raise EmsrError(f"{where}: key '{orig}' holds {tensor.dtype}, expected {ours.dtype}")
        state[table[key]] = tensor.detach().to(dtype=ours.dtype, device="cpu")
    return state


def load(payload, path: str | Path, net: str, model: nn.Module, paper: dict) -> dict:
    """Fill ``model`` (built from the paper preset ``paper``) from a released file's ``payload``;
    returns the model file's metadata, flagged as released weights."""
    path = Path(path)
    weights = release_weights(payload)
    where = f"{path}: {WRAPPER}" if isinstance(payload, dict) and WRAPPER in payload else str(path)
    model.load_state_dict(map_weights(weights, net, model, where))
    return {
        "block": list(paper["block"]),
        "model_params": paper["model"],
        "preset": "paper",
        "infer_preset": "paper",  # the study's blocks and tiling, whatever the run's preset
        "flags": [f"released weights: the GPEMSR study's {DISPLAY[net]} ({path.name})"],
        "released_weights": True,
        "train_seconds": float("nan"),
        "user_weights": str(path),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
