"""The harness trainer: random LR/HR patch pairs, L1 + Adam + cosine, resumable checkpoints.

Resumability is built on stateless randomness: the batch of step ``t`` is drawn from a
generator seeded with ``(seed, t)`` and torch's RNG is reseeded the same way, so a run that
restarts from the checkpoint of step ``k`` replays exactly the batches an uninterrupted run
would have seen.  On CPU that makes interrupted and uninterrupted weights bit-identical.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import device as devices
from .errors import EmsrError
from .io import LR_KEY, RAW_KEY, atomic_path, read_dataset
from .methods import Method
from .pretrained import Pretrained
from .settings import merge_layers


@dataclass
class TrainSettings:
    """Harness defaults (``config.train``), overridden by the method preset's ``train``."""

    iterations: int = 1000
    batch_size: int = 8
    patch_size: int = 16  # LR pixels; the HR patch is patch_size * scale
    lr: float = 2e-4
    lr_min: float = 1e-6
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.0
    loss: str = "l1"  # "l1" | "mse"
    grad_clip: float = 0.0  # 0 disables
    augment: bool = True  # flips + rot90, the dihedral group the SR literature uses
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0
    device: str = "auto"

    @classmethod
    def merged(cls, *layers: dict, source: str = "train") -> "TrainSettings":
        settings = merge_layers(cls, layers, source, "train")
        if settings.loss not in ("l1", "mse"):
            raise EmsrError(f"{source}: loss must be 'l1' or 'mse', got '{settings.loss}'")
        if settings.iterations < 1 or settings.batch_size < 1 or settings.patch_size < 2:
            raise EmsrError(f"{source}: iterations, batch_size must be >= 1 and patch_size >= 2")
        settings.betas = tuple(settings.betas)
        return settings


@dataclass
class TrainJob:
    """Everything a training run needs; also what a method's own ``train(job)`` receives."""

    method: Method
    scale: int
    preset: str
    model_params: dict
    settings: TrainSettings
    train_files: list[str]
    out_path: Path
    ckpt_dir: Path
    threads: int | None = None
    val_files: list[str] = field(default_factory=list)
    pretrained: Pretrained | None = None  # where pretrained components are looked up
    flags: list[str] = field(default_factory=list)  # what ran without its pretrained weights


class PatchSampler:
    """Random aligned LR/HR patches (with 2N+1 neighbouring LR sections) from degraded files."""

    def __init__(self, files: list[str], scale: int, slices: int):
        self.scale, self.half = scale, slices // 2
        self.pieces = []
        for f in files:
            hr, _ = read_dataset(f, RAW_KEY, dtype=np.uint8, ndim=3)
            lr, _ = read_dataset(f, LR_KEY, dtype=np.uint8, ndim=3)
            if hr.shape != (lr.shape[0], lr.shape[1] * scale, lr.shape[2] * scale):
                raise EmsrError(f"{f}:{LR_KEY}: shape {lr.shape} is not {RAW_KEY} {hr.shape} divided by {scale}")
            self.pieces.append((hr, lr))
        if not self.pieces:
            raise EmsrError("train: no training volumes given")
        sizes = np.array([lr.size for _, lr in self.pieces], dtype=float)
        self.weights = sizes / sizes.sum()

    def batch(self, rng: np.random.Generator, batch: int, patch: int, augment: bool):
        s = self.scale
        lrs, hrs = [], []
        for _ in range(batch):
            hr, lr = self.pieces[rng.choice(len(self.pieces), p=self.weights)]
            z, h, w = lr.shape
            if h < patch or w < patch:
                raise EmsrError(f"train: LR sections {h}x{w} are smaller than patch_size {patch}")
            k = rng.integers(z)
            y, x = rng.integers(h - patch + 1), rng.integers(w - patch + 1)
            # Edge replication at the ends of the stack, as at inference.
            zs = np.clip(np.arange(k - self.half, k + self.half + 1), 0, z - 1)
            lp = lr[zs, y : y + patch, x : x + patch]
            hp = hr[k : k + 1, y * s : (y + patch) * s, x * s : (x + patch) * s]
            if augment:
                rot, flip = rng.integers(4), rng.integers(2)
                lp, hp = (np.rot90(a, rot, axes=(1, 2)) for a in (lp, hp))
                if flip:
                    lp, hp = lp[:, :, ::-1], hp[:, :, ::-1]
            lrs.append(np.ascontiguousarray(lp))
            hrs.append(np.ascontiguousarray(hp))
        to_t = lambda a: torch.from_numpy(np.stack(a)).float().div_(255.0)  # noqa: E731
        return to_t(lrs), to_t(hrs)


VAL_PATCHES = 32


@torch.no_grad()
def validation_psnr(model: nn.Module, sampler: PatchSampler, patch: int, seed: int, dev: torch.device) -> float:
    """PSNR (dB, range 1) over a fixed, seeded set of validation patches: the same patches at
    every checkpoint, so the values form a learning curve."""
    rng = np.random.default_rng([seed, 2**31])
    lr_b, hr_b = sampler.batch(rng, VAL_PATCHES, patch, augment=False)
    was_training = model.training
    model.eval()
    with devices.autocast(dev):
        sr = torch.cat([model(lr_b[i : i + 8].to(dev)).float().cpu() for i in range(0, VAL_PATCHES, 8)])
    model.train(was_training)
    mse = torch.mean((sr.clamp(0, 1) - hr_b) ** 2).item()
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Preempted(Exception):
    pass


def fit(job: TrainJob, max_steps: int | None = None) -> Path | None:
    """Train with the harness loop; returns the model path, or None if stopped at ``max_steps``
    (used by tests to simulate a kill after a checkpoint)."""
    st, method = job.settings, job.method
    threads = devices.set_threads(job.threads)
    dev = devices.pick_device(st.device)
    torch.manual_seed(st.seed)
    model = method.module().build(job.scale, **job.model_params)
    # A method with frozen/initialising pretrained parts loads them here; each part it had to
    # train from scratch or disable is returned as a flag that follows the model everywhere.
    init_pretrained = getattr(method.module(), "init_pretrained", None)
    if callable(init_pretrained):
        job.flags.extend(init_pretrained(model, job.pretrained or Pretrained()) or [])
    model = model.to(dev)
    if count_parameters(model) == 0:
        raise EmsrError(f"{method.model_py}: build() returned a model with no parameters, but method.yaml says trains: true")
    opt = torch.optim.Adam(model.parameters(), lr=st.lr, betas=st.betas, weight_decay=st.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=st.iterations, eta_min=st.lr_min)
    loss_fn = nn.L1Loss() if st.loss == "l1" else nn.MSELoss()
    sampler = PatchSampler(job.train_files, job.scale, method.slices)
    val_sampler = PatchSampler(job.val_files, job.scale, method.slices) if job.val_files else None
    val_curve: list[tuple[int, float]] = []

    ckpt = job.ckpt_dir / "last.pt"
    step, elapsed = 0, 0.0
    if ckpt.exists():
        state = torch.load(ckpt, map_location=dev)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resuming {method.name} x{job.scale} from step {step} ({ckpt})", file=sys.stderr)

    def save_checkpoint():
        job.ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {"step": step, "elapsed": elapsed + time.perf_counter() - t0, "model": model.state_dict(),
                 "optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)

    # SLURM preemption sends SIGTERM: finish the step, checkpoint, exit non-zero to be requeued.
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    t0 = time.perf_counter()
    model.train()
    try:
        from tqdm import tqdm

        bar = tqdm(total=st.iterations, initial=step, desc=f"{method.name} x{job.scale}", file=sys.stderr,
                   mininterval=10, disable=False)
        running = float("nan")
        while step < st.iterations:
            rng = np.random.default_rng(_step_seed(st.seed, step))
            torch.manual_seed(_step_seed(st.seed + 1, step))
            lr_b, hr_b = sampler.batch(rng, st.batch_size, st.patch_size, st.augment)
            lr_b, hr_b = lr_b.to(dev), hr_b.to(dev)
            with devices.autocast(dev):
                sr = model(lr_b)
            if sr.shape != hr_b.shape:
                raise EmsrError(f"{method.model_py}: build({job.scale}) maps LR {tuple(lr_b.shape)} to {tuple(sr.shape)}, expected {tuple(hr_b.shape)}")
            loss = loss_fn(sr.float(), hr_b)
            if not torch.isfinite(loss):
                raise EmsrError(f"{method.model_py}: training loss became {loss.item()} at step {step} (x{job.scale})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if st.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), st.grad_clip)
            opt.step()
            sched.step()
            step += 1
            running = loss.item() if math.isnan(running) else 0.9 * running + 0.1 * loss.item()
            bar.update(1)
            if step % st.log_every == 0:
                bar.set_postfix(loss=f"{running:.4f}", lr=f"{sched.get_last_lr()[0]:.2e}")
            if val_sampler is not None and (step % st.checkpoint_every == 0 or step == st.iterations):
                val_curve.append((step, validation_psnr(model, val_sampler, st.patch_size, st.seed, dev)))
                print(f"step {step}: validation PSNR {val_curve[-1][1]:.3f} dB", file=sys.stderr)
            if step % st.checkpoint_every == 0 or stop["flag"]:
                save_checkpoint()
            if stop["flag"]:
                raise _Preempted
            if max_steps is not None and step >= max_steps:
                save_checkpoint()
                return None
        bar.close()
    except _Preempted:
        print(f"SIGTERM: checkpointed {method.name} x{job.scale} at step {step}; rerun to resume", file=sys.stderr)
        sys.exit(143)
    finally:
        signal.signal(signal.SIGTERM, previous)

    train_seconds = elapsed + time.perf_counter() - t0
    if val_sampler is not None and not val_curve:  # resumed from a checkpoint of the last step
        val_curve.append((step, validation_psnr(model, val_sampler, st.patch_size, st.seed, dev)))
    save_model(job, model, train_seconds=train_seconds, final_loss=running, threads=threads, device=dev,
               val_psnr=val_curve[-1][1] if val_curve else float("nan"))
    return job.out_path


def save_model(job: TrainJob, model: nn.Module, train_seconds: float, final_loss: float, threads: int,
               device: torch.device, val_psnr: float = float("nan")) -> None:
    """The model file inference reads: weights plus how they were made (plain types only,
    as torch.load defaults to weights_only=True)."""
    payload = {
        "method": job.method.name,
        "scale": job.scale,
        "preset": job.preset,
        "model_params": job.model_params,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "parameters": count_parameters(model),
        "train_seconds": float(train_seconds),
        "iterations": job.settings.iterations,
        "final_loss": float(final_loss),
        "val_psnr": float(val_psnr),
        "device": devices.describe(device),
        "threads": threads,
        "flags": list(job.flags),
    }
    with atomic_path(job.out_path) as tmp:
        torch.save(payload, tmp)


def run(job: TrainJob) -> None:
    """Train with the method's own ``train(job)`` if it has one, else the harness loop."""
    custom = getattr(job.method.module(), "train", None)
    if callable(custom):
        custom(job)
        if not job.out_path.exists():
            raise EmsrError(f"{job.method.model_py}: train(job) finished without writing {job.out_path}")
    else:
        fit(job)
