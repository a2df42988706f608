"""Visual comparison panels: LR, every method's SR and HR crops of one region, side by side.

Regions come from the config (``report.panels.regions``, HR pixels) or are chosen where the
methods disagree most (per-pixel standard deviation across the SR volumes, averaged over a
crop-sized window); with one method, where it is furthest from HR. When a segmentation of
the SR volume exists (``<results>/segment/<net>/<method>/x<scale>.h5``, ``volumes/segmentation``)
a second row overlays it; the HR column shows the segmentation of HR (method ``hr``) and the
LR column the ground-truth labels.

With ``tolerance_nm`` (``segmentation.hallucination``), each crop also gets a hallucination
panel: every method's SR crop with the invented (vermillion) and erased (blue) boundaries of
its segmentation against the ground truth (:func:`emsrbench.segment.hallucination.boundary_error_lengths`,
computed on the crop plus a margin so that it agrees with the scores of the whole section).
"""

from __future__ import annotations

import math
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
from ..metrics.image import psnr_volume  # noqa: E402
from .plots import figure_png  # noqa: E402

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
    index: int = 1  # the region's number at this scale
    kind: str = "images"  # "images" (LR / SR / HR, segmentation) | "hallucination"

    @property
    def name(self) -> str:
        """File name (without .png) of the panel among the report's figures."""
        return f"{'panel' if self.kind == 'images' else self.kind}_x{self.scale}_{self.index}"


def _check_shape(path, key, shape, expected, what):
    if tuple(shape) != tuple(expected):
        raise EmsrError(
            f"{path}:{key}: shape {tuple(shape)} differs from the HR test volume {tuple(expected)} ({what})"
        )


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


def choose_regions(
    sr_paths: list[str], hr_path: str, size: int, count: int, scale: int, max_sections: int = 8
) -> list[Region]:
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
            raise EmsrError(
                f"config: report.panels.regions[{i}]: z={r['z']} y={r['y']} x={r['x']} with crop {size} "
                f"does not fit the {scale}x test volume of shape {tuple(shape)}"
            )
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
        return np.asarray(ds[region.z, region.y : region.y + s, region.x : region.x + s])


def _psnr_text(sr: np.ndarray, hr: np.ndarray) -> str:
    """A crop's PSNR for its title; an identical crop has no error (PSNR inf) and says so."""
    psnr = psnr_volume(hr, sr, "report crop")  # uint8 crops: the leaderboard's PSNR
    return "PSNR inf (identical to HR)" if math.isinf(psnr) else f"PSNR {psnr:.2f} dB"


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


def render(
    scale: int,
    region: Region,
    test_file: str,
    methods: list[tuple[str, str]],
    shape: tuple,
    segment_dir: Path | None,
    net: str | None,
) -> tuple[bytes, list[str]]:
    """PNG of the grid; and the labels of methods without a segmentation when others have one."""
    s = region.size
    hr = _read_crop(test_file, RAW_KEY, region, shape)
    with h5py.File(test_file, "r") as f:
        if LR_KEY not in f:
            raise EmsrError(f"{test_file}:{LR_KEY}: missing dataset (not a degraded test file)")
        lr = np.asarray(
            f[LR_KEY][
                region.z, region.y // scale : (region.y + s) // scale, region.x // scale : (region.x + s) // scale
            ]
        )
        gt = (
            np.asarray(f[LABELS_KEY][region.z, region.y : region.y + s, region.x : region.x + s])
            if LABELS_KEY in f
            else None
        )
    lr_up = np.repeat(np.repeat(lr, scale, axis=0), scale, axis=1)
    tiles = [(f"LR ({scale}x, nearest)", lr_up, None, gt, "ground truth")]
    for label, (name, path) in methods:
        sr = _read_crop(path, RAW_KEY, region, shape)
        seg = segmentation_file(segment_dir, net, name, scale) if net else None
        tiles.append((f"{label}\n{_psnr_text(sr, hr)}", sr, seg, None, None))
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
    return figure_png(fig), no_seg


# Okabe-Ito vermillion and blue: told apart with every common colour-vision deficiency.
INVENTED_RGB = (0.835, 0.369, 0.0)
ERASED_RGB = (0.0, 0.447, 0.698)
GT_RGB = (0.94, 0.89, 0.26)  # ground-truth boundaries in the first column


def _read_window(path, key, z: int, ys: slice, xs: slice, shape) -> np.ndarray:
    with h5py.File(path, "r") as f:
        if key not in f:
            raise EmsrError(f"{path}:{key}: missing dataset")
        _check_shape(path, key, f[key].shape, shape, "hallucination panel")
        return np.asarray(f[key][z, ys, xs])


def _paint(ax, image: np.ndarray, layers) -> None:
    """``image`` in grey with each (mask, rgb) of ``layers`` painted opaque on top."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
    rgba = np.zeros(image.shape + (4,))
    for mask, rgb in layers:
        rgba[mask] = (*rgb, 1.0)
    ax.imshow(rgba, interpolation="nearest")


def render_hallucination(
    scale: int,
    region: Region,
    test_file: str,
    methods: list[tuple[str, str]],
    shape: tuple,
    segment_dir: Path,
    net: str,
    tolerance_nm: float,
) -> tuple[bytes, list[str]] | None:
    """PNG of one row: HR with the ground-truth boundaries, then every method's SR crop and the
    HR segmentation's own errors, invented and erased boundaries painted; None when neither
    a method nor HR has a segmentation. Also the labels of methods without a segmentation."""
    from ..segment.hallucination import boundary_error_lengths, boundary_lengths

    with h5py.File(test_file, "r") as f:
        if LABELS_KEY not in f:
            return None
        res = f[LABELS_KEY].attrs.get("resolution")
    if res is None:
        raise EmsrError(f"{test_file}:{LABELS_KEY}: no resolution attribute (needed for the tolerance in nm)")
    ry, rx = float(res[-2]), float(res[-1])
    s = region.size
    # a margin of the tolerance (and one pixel for the cracks) keeps the crop's maps equal to the section's
    m = int(math.ceil(tolerance_nm / min(ry, rx))) + 1
    y0, x0 = max(region.y - m, 0), max(region.x - m, 0)
    ys, xs = slice(y0, min(region.y + s + m, shape[1])), slice(x0, min(region.x + s + m, shape[2]))
    inner = (slice(region.y - y0, region.y - y0 + s), slice(region.x - x0, region.x - x0 + s))
    gt = _read_window(test_file, LABELS_KEY, region.z, ys, xs, shape)
    hr = _read_crop(test_file, RAW_KEY, region, shape)
    tiles = []
    for label, (name, path) in methods:
        tiles.append(
            (label, _read_crop(path, RAW_KEY, region, shape), segmentation_file(segment_dir, net, name, scale))
        )
    tiles.append(("HR (its own segmentation)", hr, segmentation_file(segment_dir, net, HR_METHOD, scale)))
    if all(t[2] is None for t in tiles):
        return None
    ncols = len(tiles) + 1
    fig, axes = plt.subplots(1, ncols, figsize=(1.9 * ncols, 2.6), squeeze=False)
    gt_edges = boundary_lengths(gt, (ry, rx), ignore_zero=True)[inner] > 0
    _paint(axes[0, 0], hr, [(gt_edges, GT_RGB)])
    axes[0, 0].set_title("HR, ground-truth\nboundaries", fontsize=8)
    no_seg = []
    for j, (label, image, seg_path) in enumerate(tiles, start=1):
        ax = axes[0, j]
        if seg_path is None:
            ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest", alpha=0.5)
            ax.set_title(f"{label}\nno segmentation", fontsize=8, color="firebrick")
            no_seg.append(label)
            continue
        seg = _read_window(seg_path, SEG_KEY, region.z, ys, xs, shape)
        invented, erased = boundary_error_lengths(gt, seg, (ry, rx), tolerance_nm, where=str(seg_path))
        invented, erased = invented[inner], erased[inner]
        _paint(ax, image, [(erased > 0, ERASED_RGB), (invented > 0, INVENTED_RGB)])
        ax.set_title(f"{label}\ninvented {invented.sum() / 1e3:.2f} µm, erased {erased.sum() / 1e3:.2f} µm", fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    from matplotlib.patches import Patch

    handles = [
        Patch(
            color=INVENTED_RGB, label=f"invented: {net} boundary, no ground-truth boundary within {tolerance_nm:g} nm"
        ),
        Patch(color=ERASED_RGB, label=f"erased: ground-truth boundary, no {net} boundary within {tolerance_nm:g} nm"),
        Patch(color=GT_RGB, label="ground-truth boundary (first column)"),
    ]
    fig.tight_layout(pad=0.3, rect=(0, 0.12, 1, 1))
    fig.legend(handles=handles, loc="lower center", ncol=3 if ncols >= 6 else 1, fontsize=7, frameon=False)
    return figure_png(fig), no_seg


def panels(
    scale: int,
    test_file: str,
    methods: list[tuple[str, tuple[str, str]]],
    settings: dict,
    segment_dir: Path | None,
    tolerance_nm: float | None = None,
) -> tuple[list[Panel], str | None]:
    """Panels of one scale. ``methods``: (label, (method name, SR file)) in leaderboard order.
    ``tolerance_nm``: also a hallucination panel after each crop's panel (None: not).

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
        regions = choose_regions(
            [p for _, (_, p) in methods],
            test_file,
            size,
            int(settings.get("auto_regions", 2)),
            scale,
            int(settings.get("max_sections", 8)),
        )
    seg_root = Path(segment_dir) if segment_dir else None
    nets = sorted(p.name for p in seg_root.iterdir() if p.is_dir()) if seg_root and seg_root.is_dir() else []
    wanted = settings.get("segmenter")
    # A configured network that has not produced anything yet means images only, said in the caption.
    net = wanted if wanted in nets else (None if wanted else (nets[0] if nets else None))
    out = []
    for i, region in enumerate(regions):
        png, no_seg = render(scale, region, test_file, methods, shape, seg_root, net)
        caption = (
            f"Section z={region.z}, y={region.y}:{region.y + size}, x={region.x}:{region.x + size} "
            f"(HR pixels; {region.source}). PSNR of each crop against HR."
        )
        if net:
            caption += f" Bottom row: segmentation by {net}"
            caption += f"; no segmentation for {', '.join(no_seg)}." if no_seg else "."
        elif wanted:
            caption += f" No segmentation by '{wanted}' under {seg_root}: images only."
        else:
            caption += " No segmentation available: images only."
        out.append(Panel(scale, region, f"{scale}x, region {i + 1}", caption, png, index=i + 1))
        if net and tolerance_nm is not None:
            made = render_hallucination(scale, region, test_file, methods, shape, seg_root, net, tolerance_nm)
            if made is not None:
                png, no_seg = made
                caption = (
                    f"The crop above (section z={region.z}, y={region.y}:{region.y + size}, "
                    f"x={region.x}:{region.x + size}), boundaries of the {net} segmentation of each volume "
                    f"against the ground truth at a tolerance of {tolerance_nm:g} nm. Invented (vermillion): "
                    f"segmentation boundary pixels with no ground-truth boundary within {tolerance_nm:g} nm, "
                    f"structure the segmentation draws that is not there. Erased (blue): ground-truth "
                    f"boundary pixels with no segmentation boundary within {tolerance_nm:g} nm, structure it "
                    f"misses. Lengths in the titles are within the crop; first column: HR with the "
                    f"ground-truth boundaries (yellow); last: the segmentation of HR itself (the upper bound)."
                )
                if no_seg:
                    caption += f" No segmentation for {', '.join(no_seg)}."
                out.append(
                    Panel(
                        scale,
                        region,
                        f"{scale}x, region {i + 1}: hallucination",
                        caption,
                        png,
                        index=i + 1,
                        kind="hallucination",
                    )
                )
    return out, net
