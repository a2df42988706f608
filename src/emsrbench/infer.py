"""Tiled, blended super-resolution of whole volumes in memory bounded by the tile size.

Each section is cut into overlapping LR tiles; each SR tile is weighted by a window that is 0
in a margin along edges shared with a neighbour tile and ramps linearly to 1 across the rest
of the overlap, and the weighted sum is normalised.  Border pixels of a tile (where zero
padding makes a CNN's output differ from a whole-image pass) therefore never contribute,
so as long as the model's receptive field (in LR pixels) fits in the margin, tiled output
equals whole-image output up to float rounding.  Output sections are streamed to HDF5.

Multi-slice feature reuse: a model with the hook of :func:`reuses_section_features` gives the
per-section part of its forward once per section and tile, and each output section's window
is fused from those cached features, instead of recomputing every neighbour's features in
each of the 2N+1 windows it belongs to (same tiles, same blending, same output up to float
rounding; docs/adding-a-method.md#feature-reuse).
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
from .cost import MacCount, PeakMemory, count_macs, count_run, model_bytes
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


# Output held at once by the feature-reuse path (float32 HR sections): each call recomputes the
# features of the 2N sections beyond its ends, so longer runs of sections reuse more.
REUSE_OUTPUT_BYTES = 256 << 20


def reuses_section_features(model: nn.Module) -> bool:
    """Whether ``model`` has the multi-slice feature-reuse hook: ``section_features(sections
    (B, h, w)) -> tuple of (B, ...) tensors`` and ``forward_features(windows (B, T, h, w),
    features each (B, T, ...)) -> (B, 1, s h, s w)`` equal to ``model(windows)``."""
    return all(callable(getattr(model, name, None)) for name in ("section_features", "forward_features"))


class TiledUpscaler:
    """Applies an SR model to LR stacks tile by tile: tiles of several sections share a forward
    batch, and the weighted tiles are blended on the model's device in fp32, so only the
    finished sections come back to the host.  ``reuse``: use the model's feature-reuse hook
    where it has one (:func:`reuses_section_features`); False: always the window forward."""

    def __init__(self, model: nn.Module, scale: int, settings: InferSettings, device: torch.device, reuse: bool = True):
        self.model, self.scale, self.s, self.device = model, scale, settings, device
        self.reuse = reuse and reuses_section_features(model)
        self._blend: dict[tuple[int, int], tuple[list, torch.Tensor]] = {}

    def tiles_per_section(self, h: int, w: int) -> int:
        st = self.s
        return len(tile_starts(h, st.tile, st.overlap)) * len(tile_starts(w, st.tile, st.overlap))

    def sections_per_call(self, h: int, w: int) -> int:
        """Output sections per :meth:`sections` call for h x w LR sections: enough that their
        tiles fill a forward batch; with feature reuse, as many as REUSE_OUTPUT_BYTES allow."""
        fill = -(-self.s.batch // self.tiles_per_section(h, w))
        if self.reuse:
            fill = max(fill, REUSE_OUTPUT_BYTES // (4 * h * w * self.scale**2))
        return max(1, fill)

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

    def __call__(self, stacks: np.ndarray) -> np.ndarray:
        """``stacks`` (N, C, h, w) uint8, one LR stack per output section -> (N, h*s, w*s)
        float32 in the model's output range; :class:`NonFiniteOutput` names the first of the N
        sections with a NaN or Inf."""
        n, c, h, w = stacks.shape
        return self.sections(stacks.reshape(n * c, h, w), np.arange(n * c).reshape(n, c))

    @torch.inference_mode()
    def sections(self, volume: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """``volume`` (D, h, w) uint8 LR sections, ``windows`` (N, C) indices into it, one
        window (the model's input stack) per output section -> (N, h*s, w*s) float32;
        :class:`NonFiniteOutput` names the first of the N windows with a NaN or Inf."""
        s = self.scale
        _, h, w = volume.shape
        windows = np.asarray(windows)
        tiles, norm = self._weights(h, w)
        x_t = torch.from_numpy(np.ascontiguousarray(volume)).to(self.device).float().div_(255.0)
        out = torch.zeros((len(windows), h * s, w * s), dtype=torch.float32, device=self.device)
        (self._blend_reusing_features if self.reuse else self._blend_windows)(x_t, windows, tiles, out)
        # a NaN or Inf anywhere in a tile reaches its section's sum (0 * NaN is NaN)
        bad = ~torch.isfinite(out.flatten(1)).all(dim=1)
        if bool(bad.any()):
            raise NonFiniteOutput(int(bad.nonzero()[0]))
        return (out / norm).cpu().numpy()

    def _tile_size(self, x_t: torch.Tensor) -> tuple[int, int]:
        return min(x_t.shape[1], self.s.tile), min(x_t.shape[2], self.s.tile)

    def _add_tiles(self, out: torch.Tensor, lr: torch.Tensor, pred: torch.Tensor, where: list) -> None:
        """Blend the SR tiles ``pred`` (B, 1, s th, s tw) of LR tiles ``lr`` (B, C, th, tw)
        into ``out`` at ``where``: per tile (output section k, LR y, LR x, weight)."""
        s = self.scale
        th, tw = lr.shape[-2:]
        if pred.shape != (len(where), 1, th * s, tw * s):
            raise EmsrError(
                f"model maps LR tiles {tuple(lr.shape)} to {tuple(pred.shape)}, expected (B, 1, {th * s}, {tw * s})"
            )
        for (k, y, x, wgt), p in zip(where, pred.float()[:, 0]):
            out[k, y * s : (y + th) * s, x * s : (x + tw) * s] += wgt * p

    def _blend_windows(self, x_t: torch.Tensor, windows: np.ndarray, tiles: list, out: torch.Tensor) -> None:
        """The window forward: tiles of every output section's stack, ``batch`` per forward."""
        th, tw = self._tile_size(x_t)
        index = torch.from_numpy(windows).to(self.device)
        jobs = [(k, y, x, wgt) for k in range(len(windows)) for y, x, wgt in tiles]
        for i in range(0, len(jobs), self.s.batch):
            chunk = jobs[i : i + self.s.batch]
            batch = torch.stack([x_t[index[k], y : y + th, x : x + tw] for k, y, x, _ in chunk])
            with devices.inference_precision(self.device, self.s.precision):
                pred = self.model(batch)
            self._add_tiles(out, batch, pred, chunk)

    def _blend_reusing_features(self, x_t: torch.Tensor, windows: np.ndarray, tiles: list, out: torch.Tensor) -> None:
        """The feature-reuse path: per tile position, a sliding cache of per-section features
        over the windows (``batch`` windows per forward, ``batch`` sections per feature pass);
        a section's features are dropped after the last window that reads them."""
        th, tw = self._tile_size(x_t)
        batch = self.s.batch
        last_use = {int(z): k for k, window in enumerate(windows) for z in window}
        for y, x, wgt in tiles:
            tile = x_t[:, y : y + th, x : x + tw]
            cache: dict[int, tuple[torch.Tensor, ...]] = {}
            for i in range(0, len(windows), batch):
                rows = windows[i : i + batch]
                missing = [int(z) for z in np.unique(rows) if int(z) not in cache]
                for j in range(0, len(missing), batch):
                    part = missing[j : j + batch]
                    with devices.inference_precision(self.device, self.s.precision):
                        feats = self.model.section_features(tile[part])
                    cache.update({z: one for z, one in zip(part, zip(*feats))})
                features = tuple(
                    torch.stack([torch.stack([cache[int(z)][f] for z in row]) for row in rows])
                    for f in range(len(cache[int(rows[0][0])]))
                )
                lr = tile[torch.from_numpy(rows).to(self.device)]
                with devices.inference_precision(self.device, self.s.precision):
                    pred = self.model.forward_features(lr, features)
                self._add_tiles(out, lr, pred, [(i + k, y, x, wgt) for k in range(len(rows))])
                done = i + len(rows)
                for z in [z for z in cache if last_use[z] < done]:
                    del cache[z]


def neighbour_indices(z: int, depth: int, slices: int) -> np.ndarray:
    """Sections z-N..z+N with edge replication at both ends of the stack."""
    half = slices // 2
    return np.clip(np.arange(z - half, z + half + 1), 0, depth - 1)


def to_uint8(img: np.ndarray) -> np.ndarray:
    return np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)


def section_runs(depth: int, slices: int, group: int) -> list[tuple[int, np.ndarray]]:
    """The :meth:`TiledUpscaler.sections` calls that super-resolve ``depth`` sections: runs of
    ``group`` consecutive output sections, as (first output section, windows (n, slices)),
    each row the window of one output section (:func:`neighbour_indices`)."""
    return [
        (z0, np.stack([neighbour_indices(z, depth, slices) for z in range(z0, min(depth, z0 + group))]))
        for z0 in range(0, depth, group)
    ]


def feature_passes(runs: list[tuple[int, np.ndarray]]) -> float:
    """Section feature computations per output section (and tile) of the feature-reuse path
    over ``runs``: each run computes the features of every section its windows read, once, so
    1 + (the 2N sections beyond each inner run end) / (output sections); 1.0 for a single run
    (at the volume ends the windows repeat the end section instead of reading beyond it)."""
    return sum(len(np.unique(windows)) for _, windows in runs) / sum(len(windows) for _, windows in runs)


@torch.no_grad()
def count_output_section(model: nn.Module, window: torch.Tensor, reuse: bool) -> tuple[MacCount, MacCount | None]:
    """MACs tiled inference spends per output section on one LR tile ``window`` (1, C, th, tw):
    without ``reuse``, (the window forward, None); with the feature-reuse hook,
    (``forward_features`` of the window, ``section_features`` of one section), the latter run
    once per section and tile however many windows read it.  The window's features are that
    one section's, repeated C times: the counts depend on shapes only."""
    if not reuse:
        return count_macs(model, window), None
    features: list[torch.Tensor] = []  # filled by the counted pass, so it runs once
    section_part = count_run(lambda: features.extend(model.section_features(window[0, :1])))
    stacked = tuple(f.expand(window.shape[1], *f.shape[1:])[None] for f in features)
    return count_run(lambda: model.forward_features(window, stacked)), section_part


def measure_macs(
    model: nn.Module,
    stack: np.ndarray,
    scale: int,
    settings: InferSettings,
    device: torch.device,
    reuse: bool = False,
    passes: float = 1.0,
) -> dict:
    """MACs per output megapixel of what inference runs for one output section on one LR tile of
    the size inference uses (the first tile of ``stack``, batch 1, same device and precision):
    the window forward, or with ``reuse`` (:attr:`TiledUpscaler.reuse`) ``section_features``
    of one section + ``forward_features`` of one window; and of the whole tiled run (overlaps
    recomputed; with reuse, ``passes`` section feature computations per output section, see
    :func:`feature_passes`).  A model the counter cannot run is recorded as not counted, with
    the reason: the cost column is then missing, inference itself is unaffected."""
    c, h, w = stack.shape
    th, tw = min(h, settings.tile), min(w, settings.tile)
    tiles = len(tile_starts(h, settings.tile, settings.overlap)) * len(tile_starts(w, settings.tile, settings.overlap))
    tile = torch.from_numpy(np.ascontiguousarray(stack[:, :th, :tw])).float().div_(255.0)[None].to(device)
    path = "feature_reuse" if reuse else "window"
    try:
        with devices.inference_precision(device, settings.precision):
            window_part, section_part = count_output_section(model, tile, reuse)
    except Exception as err:  # noqa: BLE001 - any failure of the counter only loses this column
        reason = (str(err).strip().splitlines() or [""])[0][:200]
        return {
            "macs_per_mp": None,
            "macs_per_mp_tiled": None,
            "macs_complete": False,
            "macs_path": path,
            "macs_note": f"missing: MAC counter failed: {type(err).__name__}: {reason}",
        }
    tile_mp = th * tw * scale * scale / 1e6
    count, run_macs = window_part, float(window_part.macs)
    if section_part is not None:
        count, run_macs = window_part + section_part, run_macs + passes * section_part.macs
    counted = (
        "section_features of 1 section + forward_features of 1 window per output section (feature reuse)"
        if reuse
        else "1 window forward per output section"
    )
    return {
        "macs_per_mp": count.macs / tile_mp,
        "macs_per_mp_tiled": run_macs
        / tile_mp
        * tiles
        * th
        * tw
        / (h * w),  # the tiles' output pixels over the section's
        "macs_complete": count.complete,
        "macs_tile": [c, th, tw],
        "macs_path": path,
        **({"macs_feature_passes": passes} if reuse else {}),
        "macs_note": f"{counted}; tile {th}x{tw} LR" + (f"; {count.note}" if count.note else ""),
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
    runs = section_runs(depth, method.slices, upscale.sections_per_call(h, w))
    cost = measure_macs(
        model,
        lr[neighbour_indices(0, depth, method.slices)],
        scale,
        settings,
        dev,
        reuse=upscale.reuse,
        passes=feature_passes(runs),
    )
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
        with peak:
            for z0, windows in runs:
                last = z0 + len(windows) - 1
                first = int(windows.min())  # the LR sections these windows read: first..max
                try:
                    ds[z0 : last + 1] = to_uint8(upscale.sections(lr[first : windows.max() + 1], windows - first))
                except NonFiniteOutput as err:
                    raise EmsrError(f"{out_path}: {method.name} x{scale} section {z0 + err.index}: {err}") from None
                except EmsrError as err:
                    raise EmsrError(f"{out_path}: {method.name} x{scale} sections {z0}-{last}: {err}") from None
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
            "feature_reuse": upscale.reuse,  # per-section features computed once (a multi-slice hook)
            "flags": list(meta.get("flags", [])) + devices.precision_flag(settings.precision),
            **cost,
            "peak_mem_mib": peak.mib,
            "peak_mem_note": peak.note,
        }
        f.attrs["stats"] = json.dumps(stats)
    return stats
