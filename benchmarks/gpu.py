"""Device throughput of every method's and segmenter's training and inference (issue 14, part 5).

    .venv/bin/python benchmarks/gpu.py                     # on a GPU: paper presets, 8x
    .venv/bin/python benchmarks/gpu.py --scales 8 16 --methods gpemsr --segmenters
    .venv/bin/python benchmarks/gpu.py --smoke             # CPU (the default there): tiny shapes, seconds per model

One row per training run (a method's stage, a segmenter), at the preset's own batch and patch:

- train it/s, pipeline: :func:`emsrbench.train.fit` itself (its DataLoader with
  ``loader_workers``, the host-to-device copy, EMA, the objective's step) over a real degraded
  file made on the fly (``emsrbench.phantom`` -> ``emsrbench.degrade.degrade_file``, CREMI-sized
  1024 x 1024 sections); the steps are timed between the starts of two steps (the device
  synchronised there), after ``--warmup`` steps;
- train it/s, synthetic: the same model and objective stepping on batches already on the
  device (same shapes, drawn once from the same sampler), timed the same way; "pipeline share"
  = 1 - pipeline / synthetic, the part of a step the input pipeline adds;
- train peak GiB: of the synthetic run (weights, optimiser state, activations; CUDA:
  ``max_memory_allocated``, CPU: peak RSS growth, see :class:`emsrbench.cost.PeakMemory`);
- train TFLOP/s: the FLOPs of one whole training step (forward and backward of everything the
  objective runs: generator, discriminator, loss networks; :func:`emsrbench.cost.count_run`,
  torch's ``FlopCounterMode`` with cost.py's extra formulas, 2 FLOPs per MAC), times the
  pipeline's it/s (what a training job gets);
  ``%pk``: that over the device's dense bf16 peak (:data:`BF16_DENSE_TFLOPS`, or
  ``--peak-tflops``). Ops without a formula (deform_conv2d's backward) make it a lower bound
  (``*`` in the table, named below it); the R1 penalty of GPEMSR stage I (every 16th step)
  is not in the counted step;
- infer MP/s: output megapixels per second of the harness's tiled inference
  (:meth:`emsrbench.infer.TiledUpscaler.sections` as ``infer_file`` calls it, tiling of
  ``config/paper.yaml``, precision ``--infer-precision``, fp32 by default as the workflow)
  of ``--sections`` output sections of 1024 / scale LR pixels; segmenters: blockwise
  affinities (:func:`emsrbench.segment.blockwise.predict_affinities` with the preset's blocks
  and tiling) over a ``--depth`` x 1024 x 1024 volume, in output megavoxels/s; peak GiB of the
  timed calls (weights included). Inference TFLOP/s: 2 x the MACs counted over one more call
  of the same run (so overlaps recomputed and features reused count as they run), over its
  measured time.

Training runs under the harness's bf16 autocast on CUDA and fp32 on CPU. Stand-ins: the
pretrained VGG19 and SPyNet are random weights in the registry's format (frozen, as the real
files would be: the cost is the same); the GPEMSR stage II and III priors are untrained
stage I / II networks. GPEMSR stage I is timed in its GAN phase (``gan_start`` 0; 92% of its
480k steps). Each row fails alone (``error`` / ``OOM`` in the table, ``inference OOM`` keeps the
training figures; exit status 1).

Smoke mode (``--smoke``, the default without CUDA): the quick presets (``--preset paper`` for
the paper networks), batches of at most 2, LR patches of at most 8 px (stage I: 64 HR px),
sections of 8 LR px, 1 + 1 steps: it checks that the benchmark runs, its figures mean little.
Writes benchmarks/out/gpu-<preset>[-smoke].md (and ``--json``) with the machine it ran on.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import io
import json
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quick_preset import machine  # noqa: E402

from emsrbench import cost  # noqa: E402
from emsrbench import device as devices  # noqa: E402
from emsrbench.degrade import Degradation, degrade_file  # noqa: E402
from emsrbench.infer import InferSettings, TiledUpscaler, neighbour_indices  # noqa: E402
from emsrbench.io import LR_KEY, RAW_KEY, read_dataset  # noqa: E402
from emsrbench.methods import discover  # noqa: E402
from emsrbench.pretrained import Pretrained  # noqa: E402
from emsrbench.train import EMA, L1Objective, PatchSampler, TrainJob, TrainSettings, fit  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of the CUDA device name;
# the first match wins (more specific names first). --peak-tflops overrides.
BF16_DENSE_TFLOPS = (
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("A100", 312.0),
)
SECTION = 1024  # HR pixels per side of the study's CREMI crops
SEGMENTERS = ("superhuman", "mala")


def bf16_peak(name: str) -> float | None:
    for key, tflops in BF16_DENSE_TFLOPS:
        if key in name:
            return tflops
    return None


# --------------------------------------------------------------------------- measuring


def synchronize(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class Timed:
    """An objective that records the time at the start of steps ``first`` and ``last`` (the
    device synchronised there) and otherwise is the objective it wraps (what ``fit`` calls)."""

    def __init__(self, inner, first: int, last: int, dev: torch.device):
        self.inner, self.first, self.last, self.dev = inner, first, last, dev
        self.marks: dict[int, float] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def step(self, lr_b, hr_b, step):
        if step in (self.first, self.last):
            synchronize(self.dev)
            self.marks[step] = time.perf_counter()
        return self.inner.step(lr_b, hr_b, step)

    def rate(self) -> float:
        return (self.last - self.first) / (self.marks[self.last] - self.marks[self.first])


def free(dev: torch.device) -> None:
    """Release what the previous measurement left: CUDA's cached blocks; on the CPU glibc's free
    heap pages (else the next CPU peak, a growth of RSS, would reuse them unseen)."""
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Row:
    name: str
    stage: str
    scale: int
    shape: str = ""  # batch x patch
    pipe_its: float = float("nan")
    synth_its: float = float("nan")
    train_gib: float = float("nan")
    step_tflop: float = float("nan")  # TFLOP per training step
    train_uncounted: list = field(default_factory=list)
    infer_mps: float = float("nan")
    infer_gib: float = float("nan")
    infer_tflops: float = float("nan")  # TFLOP/s of inference
    infer_uncounted: bool = False
    error: str = ""
    infer_error: str = ""  # inference alone failed (OOM): the training figures stand
    seconds: float = 0.0  # wall time of the whole row

    @property
    def share(self) -> float:
        return 1.0 - self.pipe_its / self.synth_its

    def train_tflops(self, rate: float) -> float:
        return self.step_tflop * rate


# --------------------------------------------------------------------------- cases


@dataclass
class Case:
    """One training run to time: how to make its model and objective, its settings, sampler
    and job (what ``fit`` gets), and its inference (only on a model's last stage)."""

    name: str
    stage: str
    scale: int
    job: TrainJob
    settings: TrainSettings
    make: Callable[[], tuple[torch.nn.Module, object]]  # (model, objective), fresh
    sampler: Callable[[], object]
    infer: Callable[[torch.nn.Module], tuple[float, float, float, bool]] | None = (
        None  # -> MP/s, GiB, TFLOP/s, lower bound
    )
    hr_patch: bool = False  # patch_size counts HR pixels (GPEMSR stage I)
    block: tuple | None = None  # segmenters: input block


def stand_in_weights(root: Path) -> Pretrained:
    """A registry whose vgg19 and spynet entries are random weights in the published files'
    formats (torchvision VGG19; basicsr SPyNet ``{'params': ...}``), checksums matching."""
    import hashlib

    import torchvision

    from emsrbench.nets.spynet import SpyNet

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    files = {
        "vgg19": ("vgg19-stand-in.pth", torchvision.models.vgg19(weights=None).state_dict()),
        "spynet": ("spynet-stand-in.pth", {"params": SpyNet().state_dict()}),
    }
    entries = {}
    for name, (fname, state) in files.items():
        torch.save(state, root / fname)
        entries[name] = {
            "file": fname,
            "url": "https://example.invalid/" + fname,
            "sha256": hashlib.sha256((root / fname).read_bytes()).hexdigest(),
        }
    (root / "registry.yaml").write_text(yaml.safe_dump(entries))
    return Pretrained(root, root / "registry.yaml")


def make_data(root: Path, depth: int, side: int, scales) -> dict:
    """Phantom HR volume (with labels) and its bicubic degradation per scale: the workflow's files."""
    from emsrbench import phantom

    hr = root / "hr.h5"
    phantom.write(hr, shape=(depth, side, side), seed=0)
    files = {"hr": hr}
    for s in scales:
        files[s] = root / f"train-x{s}.h5"
        degrade_file(hr, files[s], s, Degradation())
    return files


def bench_settings(st: TrainSettings, args, hr_patch: bool = False) -> TrainSettings:
    """The run's settings with the benchmark's length (and the smoke mode's small shapes)."""
    over = {"iterations": args.warmup + args.steps + 1, "checkpoint_every": 10**9, "device": args.device}
    if args.loader_workers is not None:
        over["loader_workers"] = args.loader_workers
    if args.smoke:
        over["batch_size"] = min(st.batch_size, 2)
        over["patch_size"] = min(st.patch_size, 64 if hr_patch else 8)
    if args.batch:
        over["batch_size"] = args.batch
    return dataclasses.replace(st, **over)


def method_cases(method, scale: int, args, files: dict, pretrained: Pretrained, work: Path) -> list[Case]:
    p = method.preset(args.preset, scale)
    settings = TrainSettings.merged(p["train"], source=f"{method.name} {args.preset} train")
    job = TrainJob(
        method=method,
        scale=scale,
        preset=args.preset,
        model_params=p["model"],
        settings=settings,
        train_files=[str(files[scale])],
        out_path=work / "model.pt",
        ckpt_dir=work / "ckpt",
        threads=args.threads,
        pretrained=pretrained,
    )
    mod = method.module()
    patches = lambda: PatchSampler(job.train_files, scale, method.slices)  # noqa: E731
    infer = lambda model: infer_method(model, method, scale, args, files, p)  # noqa: E731

    def harness_model():
        torch.manual_seed(0)
        model = mod.build(scale, **p["model"])
        init = getattr(mod, "init_pretrained", None)
        if callable(init):
            job.flags.extend(init(model, pretrained) or [])
        return model

    if method.name == "gpemsr":
        return gpemsr_cases(method, scale, args, job, files, patches, infer)
    if method.name == "realesrgan":
        st1, st2 = (settings.stage(s) for s in mod.STAGES)
        return [
            Case(
                method.name,
                "esrnet",
                scale,
                job,
                bench_settings(st1, args),
                lambda: (harness_model(), L1Objective()),
                patches,
            ),
            Case(
                method.name,
                "esrgan",
                scale,
                job,
                bench_settings(st2, args),
                lambda: (harness_model(), mod.RealESRGANObjective(**st2.objective)),
                patches,
                infer,
            ),
        ]
    return [
        Case(
            method.name,
            "train",
            scale,
            job,
            bench_settings(settings, args),
            lambda: (harness_model(), L1Objective()),
            patches,
            infer,
        )
    ]


def untrained_stage_files(cfg, scale: int, folder: Path) -> tuple[Path, Path]:
    """Stage I and II model files of untrained networks of ``cfg`` (what stages II and III
    read: the hand-off is the real one, the weights do not matter for shapes, time or memory)."""
    from emsrbench.gpemsr import VQGAN, Indexer

    folder.mkdir(parents=True, exist_ok=True)
    vq, idx = folder / f"stage1-x{scale}.pt", folder / f"stage2-x{scale}.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": VQGAN(cfg).state_dict()}, vq)
    torch.save({"state_dict": Indexer(cfg, scale).state_dict()}, idx)
    return vq, idx


def gpemsr_cases(method, scale, args, job, files, patches, infer) -> list[Case]:
    """The three stages, each built as its training function builds it (emsrbench.gpemsr.training)."""
    from emsrbench.gpemsr import VQGAN, Indexer, training
    from emsrbench.gpemsr.objectives import FusionObjective, IndexerObjective, VQGANObjective
    from emsrbench.gpemsr.stages import load_vqgan, read_state

    cfg = training.config_of(job)
    st1, st2, st3 = (job.settings.stage(s) for s in training.STAGES)
    gan = {**st1.objective, "gan_start": 0, "quantize_start": 0}  # timed in the GAN phase
    vq, idx = untrained_stage_files(cfg, scale, job.ckpt_dir.parent / "stages")

    def stage1():
        return training._seeded(st1.seed, VQGAN, cfg), VQGANObjective(**gan)

    def stage2():
        frozen = load_vqgan(cfg, read_state(vq), str(vq))
        return training._seeded(st2.seed, Indexer, cfg, scale), IndexerObjective(frozen, **st2.objective)

    def stage3():
        return training.build_fusion(job, vq, idx), FusionObjective(**st3.objective)

    hr_sampler = lambda: training.HRSampler(job.train_files)  # noqa: E731
    return [
        Case(
            method.name,
            "I vqgan",
            scale,
            job,
            bench_settings(st1, args, hr_patch=True),
            stage1,
            hr_sampler,
            hr_patch=True,
        ),
        Case(method.name, "II indexer", scale, job, bench_settings(st2, args), stage2, patches),
        Case(method.name, "III fusion", scale, job, bench_settings(st3, args), stage3, patches, infer),
    ]


def segmenter_case(name: str, args, files: dict, work: Path) -> Case:
    from emsrbench.segment import networks
    from emsrbench.segment.training import AffinitySampler, WeightedMSEObjective

    pre = networks.preset(name, args.preset)
    settings = TrainSettings.merged(pre["train"], source=f"segmentation {name} {args.preset} train")
    probe = networks.build(name, pre["model"])
    in_shape, out_shape = networks.block_shapes(name, probe, pre["block"])
    del probe
    job = TrainJob(
        method=networks.segmenter(name),
        scale=1,
        preset=args.preset,
        model_params=pre["model"],
        settings=settings,
        train_files=[str(files["hr"])],
        out_path=work / "model.pt",
        ckpt_dir=work / "ckpt",
        threads=args.threads,
    )

    def make():
        torch.manual_seed(0)
        return networks.build(name, pre["model"]), WeightedMSEObjective()

    st = bench_settings(settings, args)
    st = dataclasses.replace(st, patch_size=settings.patch_size)  # blocks are fixed, not patches
    return Case(
        name,
        "affinities",
        1,
        job,
        st,
        make,
        lambda: AffinitySampler(job.train_files, in_shape, out_shape),
        lambda model: infer_segmenter(model, name, pre, args, files),
        block=in_shape,
    )


# --------------------------------------------------------------------------- inference


def inference_settings(args, preset: dict) -> InferSettings:
    cfg = REPO / "config" / ("paper.yaml" if args.preset == "paper" else "config.yaml")
    base = (yaml.safe_load(cfg.read_text()) or {}).get("inference", {})
    return InferSettings.merged(
        base, preset.get("infer", {}), {"precision": args.infer_precision, "device": args.device}
    )


def timed_inference(run: Callable[[], object], model, dev: torch.device, repeats: int):
    """Seconds per ``run()`` (after one untimed warm-up: cuDNN's algorithm choice, the blending
    weights), its peak memory (GiB, weights included) and the MACs it computes, counted over
    one more call of the same run (overlaps recomputed, features reused: what it computes)."""
    run()
    with cost.PeakMemory(dev, resident_bytes=cost.model_bytes(model)) as peak:
        synchronize(dev)
        t0 = time.perf_counter()
        for _ in range(repeats):
            run()
        synchronize(dev)
        seconds = (time.perf_counter() - t0) / repeats
    return seconds, peak.mib / 1024, cost.count_run(run)


def infer_method(model, method, scale: int, args, files: dict, preset: dict):
    """The workflow's tiled inference (TiledUpscaler.sections, as infer_file calls it) of
    ``--sections`` output sections of the LR volume -> MP/s, GiB, TFLOP/s, lower bound."""
    dev = devices.pick_device(args.device)
    model = model.to(dev).eval()
    lr, _ = read_dataset(files[scale], LR_KEY, dtype=np.uint8, ndim=3)
    depth, h, w = lr.shape
    windows = np.stack([neighbour_indices(z % depth, depth, method.slices) for z in range(args.sections)])
    up = TiledUpscaler(model, scale, inference_settings(args, preset), dev)
    seconds, gib, count = timed_inference(lambda: up.sections(lr, windows), model, dev, args.repeats)
    out_mp = len(windows) * h * w * scale * scale / 1e6
    return out_mp / seconds, gib, 2 * count.macs / seconds / 1e12, not count.complete


def infer_segmenter(model, name: str, pre: dict, args, files: dict):
    """Blockwise affinities (the segmentation stage's predict_affinities, the preset's blocks
    and tiling) over the HR volume -> output megavoxels/s, GiB, TFLOP/s, lower bound."""
    from emsrbench.segment import networks
    from emsrbench.segment.blockwise import BlockSpec, predict_affinities
    from emsrbench.segment.stage import infer_settings

    dev = devices.pick_device(args.device)
    st = infer_settings(pre["infer"], {"precision": args.infer_precision, "device": args.device}, name)
    in_shape, out_shape = networks.block_shapes(name, model, st.block or pre["block"])
    spec = BlockSpec.make(in_shape, out_shape, st.stride, st.pad or (0, 0, 0), factor=model.factor, tiling=st.tiling)
    raw, _ = read_dataset(files["hr"], RAW_KEY, dtype=np.uint8, ndim=3)
    model = model.to(dev).eval()
    run = lambda: predict_affinities(model, raw, spec, dev, batch=st.batch, precision=st.precision, log_every=1e9)  # noqa: E731
    seconds, gib, count = timed_inference(run, model, dev, args.repeats)
    return raw.size / 1e6 / seconds, gib, 2 * count.macs / seconds / 1e12, not count.complete


# --------------------------------------------------------------------------- one row


def run_case(case: Case, args, work: Path) -> Row:
    dev = devices.pick_device(args.device)
    st = case.settings
    patch = "x".join(map(str, case.block)) if case.block else f"{st.patch_size}{' HR' if case.hr_patch else ''}"
    row = Row(case.name, case.stage, case.scale, f"{st.batch_size} x {patch}")
    t_row = time.perf_counter()
    first, last = args.warmup, args.warmup + args.steps
    log = io.StringIO()
    try:
        with contextlib.redirect_stderr(log):
            # the pipeline: fit's own loop over the degraded file
            model, objective = case.make()
            timed = Timed(objective, first, last, dev)
            stage_dir = work / f"{case.name}-{case.stage.replace(' ', '_')}-x{case.scale}"
            fit(
                case.job,
                objective=timed,
                settings=st,
                ckpt_dir=stage_dir / "ckpt",
                out_path=stage_dir / "model.pt",
                model=model,
                stage=case.stage,
                sampler=case.sampler(),
            )
            row.pipe_its = timed.rate()
            del model, objective, timed
            free(dev)
            # the synthetic loop: same model and objective, batches already on the device
            sampler = case.sampler()
            rng = np.random.default_rng(0)
            batches = [
                tuple(t.to(dev) for t in sampler.batch(rng, st.batch_size, st.patch_size, st.augment)) for _ in range(2)
            ]
            devices.set_threads(args.threads)
            with cost.PeakMemory(dev) as peak:
                model, objective = case.make()
                model = model.to(dev).train()
                objective.setup(case.job, model, st, dev)
                ema = EMA(model, st.ema_decay) if st.ema_decay > 0 else None
                timed = Timed(objective, first, last, dev)
                for step in range(st.iterations):
                    torch.manual_seed(step)
                    timed.step(*batches[step % 2], step)
                    if ema is not None:
                        ema.update(model)
                synchronize(dev)
            objective.raise_if_not_finite()  # as fit does: a NaN loss fails the row
            row.synth_its, row.train_gib = timed.rate(), peak.mib / 1024
            count = cost.count_run(functools.partial(objective.step, *batches[0], st.iterations + 1))
            row.step_tflop, row.train_uncounted = 2 * count.macs / 1e12, sorted(count.uncounted)
            del batches, ema, objective, timed  # the optimiser state goes with them
            model.zero_grad(set_to_none=True)  # inference memory without the last step's gradients
            free(dev)
            if case.infer is not None:
                try:  # an inference OOM keeps the row's training figures
                    row.infer_mps, row.infer_gib, row.infer_tflops, row.infer_uncounted = case.infer(model)
                except torch.cuda.OutOfMemoryError:
                    row.infer_error = "OOM"
    except torch.cuda.OutOfMemoryError:
        row.error = "OOM"
    except Exception as err:  # noqa: BLE001 - one failing row must not stop the table
        row.error = f"error: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:160]
        print(
            f"{case.name} {case.stage} x{case.scale}: {row.error}\n{traceback.format_exc()}"
            f"--- its log ---\n{log.getvalue()[-4000:]}",
            file=sys.stderr,
        )
    finally:
        model = objective = timed = None  # noqa: F841
        free(dev)
    row.seconds = time.perf_counter() - t_row
    return row


# --------------------------------------------------------------------------- table


def fmt(v: float, digits: int = 2) -> str:
    return "-" if v != v else f"{v:.{digits}f}"


def table(rows: list[Row], peak: float | None) -> list[str]:
    pct = lambda tf: "-" if peak is None or tf != tf else f"{100 * tf / peak:.1f}"  # noqa: E731
    lines = [
        "| model | stage | x | batch x patch | train it/s pipeline | it/s synthetic | pipeline share | "
        "train peak GiB | train TFLOP/s | train %pk | infer MP/s | infer peak GiB | infer TFLOP/s | infer %pk |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error:
            lines.append(f"| {r.name} | {r.stage} | {r.scale} | {r.shape} | {r.error} |" + " |" * 9)
            continue
        star = "*" if r.train_uncounted else ""
        tf = r.train_tflops(r.pipe_its)
        istar = "*" if r.infer_uncounted else ""
        infer = (
            f"inference {r.infer_error} | | |"
            if r.infer_error
            else f"{fmt(r.infer_mps, 3)} | {fmt(r.infer_gib)} | {fmt(r.infer_tflops, 3)}{istar} |"
        )
        lines.append(
            f"| {r.name} | {r.stage} | {r.scale} | {r.shape} | {fmt(r.pipe_its)} | {fmt(r.synth_its)} | "
            f"{fmt(100 * r.share, 0)}% | {fmt(r.train_gib)} | {fmt(tf, 3)}{star} | {pct(tf)}{star} | "
            f"{infer} {'' if r.infer_error else pct(r.infer_tflops) + istar} |"
        )
    return lines


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default=None, help="paper (default) | quick (default of --smoke)")
    ap.add_argument("--scales", type=int, nargs="+", default=[8])
    ap.add_argument("--methods", nargs="*", default=None, help="default: every method that trains")
    ap.add_argument(
        "--segmenters", nargs="*", default=None, help=f"default: {' '.join(SEGMENTERS)}; none: --segmenters"
    )
    ap.add_argument("--smoke", action="store_true", help="tiny shapes (the default without CUDA)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 8; smoke 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 24; smoke 1)")
    ap.add_argument("--batch", type=int, default=None, help="override every batch size (e.g. after an OOM)")
    ap.add_argument("--loader-workers", type=int, default=None, help="default: the harness's (4 on a GPU, 0 on CPU)")
    ap.add_argument("--sections", type=int, default=None, help="LR sections per inference call (default 8; smoke 1)")
    ap.add_argument("--depth", type=int, default=None, help="sections of the data volume (default 16; smoke 6)")
    ap.add_argument("--repeats", type=int, default=None, help="timed inference calls (default 3; smoke 1)")
    ap.add_argument("--infer-precision", default="fp32", choices=devices.PRECISIONS)
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (TFLOP/s)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--out", default=None, help="markdown output (default benchmarks/out/gpu-<preset>[-smoke].md)")
    args = ap.parse_args(argv)
    dev = devices.pick_device(args.device)
    cuda = dev.type == "cuda"
    args.smoke = args.smoke or not cuda
    if args.peak_tflops is None and cuda:
        args.peak_tflops = bf16_peak(torch.cuda.get_device_name(dev))
    small = args.smoke
    args.preset = args.preset or ("quick" if small else "paper")
    for name, full, tiny in (
        ("warmup", 8, 1),
        ("steps", 24, 1),
        ("sections", 8, 1),
        ("depth", 16, 6),
        ("repeats", 3, 1),
    ):
        if getattr(args, name) is None:
            setattr(args, name, tiny if small else full)
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    return args


def run(args) -> list[Row]:
    dev = devices.pick_device(args.device)
    args.threads = devices.set_threads(args.threads)
    methods = discover()
    names = args.methods if args.methods is not None else sorted(n for n, m in methods.items() if m.trains)
    segmenters = SEGMENTERS if args.segmenters is None else args.segmenters
    side = max(64, 8 * max(args.scales)) if args.smoke else SECTION  # smoke: LR patches of 8 px
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="emsrbench-gpu-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        files = make_data(work / "data", args.depth, side, args.scales)
        needs_weights = any(methods[n].pretrained for n in names)
        pretrained = stand_in_weights(work / "weights") if needs_weights else Pretrained(work / "no-weights")
        print(
            f"data: {args.depth} x {side} x {side} phantom, degraded x{args.scales}, {time.perf_counter() - t0:.0f} s; "
            f"device {devices.describe(dev)}, preset {args.preset}{' (smoke)' if args.smoke else ''}",
            flush=True,
        )
        cases: list[Case] = []
        for name in names:
            m = methods[name]
            for s in args.scales:
                if s in m.scales:
                    cases += method_cases(m, s, args, files, pretrained, work / "jobs")
        cases += [segmenter_case(n, args, files, work / "jobs") for n in segmenters]
        for case in cases:
            rows.append(run_case(case, args, work / "runs"))
            print(table([rows[-1]], args.peak_tflops)[-1] + f"  ({rows[-1].seconds:.0f} s)", flush=True)
    return rows


def main(argv=None) -> int:
    args = parse(argv)
    dev = devices.pick_device(args.device)
    rows = run(args)
    peak = args.peak_tflops
    uncounted = sorted({op for r in rows for op in r.train_uncounted})
    notes = [
        f"Machine: {machine()}; device {devices.describe(dev)}; threads {args.threads}",
        f"Preset {args.preset}{', smoke mode (tiny shapes)' if args.smoke else ''}; scales {args.scales}; "
        f"{args.warmup} warm-up + {args.steps} timed steps; inference {args.infer_precision}, "
        f"{args.sections} sections x {args.repeats}; dense bf16 peak "
        + (f"{peak:g} TFLOP/s" if peak else "unknown (--peak-tflops)"),
        "",
    ]
    footer = [""]
    if uncounted:
        footer.append("*: lower bound, no FLOP formula for " + ", ".join(uncounted))
    footer.append(
        f"%pk: of the dense bf16 peak; training runs under bf16 autocast on CUDA, inference at {args.infer_precision}."
    )
    text = "\n".join([f"# Device throughput, preset {args.preset}", ""] + notes + table(rows, peak) + footer + [""])
    out = (
        Path(args.out)
        if args.out
        else REPO / "benchmarks" / "out" / f"gpu-{args.preset}{'-smoke' if args.smoke else ''}.md"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"peak_tflops": peak, "device": devices.describe(dev), "rows": [dataclasses.asdict(r) for r in rows]},
                indent=1,
            )
        )
    print("\n" + text)
    print(f"written: {out}")
    return 1 if any(r.error or r.infer_error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
