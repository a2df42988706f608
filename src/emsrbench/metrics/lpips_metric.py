"""LPIPS (AlexNet trunk, v0.1 linear heads) for grayscale EM sections, without network access.

The ``lpips`` package ships its linear calibration heads but takes the AlexNet trunk from
torchvision, which downloads ``alexnet-owt-7be5be79.pth`` (``AlexNet_Weights.IMAGENET1K_V1``)
on first use.  The harness never downloads: the file must already sit in a torch-hub-cache
layout under a configured directory and match a configured sha256 (torch hub names the file
after the first 8 hex digits of its sha256, so the real one starts with ``7be5be79``).
Anything else raises :class:`LpipsUnavailable`, so LPIPS is either computed with the
ImageNet trunk or reported as unavailable -- never silently with a random trunk.

Sections are fed whole (no tiling, which would change the spatial average at tile borders):
grey values replicated to 3 channels and mapped to [-1, 1] as ``lpips.im2tensor`` does.
Memory grows with section area x batch; AlexNet activations are ~60 MB per 1250x1250 input,
so ``batch=8`` pairs needs about 1 GB.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from ..download import expected_sha256
from ..fingerprint import file_digest
from .image import check_pair

__all__ = ["ALEXNET_FILE", "LpipsUnavailable", "find_alexnet", "load_lpips", "lpips_sections"]

ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


class LpipsUnavailable(Exception):
    """LPIPS cannot be computed faithfully here; ``reason`` says why (one line)."""

    def __init__(self, reason: str):
        self.reason = " ".join(str(reason).split())
        super().__init__(self.reason)


def _candidates(weights_dir: str | os.PathLike | None) -> list[Path]:
    if weights_dir is None:
        import torch  # here, not at the top: scoring jobs import this package and need no torch

        return [Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE]
    d = Path(weights_dir)
    if d.suffix == ".pth":
        return [d]
    return [d / "checkpoints" / ALEXNET_FILE, d / "hub" / "checkpoints" / ALEXNET_FILE]


def find_alexnet(weights_dir: str | os.PathLike | None) -> Path:
    """The AlexNet weights file under ``weights_dir`` (a TORCH_HOME or a torch hub dir).

    ``None`` means torch's own hub dir (``$TORCH_HOME/hub``); a path ending in ``.pth`` is taken
    as the file itself.
    """
    paths = _candidates(weights_dir)
    for p in paths:
        if p.is_file():
            return p
    raise LpipsUnavailable(f"AlexNet weights not found: looked for {' and '.join(map(str, paths))}")


def load_lpips(weights_dir: str | os.PathLike | None, sha256: str, device="cpu"):
    """An ``lpips.LPIPS(net='alex')`` model in eval mode on ``device`` with verified ImageNet weights.

    ``sha256`` is required (the config carries it): the full digest, or a prefix of at least 8
    hex digits (torch hub's own check, the only part published in the file name); a malformed value is a config error
    (EmsrError), an absent file or a different checksum is :class:`LpipsUnavailable`.
    """
    import torch

    expected = expected_sha256(sha256, "config metrics.lpips.sha256")
    path = find_alexnet(weights_dir)
    actual = file_digest(path)
    if not actual.startswith(expected):
        raise LpipsUnavailable(f"{path}: sha256 mismatch, expected {expected}, got {actual}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a corrupt or non-torch file with the configured hash
        raise LpipsUnavailable(f"{path}: cannot load as a torch state dict ({err})") from err
    if not isinstance(state, dict):
        raise LpipsUnavailable(f"{path}: not a state dict")

    import lpips  # deferred: pulls in torchvision

    # pnet_rand=True: build the trunk without torchvision's download; the linear heads come
    # from the weights bundled in the lpips package.
    with warnings.catch_warnings():  # torchvision's deprecation notes about lpips' pretrained=False
        warnings.simplefilter("ignore", UserWarning)
        model = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    # lpips' alexnet wrapper moves torchvision's ``features[i]`` into ``sliceK`` under the same
    # name ``i``, so backbone parameter ``sliceK.i.p`` is ``features.i.p`` in the file.
    backbone = {}
    for name, param in model.net.state_dict().items():
        _slice, idx, leaf = name.split(".")
        key = f"features.{idx}.{leaf}"
        if key not in state:
            raise LpipsUnavailable(f"{path}: no {key} for LPIPS backbone parameter net.{name}")
        if tuple(state[key].shape) != tuple(param.shape):
            raise LpipsUnavailable(
                f"{path}: {key} has shape {tuple(state[key].shape)}, LPIPS needs {tuple(param.shape)}"
            )
        backbone[name] = state[key]
    model.net.load_state_dict(backbone, strict=True)
    return model.to(device).eval()


def lpips_sections(hr: np.ndarray, sr: np.ndarray, model, device="cpu", batch: int = 8, what: str = "") -> np.ndarray:
    """LPIPS distance (spatial average) of each uint8 section pair, float64; lower is better."""
    import torch

    hr, sr = check_pair(hr, sr, what)
    device = torch.device(device)
    out = np.empty(hr.shape[0], dtype=np.float64)

    batch = max(1, int(batch))

    def prep(a: np.ndarray) -> torch.Tensor:
        # float64 then float32, as lpips.im2tensor computes image / (255 / 2) - 1 in numpy
        t = torch.from_numpy(np.ascontiguousarray(a)).to(device=device, dtype=torch.float64)
        return (t / 127.5 - 1.0).float()[:, None].expand(-1, 3, -1, -1)

    with torch.inference_mode():
        for s in range(0, hr.shape[0], batch):
            d = model(prep(hr[s : s + batch]), prep(sr[s : s + batch]))
            out[s : s + batch] = d.reshape(-1).double().cpu().numpy()
    return out
