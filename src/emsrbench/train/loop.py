"""The harness training loop: random LR/HR patch pairs, an objective (L1 + Adam + cosine by default),
resumable checkpoints.

Resumability is built on stateless randomness: the batch of step ``t`` is drawn from a
generator seeded with ``(seed, t)`` and torch's RNG is reseeded the same way, so a run that
restarts from the checkpoint of step ``k`` replays exactly the batches an uninterrupted run
would have seen.  On CPU that makes interrupted and uninterrupted weights bit-identical.

The loop (:func:`fit`) is written once.  What it optimises is an :class:`Objective`: the
default :class:`L1Objective` (pixel loss, Adam, cosine decay) or a method's own, e.g. a GAN
objective that owns a discriminator and two optimizers.  A method with several training
stages calls :func:`fit` once per stage from its ``train(job)``, each stage with its own
settings (:meth:`TrainSettings.stage`), checkpoint directory and output file.
"""

from __future__ import annotations

import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import device as devices
from ..errors import EmsrError
from ..fingerprint import Fingerprint, file_digest, files_digest
from ..io import atomic_path
from ..methods import Method
from ..pretrained import Pretrained
from .ema import EMA
from .objectives import L1Objective, Objective
from .sampling import PatchSampler, validation_psnr
from .settings import TrainSettings


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
    # The planned job as the workflow names it (emsrbench.plan.Plan.training_identity): stored
    # in the model file, checked by inference. None outside the workflow (tests, scripts).
    identity: Fingerprint | None = None


# Settings that do not change the weights: a run may resume with other values of these.
NOT_SHAPING = ("device", "checkpoint_every", "log_every", "loader_workers")


def training_fingerprint(
    job: TrainJob, settings: TrainSettings, stage: str = "", shaped_by: dict | None = None
) -> Fingerprint:
    """What the weights of one training run (one stage of a job) are made from: method,
    variant, scale, model and train settings, the content of the training and validation
    volumes, of the files in ``shaped_by`` (paths: upstream stage files; other values: settings
    the model's shape depends on) and of the pretrained files asked for since the previous
    run's fingerprint (this run's model and objective set-up)."""
    resolved = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in NOT_SHAPING}
    extra = {k: (file_digest(v) if isinstance(v, Path) else v) for k, v in (shaped_by or {}).items()}
    return Fingerprint(
        {
            "method": job.method.name,
            "variant": job.model_params.get("variant", ""),
            "scale": job.scale,
            "stage": stage,
            "model": job.model_params,
            "train": resolved,
            "data": {"train": files_digest(job.train_files), "val": files_digest(job.val_files)},
            "shaped_by": extra,
            "pretrained": job.pretrained.take_used() if job.pretrained is not None else {},
        }
    )


def _stale_checkpoint(ckpt: Path, record, fingerprint: Fingerprint, label: str) -> None:
    """Move a checkpoint made from other inputs aside (``stale/``), saying what changed."""
    old = record.get("digest", "unknown") if isinstance(record, dict) else "none"
    dest = ckpt.parent / "stale" / f"{ckpt.stem}-{old}{ckpt.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    ckpt.replace(dest)
    print(
        f"{label}: checkpoint {ckpt} was made from other inputs ({fingerprint.changes_from(record)}); "
        f"moved to {dest}; training from step 0",
        file=sys.stderr,
    )


def trained_file_matches(path: Path, fingerprint: Fingerprint) -> bool:
    """Whether ``path`` is a model file made by a finished run of exactly ``fingerprint``
    (an intermediate stage file a rerun may keep)."""
    if not path.is_file():
        return False
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is retrained, not trusted
        return False
    return fingerprint.matches(payload.get("fingerprint"))


class RunningLosses:
    """Exponential averages (0.9) of the objective's losses, kept on the device: adding a
    step's values never waits for the GPU; :meth:`read` (every ``log_every`` steps) does."""

    def __init__(self, device: torch.device):
        self.device, self.values = device, {}

    def add(self, losses: dict) -> None:
        for k, v in losses.items():
            v = torch.as_tensor(v, dtype=torch.float32, device=self.device).detach()
            old = self.values.get(k)
            self.values[k] = v if old is None else torch.where(torch.isnan(old), v, 0.9 * old + 0.1 * v)

    def read(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.values.items()}


def step_batches(sampler, settings: TrainSettings, start: int, device: torch.device):
    """The batches of steps ``start`` .. ``iterations - 1``, each drawn from a generator seeded
    by (seed, step), so any number of worker processes (``loader_workers``) gives the same
    batches and a resumed run replays the ones an uninterrupted run would see. Workers cut them
    ahead of the loop into pinned memory on a GPU, where the copy then overlaps the compute."""
    workers = settings.loader_workers
    if workers is None:
        workers = 4 if device.type == "cuda" else 0
    steps = _StepBatches(sampler, settings)
    return torch.utils.data.DataLoader(
        steps,
        batch_size=None,
        sampler=range(start, settings.iterations),
        num_workers=workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=2 if workers else None,
        persistent_workers=False,
    )


class _StepBatches(torch.utils.data.Dataset):
    """Batch ``step`` of a sampler: what :func:`step_batches` loads."""

    def __init__(self, sampler, settings: TrainSettings):
        self.sampler, self.settings = sampler, settings

    def __len__(self) -> int:
        return self.settings.iterations

    def __getitem__(self, step: int):
        st = self.settings
        return self.sampler.batch(
            np.random.default_rng(_step_seed(st.seed, step)), st.batch_size, st.patch_size, st.augment
        )


def _step_seed(seed: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Preempted(Exception):
    pass


def fit(
    job: TrainJob,
    max_steps: int | None = None,
    *,
    objective: Objective | None = None,
    settings: TrainSettings | None = None,
    ckpt_dir: Path | None = None,
    out_path: Path | None = None,
    model: nn.Module | None = None,
    stage: str = "",
    meta: dict | None = None,
    prior_seconds: float = 0.0,
    sampler=None,
    shaped_by: dict | None = None,
) -> Path | None:
    """Train with the harness loop; returns the model path, or None if stopped at ``max_steps``
    (used by tests to simulate a kill after a checkpoint).

    Everything after ``max_steps`` is for methods that train in stages from their own
    ``train(job)``; the defaults give the harness training of ``job``:

    - ``objective``: what is optimised (default :class:`L1Objective`);
    - ``settings``: this run's settings (default ``job.settings``; a stage: ``job.settings.stage(name)``);
    - ``ckpt_dir`` / ``out_path``: where this run checkpoints and writes its model file
      (default ``job.ckpt_dir`` / ``job.out_path``);
    - ``model``: the network to start from (e.g. the previous stage's result; default: built
      from the preset, then the method's ``init_pretrained``);
    - ``stage``: a label for logs and the progress bar; ``meta``: extra plain-typed entries
      of the model file; ``prior_seconds``: training time of earlier stages, added to this
      run's ``train_seconds``;
    - ``sampler``: where batches come from (default: LR/HR patches of ``job.train_files``):
      anything with ``batch(rng, batch_size, patch_size, augment) -> (input, target)`` drawing
      only from ``rng``, so that resume still replays the same batches. The affinity networks
      of :mod:`emsrbench.segment` train this way, with ``job.method`` a
      :class:`~emsrbench.segment.networks.Segmenter` (only ``name`` and ``model_py`` are read);
    - ``shaped_by``: what else this run's weights depend on, for its fingerprint (paths of
      upstream stage files, hashed by content; plain settings such as block shapes).

    A checkpoint resumes only when its fingerprint (:func:`training_fingerprint`) is this
    run's; one made from other inputs is moved aside and training starts at step 0. A finished
    ``out_path`` with this run's fingerprint (an intermediate stage file) is kept as it is.
    """
    st, method = settings or job.settings, job.method
    ckpt_dir = Path(ckpt_dir or job.ckpt_dir)
    out_path = Path(out_path or job.out_path)
    label = f"{method.name} x{job.scale}" + (f" {stage}" if stage else "")
    threads = devices.set_threads(job.threads)
    dev = devices.pick_device(st.device)
    torch.manual_seed(st.seed)
    if model is None:
        model = method.module().build(job.scale, **job.model_params)
        # A method with frozen/initialising pretrained parts loads them here; each part it had to
        # train from scratch or disable is returned as a flag that follows the model everywhere.
        init_pretrained = getattr(method.module(), "init_pretrained", None)
        if callable(init_pretrained):
            job.flags.extend(init_pretrained(model, job.pretrained or Pretrained()) or [])
    model = model.to(dev)
    if count_parameters(model) == 0:
        raise EmsrError(
            f"{method.model_py}: build() returned a model with no parameters, but method.yaml says trains: true"
        )
    objective = objective or L1Objective()
    objective.setup(job, model, st, dev)
    ema = EMA(model, st.ema_decay) if st.ema_decay > 0 else None
    sampler = sampler or PatchSampler(job.train_files, job.scale, method.slices)
    val_sampler = PatchSampler(job.val_files, job.scale, method.slices) if job.val_files else None
    val_curve: list[tuple[int, float]] = []

    fingerprint = training_fingerprint(job, st, stage, shaped_by)
    if trained_file_matches(out_path, fingerprint):
        print(f"{label}: {out_path} is trained from these inputs already", file=sys.stderr)
        return out_path
    ckpt = ckpt_dir / "last.pt"
    step, elapsed = 0, 0.0
    state = torch.load(ckpt, map_location=dev, weights_only=True) if ckpt.exists() else None
    if state is not None and not fingerprint.matches(state.get("fingerprint")):
        _stale_checkpoint(ckpt, state.get("fingerprint"), fingerprint, label)
        state = None
    if state is not None:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        if ema is not None:
            ema.module.load_state_dict(state["ema"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resuming {label} from step {step} ({ckpt})", file=sys.stderr)

    def save_checkpoint():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "step": step,
            "elapsed": elapsed + time.perf_counter() - t0,
            "model": model.state_dict(),
            "objective": objective.state_dict(),
            "fingerprint": fingerprint.record(),
        }
        if ema is not None:
            state["ema"] = ema.module.state_dict()
        with atomic_path(ckpt) as tmp:
            torch.save(state, tmp)

    final = ema.module if ema is not None else model  # what is validated and saved
    # SLURM preemption sends SIGTERM: finish the step, checkpoint, exit non-zero to be requeued.
    stop = {"flag": False}
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.update(flag=True))
    t0 = time.perf_counter()
    model.train()
    try:
        from tqdm import tqdm

        bar = tqdm(total=st.iterations, initial=step, desc=label, file=sys.stderr, mininterval=10, disable=False)
        running = RunningLosses(dev)
        for lr_b, hr_b in step_batches(sampler, st, step, dev):
            torch.manual_seed(_step_seed(st.seed + 1, step))
            lr_b, hr_b = lr_b.to(dev, non_blocking=True), hr_b.to(dev, non_blocking=True)
            running.add(objective.step(lr_b, hr_b, step))
            if ema is not None:
                ema.update(model)
            step += 1
            bar.update(1)
            if step % st.log_every == 0:
                objective.raise_if_not_finite()
                bar.set_postfix({k: f"{v:.4f}" for k, v in running.read().items()} | {"lr": f"{objective.lr():.2e}"})
            if val_sampler is not None and (step % st.checkpoint_every == 0 or step == st.iterations):
                val_curve.append((step, validation_psnr(final, val_sampler, st.patch_size, st.seed, dev)))
                print(f"step {step}: validation PSNR {val_curve[-1][1]:.3f} dB", file=sys.stderr)
            if step % st.checkpoint_every == 0 or stop["flag"]:
                objective.raise_if_not_finite()  # never checkpoint weights a NaN went through
                save_checkpoint()
            if stop["flag"]:
                raise _Preempted
            if max_steps is not None and step >= max_steps:
                save_checkpoint()
                return None
        bar.close()
        objective.raise_if_not_finite()
    except _Preempted:
        print(f"SIGTERM: checkpointed {label} at step {step}; rerun to resume", file=sys.stderr)
        sys.exit(143)
    finally:
        signal.signal(signal.SIGTERM, previous)

    train_seconds = prior_seconds + elapsed + time.perf_counter() - t0
    if val_sampler is not None and not val_curve:  # resumed from a checkpoint of the last step
        val_curve.append((step, validation_psnr(final, val_sampler, st.patch_size, st.seed, dev)))
    save_model(
        job,
        final,
        train_seconds=train_seconds,
        final_loss=running.read().get("loss", float("nan")),
        threads=threads,
        device=dev,
        val_psnr=val_curve[-1][1] if val_curve else float("nan"),
        out_path=out_path,
        meta={**(meta or {}), "fingerprint": fingerprint.record()},
    )
    return out_path


def save_model(
    job: TrainJob,
    model: nn.Module,
    train_seconds: float,
    final_loss: float,
    threads: int,
    device: torch.device,
    val_psnr: float = float("nan"),
    *,
    out_path: Path | None = None,
    meta: dict | None = None,
) -> None:
    """The model file inference reads: weights plus how they were made (plain types only,
    as torch.load defaults to weights_only=True). ``out_path`` defaults to ``job.out_path``;
    ``meta`` adds entries (plain types)."""
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
        "planned": job.identity.record() if job.identity is not None else None,
        **(meta or {}),
    }
    with atomic_path(Path(out_path or job.out_path)) as tmp:
        torch.save(payload, tmp)


def run(job: TrainJob) -> None:
    """Train with the method's own ``train(job)`` if it has one, else the harness loop."""
    custom = getattr(job.method.module(), "train", None)
    if callable(custom):
        custom(job)
        if not job.out_path.exists():
            raise EmsrError(f"{job.method.model_py}: train(job) finished without writing {job.out_path}")
        # its checkpoints are fingerprinted only when it trains through fit(): a model file
        # without a fingerprint was trained by other means and cannot be trusted to match
        if not torch.load(job.out_path, map_location="cpu", weights_only=True).get("fingerprint"):
            raise EmsrError(
                f"{job.method.model_py}: train(job) wrote {job.out_path} without a training fingerprint; "
                "train each stage through emsrbench.train.fit, which resumes only matching checkpoints"
            )
    else:
        fit(job)
