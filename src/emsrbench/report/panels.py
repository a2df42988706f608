"""Visual comparison panels: LR, every method's SR and HR crops of one region, side by side.

Regions come from the config (``report.panels.regions``, HR pixels) or are chosen where the
methods disagree most (per-pixel standard deviation across the SR volumes, averaged over a
crop-sized window); with one method, where it is furthest from HR. When a segmentation of
the SR volume exists (``<results>/segment/<net>/<method>/x<scale>.h5``, ``volumes/segmentation``)
a second row overlays it; the HR column shows the segmentation of HR (method ``hr``) and the
LR column the ground-truth labels.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from skimage.segmentation import find_boundaries  # noqa: E402

from ..errors import EmsrError  # noqa: E402
from ..io import LABELS_KEY, LR_KEY, RAW_KEY  # noqa: E402

SEG_KEY = "volumes/segmentation"
HR_METHOD = "hr"  # the segmentation of the HR volume itself


@dataclass(frozen=True)
class Region:
    z: int
    y: int
    x: int
    size: int
    source: str  # "config" or why it was chosen


@dataclass(frozen=True)
class Panel:
    scale: int
    region: Region
    title: str
    caption: str
    png: bytes


def _check_shape(path, key, shape, expected, what):
    if tuple(shape) != tuple(expected):
        raise EmsrError(f"{path}:{key}: shape {tuple(shape)} differs from the HR test volume {tuple(expected)} ({what})")


def crop_size(requested: int, shape: tuple, scale: int) -> int:
    size = min(int(requested), shape[1], shape[2])
    return max(scale, size // scale * scale)


def _window_means(m: np.ndarray, size: int, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    integral = np.pad(m.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    ys = np.arange(0, m.shape[0] - size + 1, step)
    xs = np.arange(0, m.shape[1] - size + 1, step)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    s = integral[yy + size, xx + size] - integral[yy, xx + size] - integral[yy + size, xx] + integral[yy, xx]
    return s / (size * size), yy, xx


def choose_regions(sr_paths: list[str], hr_path: str, size: int, count: int, scale: int,
                   max_sections: int = 8) -> list[Region]:
    """``count`` non-overlapping crops where the methods differ most, aligned to the LR grid."""
    with h5py.File(hr_path, "r") as f:
        hr = f[RAW_KEY]
        shape = hr.shape
        zs = np.unique(np.linspace(0, shape[0] - 1, min(max_sections, shape[0])).round().astype(int))
        step = max(scale, size // 2 // scale * scale)
        candidates = []
        why = "where the methods differ most" if len(sr_paths) >= 2 else "where the method is furthest from HR"
        for z in zs:
            stack = []
            for p in sr_paths:
                with h5py.File(p, "r") as g:
                    _check_shape(p, RAW_KEY, g[RAW_KEY].shape, shape, "choosing panel regions")
                    stack.append(g[RAW_KEY][z].astype(np.float32))
            if len(stack) >= 2:
                m = np.std(np.stack(stack), axis=0)
            elif stack:
                m = np.abs(stack[0] - hr[z].astype(np.float32))
            else:
                m = np.zeros(shape[1:], np.float32)
            means, yy, xx = _window_means(m.astype(np.float64), size, step)
            candidates += [(float(v), int(z), int(y), int(x)) for v, y, x in zip(means.ravel(), yy.ravel(), xx.ravel())]
    candidates.sort(key=lambda c: (-c[0], c[1], c[2], c[3]))
    picked: list[Region] = []
    for score, z, y, x in candidates:
        if len(picked) == count:
            break
        if all(abs(y - r.y) >= size or abs(x - r.x) >= size for r in picked):
            picked.append(Region(z, y, x, size, f"{why} (score {score:.1f})"))
    return picked


def config_regions(regions: list[dict], shape: tuple, size: int, scale: int) -> list[Region]:
    out = []
    for i, r in enumerate(regions):
        z, y, x = int(r["z"]), int(r["y"]) // scale * scale, int(r["x"]) // scale * scale
        if not (0 <= z < shape[0] and 0 <= y and y + size <= shape[1] and 0 <= x and x + size <= shape[2]):
            raise EmsrError(f"config: report.panels.regions[{i}]: z={r['z']} y={r['y']} x={r['x']} with crop {size} "
                            f"does not fit the {scale}x test volume of shape {tuple(shape)}")
        out.append(Region(z, y, x, size, "config"))
    return out


def segmentation_file(segment_dir: Path, net: str, method: str, scale: int) -> Path | None:
    p = Path(segment_dir) / net / method / f"x{scale}.h5"
    return p if p.exists() else None


def _read_crop(path, key, region: Region, shape) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if key not in f:
            raise EmsrError(f"{path}:{key}: missing dataset")
        ds = f[key]
        _check_shape(path, key, ds.shape, shape, "panel crop")
        s = region.size
        return np.asarray(ds[region.z, region.y:region.y + s, region.x:region.x + s])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def _overlay(ax, image: np.ndarray, labels: np.ndarray) -> None:
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    ids, inverse = np.unique(labels, return_inverse=True)
    # Colours hashed from the label id itself, so a segment keeps its colour wherever it appears.
    h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    rgb = np.stack([(h >> np.uint64(k)) & np.uint64(255) for k in (16, 32, 48)], axis=1).astype(float) / 255
    colours = np.concatenate([rgb * 0.8 + 0.2, np.full((len(ids), 1), 0.45)], axis=1)
    colours[ids == 0, 3] = 0.0
    rgba = colours[inverse.reshape(labels.shape)]
    edges = find_boundaries(labels, mode="inner")
    rgba[edges] = (0.0, 0.0, 0.0, 0.9)
    ax.imshow(rgba, interpolation="nearest")


def render(scale: int, region: Region, test_file: str, methods: list[tuple[str, str]], shape: tuple,
           segment_dir: Path | None, net: str | None) -> tuple[bytes, list[str]]:
    """PNG of the grid; and the labels of methods without a segmentation when others have one."""
    s = region.size
    hr = _read_crop(test_file, RAW_KEY, region, shape)
    with h5py.File(test_file, "r") as f:
        if LR_KEY not in f:
            raise EmsrError(f"{test_file}:{LR_KEY}: missing dataset (not a degraded test file)")
        lr = np.asarray(f[LR_KEY][region.z, region.y // scale:(region.y + s) // scale, region.x // scale:(region.x + s) // scale])
        gt = np.asarray(f[LABELS_KEY][region.z, region.y:region.y + s, region.x:region.x + s]) if LABELS_KEY in f else None
    lr_up = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    tiles = [(f"LR ({scale}x, nearest)", lr_up, None, gt, "ground truth")]
    for label, (name, path) in methods:
        sr = _read_crop(path, RAW_KEY, region, shape)
        seg = segmentation_file(segment_dir, net, name, scale) if net else None
        tiles.append((f"{label}\nPSNR {_psnr(sr, hr):.2f} dB", sr, seg, None, None))
    hr_seg = segmentation_file(segment_dir, net, HR_METHOD, scale) if net else None
    tiles.append(("HR", hr, hr_seg, None, None))
    with_seg = any(t[2] is not None for t in tiles)
    nrows, ncols = (2 if with_seg else 1), len(tiles)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 2.15 * nrows), squeeze=False)
    no_seg = []
    for j, (title, image, seg_path, labels, label_title) in enumerate(tiles):
        ax = axes[0, j]
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        if not with_seg:
            continue
        ax = axes[1, j]
        if seg_path is not None:
            _overlay(ax, image, _read_crop(seg_path, SEG_KEY, region, shape))
            ax.set_title(f"segmentation ({net})", fontsize=7)
        elif labels is not None:
            _overlay(ax, hr, labels)
            ax.set_title(label_title, fontsize=7)
        else:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", alpha=0.5)
            ax.set_title("no segmentation", fontsize=7, color="firebrick")
            if j > 0:
                no_seg.append(title.split("\n")[0])
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout(pad=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue(), no_seg


def panels(scale: int, test_file: str, methods: list[tuple[str, tuple[str, str]]], settings: dict,
           segment_dir: Path | None) -> tuple[list[Panel], str | None]:
    """Panels of one scale. ``methods``: (label, (method name, SR file)) in leaderboard order.

    Returns the panels and the segmentation network overlaid (None when there is none).
    """
    with h5py.File(test_file, "r") as f:
        if RAW_KEY not in f:
            raise EmsrError(f"{test_file}:{RAW_KEY}: missing dataset")
        shape = f[RAW_KEY].shape
    size = crop_size(settings.get("crop", 128), shape, scale)
    if settings.get("regions"):
        regions = config_regions(settings["regions"], shape, size, scale)
    else:
        regions = choose_regions([p for _, (_, p) in methods], test_file, size, int(settings.get("auto_regions", 2)),
                                 scale, int(settings.get("max_sections", 8)))
    seg_root = Path(segment_dir) if segment_dir else None
    nets = sorted(p.name for p in seg_root.iterdir() if p.is_dir()) if seg_root and seg_root.is_dir() else []
    wanted = settings.get("segmenter")
    # A configured network that has not produced anything yet means images only, said in the caption.
    net = wanted if wanted in nets else (None if wanted else (nets[0] if nets else None))
    out = []
    for i, region in enumerate(regions):
        png, no_seg = render(scale, region, test_file, methods, shape, seg_root, net)
        caption = (f"Section z={region.z}, y={region.y}:{region.y + size}, x={region.x}:{region.x + size} "
                   f"(HR pixels; {region.source}). PSNR of each crop against HR.")
        if net:
            caption += f" Bottom row: segmentation by {net}"
            caption += f"; no segmentation for {', '.join(no_seg)}." if no_seg else "."
        elif wanted:
            caption += f" No segmentation by '{wanted}' under {seg_root}: images only."
        else:
            caption += " No segmentation available: images only."
        out.append(Panel(scale, region, f"{scale}x, region {i + 1}", caption, png))
    return out, net
