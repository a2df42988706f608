"""Tiled, blended super-resolution of whole volumes in memory bounded by the tile size.

Each section is cut into overlapping LR tiles; each SR tile is weighted by a window that is 0
in a margin along edges shared with a neighbour tile and ramps linearly to 1 across the rest
of the overlap, and the weighted sum is normalised.  Border pixels of a tile (where zero
padding makes a CNN's output differ from a whole-image pass) therefore never contribute,
so as long as the model's receptive field (in LR pixels) fits in the margin, tiled output
equals whole-image output up to float rounding.  Output sections are streamed to HDF5.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

from . import device as devices
from .cost import PeakMemory, macs_per_megapixel, model_bytes
from .errors import EmsrError
from .fingerprint import Fingerprint, check_planned
from .io import LR_KEY, RAW_KEY, atomic_path, read_dataset
from .methods import Method
from .settings import merge_layers
from .train import count_parameters


@dataclass
class InferSettings:
    tile: int = 64  # LR pixels per tile side
    overlap: int = 16  # LR pixels shared by neighbouring tiles
    margin: int | None = None  # LR pixels of zero weight at shared edges; default overlap // 4
    batch: int = 4  # tiles per forward pass
    device: str = "auto"
    precision: str = "fp32"  # fp32 (no TF32) | bf16 | fp16 autocast; see emsrbench.device.precision_plan

    @classmethod
    def merged(cls, *layers: dict, source: str = "inference") -> "InferSettings":
        s = merge_layers(cls, layers, source, "inference")
        if s.margin is None:
            s.margin = s.overlap // 4
        if not (0 <= 2 * s.margin < s.overlap < s.tile):
            raise EmsrError(
                f"{source}: need 0 <= 2*margin < overlap < tile, "
                f"got tile={s.tile} overlap={s.overlap} margin={s.margin}"
            )
        devices.check_precision(s.precision, source)
        return s


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile origins covering [0, length); the last tile is flush with the end."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def edge_window(length: int, ramp: int, margin: int, open_before: bool, open_after: bool) -> np.ndarray:
    """1-D weights of a tile: zero for ``margin`` pixels, then a linear ramp up to 1 over
    ``ramp - 2*margin`` pixels, on every side that borders another tile (``open_*``)."""
    w = np.ones(length, dtype=np.float64)
    rise = np.clip((np.arange(length) + 0.5 - margin) / max(ramp - 2 * margin, 1), 0.0, 1.0)
    if open_before:
        w = np.minimum(w, rise)
    if open_after:
        w = np.minimum(w, rise[::-1])
    return w


class NonFiniteOutput(EmsrError):
    """The model gave NaN or Inf for section ``index`` of the stacks it was given."""

    def __init__(self, index: int):
        super().__init__("model output contains NaN or Inf values")
        self.index = index


class TiledUpscaler:
    """Applies an SR model to LR stacks tile by tile: tiles of several sections share a forward
    batch, and the weighted tiles are blended on the model's device in fp32, so only the
    finished sections come back to the host."""

    def __init__(self, model: nn.Module, scale: int, settings: InferSettings, device: torch.device):
        self.model, self.scale, self.s, self.device = model, scale, settings, device
        self._blend: dict[tuple[int, int], tuple[list, torch.Tensor]] = {}

    def tiles_per_section(self, h: int, w: int) -> int:
        st = self.s
        return len(tile_starts(h, st.tile, st.overlap)) * len(tile_starts(w, st.tile, st.overlap))

    def _weights(self, h: int, w: int) -> tuple[list, torch.Tensor]:
        """Per tile (y, x, its 2-D weight) and the summed weights of an h x w LR section, on
        the device; the same for every section of that size."""
        if (h, w) not in self._blend:
            s, st = self.scale, self.s
            th, tw = min(h, st.tile), min(w, st.tile)
            tiles, norm = [], torch.zeros((h * s, w * s), dtype=torch.float32, device=self.device)
            for y in tile_starts(h, st.tile, st.overlap):
                for x in tile_starts(w, st.tile, st.overlap):
                    wy = edge_window(th * s, st.overlap * s, st.margin * s, y > 0, y + th < h)
                    wx = edge_window(tw * s, st.overlap * s, st.margin * s, x > 0, x + tw < w)
                    wgt = torch.from_numpy(np.outer(wy, wx)).float().to(self.device)
                    norm[y * s : (y + th) * s, x * s : (x + tw) * s] += wgt
                    tiles.append((y, x, wgt))
            self._blend[(h, w)] = (tiles, norm)
        return self._blend[(h, w)]

    @torch.inference_mode()
    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        """``stacks`` (N, C, h, w) uint8, one LR stack per output section -> (N, h*s, w*s)
        float32 in the model's output range; :class:`NonFiniteOutput` names the first of the N
        sections with a NaN or Inf."""
        s, st = self.scale, self.s
        n, c, h, w = stacks.shape
        th, tw = min(h, st.tile), min(w, st.tile)
        tiles, norm = self._weights(h, w)
        x_t = torch.from_numpy(np.ascontiguousarray(stacks)).to(self.device).float().div_(255.0)
        out = torch.zeros((n, h * s, w * s), dtype=torch.float32, device=self.device)
        jobs = [(k, y, x, wgt) for k in range(n) for y, x, wgt in tiles]
        for i in range(0, len(jobs), st.batch):
            chunk = jobs[i : i + st.batch]
            batch = torch.stack([x_t[k, :, y : y + th, x : x + tw] for k, y, x, _ in chunk])
            with devices.inference_precision(self.device, st.precision):
                pred = self.model(batch)
            if pred.shape != (len(chunk), 1, th * s, tw * s):
                raise EmsrError(
                    f"model maps LR tiles {tuple(batch.shape)} to {tuple(pred.shape)}, "
                    f"expected (B, 1, {th * s}, {tw * s})"
                )
            pred = pred.float()[:, 0]
            for (k, y, x, wgt), p in zip(chunk, pred):
                out[k, y * s : (y + th) * s, x * s : (x + tw) * s] += wgt * p
        # a NaN or Inf anywhere in a tile reaches its section's sum (0 * NaN is NaN)
        bad = ~torch.isfinite(out.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise NonFiniteOutput(int(bad.nonzero()[0]))
        return (out / norm).cpu().numpy()


def neighbour_indices(z: int, depth: int, slices: int) -> np.ndarray:
    """Sections z-N..z+N with edge replication at both ends of the stack."""
    half = slices // 2
    return np.clip(np.arange(z - half, z + half + 1), 0, depth - 1)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def measure_macs(
    model: nn.Module, stack: np.ndarray, scale: int, settings: InferSettings, device: torch.device
) -> dict:
    """MACs per output megapixel of one LR tile of the size inference uses (the first tile of
    ``stack``, batch 1, same device and precision), and of the whole tiled run (overlaps
    recomputed).  A model the counter cannot run is recorded as not counted, with the reason:
    the cost column is then missing, inference itself is unaffected."""
    c, h, w = stack.shape
    th, tw = min(h, settings.tile), min(w, settings.tile)
    tiles = len(tile_starts(h, settings.tile, settings.overlap)) * len(tile_starts(w, settings.tile, settings.overlap))
    tile = torch.from_numpy(np.ascontiguousarray(stack[:, :th, :tw])).float().div_(255.0)[None].to(device)
    try:
        with devices.inference_precision(device, settings.precision):
            per_mp, count = macs_per_megapixel(model, tile, scale)
    except Exception as err:  # noqa: BLE001 - any failure of the counter only loses this column
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        return {
            "macs_per_mp": None,
            "macs_per_mp_tiled": None,
            "macs_complete": False,
            "macs_note": f"missing: MAC counter failed: {type(err).__name__}: {reason}",
        }
    tiled = per_mp * tiles * th * tw / (h * w)  # the tiles' output pixels over the section's
    return {
        "macs_per_mp": per_mp,
        "macs_per_mp_tiled": tiled,
        "macs_complete": count.complete,
        "macs_tile": [c, th, tw],
        "macs_note": f"tile {th}x{tw} LR" + (f"; {count.note}" if count.note else ""),
    }


def load_model(
    method: Method,
    scale: int,
    model_params: dict,
    model_file: str | Path | None,
    device: torch.device,
    planned: Fingerprint | None = None,
) -> tuple[nn.Module, dict]:
    """Build the method's network and load trained weights (when the method trains).
    ``planned``: the training job the config plans (:meth:`emsrbench.plan.Plan.training_identity`);
    a model file trained for another (other data, settings or pretrained files) is refused."""
    meta: dict = {}
    if method.trains:
        if model_file is None or not Path(model_file).exists():
            raise EmsrError(f"{model_file}: trained model file not found for method '{method.name}' x{scale}")
        meta = torch.load(model_file, map_location="cpu", weights_only=True)
        if meta.get("method") != method.name or int(meta.get("scale", -1)) != scale:
            raise EmsrError(
                f"{model_file}: holds {meta.get('method')} x{meta.get('scale')}, expected {method.name} x{scale}"
            )
        check_planned(model_file, meta.get("planned"), planned, f"{method.name} x{scale} model")
        model = method.module().build(scale, **meta["model_params"])
        try:
            model.load_state_dict(meta["state_dict"])
        except RuntimeError as err:
            raise EmsrError(
                f"{model_file}: weights do not fit {method.name}'s model: {str(err).splitlines()[0]}"
            ) from None
    else:
        model = method.module().build(scale, **model_params)
    return model.to(device).eval(), meta


def infer_file(
    method: Method,
    scale: int,
    model_params: dict,
    settings: InferSettings,
    lr_path: str | Path,
    out_path: str | Path,
    model_file: str | Path | None = None,
    threads: int | None = None,
    planned: Fingerprint | None = None,
) -> dict:
    """Super-resolve the LR test volume in ``lr_path``; writes ``out_path`` (uint8 CREMI HDF5
    with the HR resolution) and returns the run's statistics (also stored as file attrs)."""
    devices.set_threads(threads)
    dev = devices.pick_device(settings.device)
    devices.precision_plan(
        dev.type, settings.precision, f"{method.name} inference settings"
    )  # fp16 on CPU: fail before any work
    lr, lr_res = read_dataset(lr_path, LR_KEY, dtype=np.uint8, ndim=3)
    hr_res = (lr_res[0], lr_res[1] / scale, lr_res[2] / scale)
    model, meta = load_model(method, scale, model_params, model_file, dev, planned)
    upscale = TiledUpscaler(model, scale, settings, dev)
    depth, h, w = lr.shape
    cost = measure_macs(model, lr[neighbour_indices(0, depth, method.slices)], scale, settings, dev)
    peak = PeakMemory(dev, resident_bytes=model_bytes(model))
    t0 = time.perf_counter()
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as f:
        ds = f.create_dataset(
            RAW_KEY,
            shape=(depth, h * scale, w * scale),
            dtype=np.uint8,
            chunks=(1, min(h * scale, 256), min(w * scale, 256)),
            compression="gzip",
            compression_opts=1,
        )
        ds.attrs["resolution"] = np.asarray(hr_res, dtype=float)
        # sections per call: enough that a forward batch can be filled with their tiles
        group = max(1, -(-settings.batch // upscale.tiles_per_section(h, w)))
        with peak:
            for z0 in range(0, depth, group):
                zs = range(z0, min(depth, z0 + group))
                stacks = np.stack([lr[neighbour_indices(z, depth, method.slices)] for z in zs])
                try:
                    ds[z0 : zs[-1] + 1] = to_uint8(upscale(stacks))
                except NonFiniteOutput as err:
                    raise EmsrError(f"{out_path}: {method.name} x{scale} section {z0 + err.index}: {err}") from None
                except EmsrError as err:
                    raise EmsrError(f"{out_path}: {method.name} x{scale} sections {z0}-{zs[-1]}: {err}") from None
        seconds = time.perf_counter() - t0
        stats = {
            "method": method.name,
            "scale": scale,
            "parameters": int(meta.get("parameters", count_parameters(model))),
            "infer_seconds": seconds,
            "output_megapixels": depth * h * w * scale * scale / 1e6,
            "infer_seconds_per_mp": seconds / (depth * h * w * scale * scale / 1e6),
            "train_seconds": float(meta.get("train_seconds", 0.0)),
            "train_seconds_note": str(meta.get("train_seconds_note", "")),  # why it is missing (released weights)
            "device": devices.describe(dev),
            "precision": settings.precision,
            "flags": list(meta.get("flags", [])) + devices.precision_flag(settings.precision),
            **cost,
            "peak_mem_mib": peak.mib,
            "peak_mem_note": peak.note,
        }
        f.attrs["stats"] = json.dumps(stats)
    return stats
