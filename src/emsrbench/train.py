"""The harness trainer: random LR/HR patch pairs, an objective (L1 + Adam + cosine by default),
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

import copy
import itertools
import math
import signal
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import device as devices
from .errors import EmsrError
from .fingerprint import Fingerprint, files_digest, file_digest
from .io import LR_KEY, RAW_KEY, atomic_path, read_dataset
from .methods import Method
from .pretrained import Pretrained
from .settings import merge_layers


@dataclass
class TrainSettings:
    """Harness defaults (``config.train``), overridden by the method preset's ``train``."""

    iterations: int = 1000  # for a multi-stage method: all stages together (see ``stages``)
    batch_size: int = 8
    patch_size: int = 16  # LR pixels; the HR patch is patch_size * scale
    lr: float = 2e-4
    lr_min: float = 1e-6
    lr_schedule: str = "cosine"  # "cosine" (to lr_min over the iterations) | "constant" | "cosine_restarts"
    # "cosine_restarts" (BasicSR's CosineAnnealingRestartLR): one cosine from lr * weight down
    # to lr_min per period; periods in iterations, rescaled in proportion when they do not add
    # up to the run's iterations (e.g. a stage's share after a smoke-test override).
    lr_periods: list = field(default_factory=list)
    lr_restart_weights: list = field(default_factory=list)  # one per period; empty: all 1
    betas: tuple = (0.9, 0.99)
    weight_decay: float = 0.0
    loss: str = "l1"  # "l1" | "mse"
    grad_clip: float = 0.0  # 0 disables
    ema_decay: float = 0.0  # > 0: keep an exponential moving average of the weights; it is validated and saved
    augment: bool = True  # flips + rot90, the dihedral group the SR literature uses
    checkpoint_every: int = 100
    log_every: int = 25
    seed: int = 0
    device: str = "auto"
    # Keyword arguments of a method's own training objective (e.g. loss weights, discriminator
    # width); the method checks them. The harness L1 objective takes none.
    objective: dict = field(default_factory=dict)
    # Multi-stage methods (a custom ``train(job)``): {stage: {setting: value}}, each stage's
    # overrides of the settings above. Every stage names its ``iterations``; they are the split
    # of ``iterations`` between the stages (used as they are when they add up to it, scaled in
    # proportion otherwise, e.g. by a smoke-test override of ``iterations``). A setting given
    # in a later layer than ``stages`` (``config.train_override``) wins over the stages' values.
    stages: dict = field(default_factory=dict)

    @classmethod
    def merged(cls, *layers: dict, source: str = "train") -> "TrainSettings":
        settings = merge_layers(cls, layers, source, "train")
        settings._check(source)
        last = {key: i for i, layer in enumerate(layers) for key in (layer or {})}
        settings._after_stages = tuple(k for k, i in last.items()
                                       if "stages" in last and i > last["stages"] and k not in ("stages", "iterations"))
        stage_keys = {f.name for f in fields(cls)} - {"stages"}
        if not isinstance(settings.stages, dict):
            raise EmsrError(f"{source}: stages must be a mapping {{stage: {{setting: value}}}}")
        for name, over in settings.stages.items():
            if not isinstance(over, dict):
                raise EmsrError(f"{source}: stages.{name} must be a mapping of train settings")
            for key in over:
                if key not in stage_keys:
                    raise EmsrError(f"{source}: stages.{name}: unknown train setting '{key}' (known: {sorted(stage_keys)})")
            if not isinstance(over.get("iterations"), int) or over["iterations"] < 1:
                raise EmsrError(f"{source}: stages.{name}: needs iterations >= 1 (its share of the total)")
        if settings.stages and settings.iterations < len(settings.stages):
            raise EmsrError(f"{source}: iterations {settings.iterations} cannot be split between {len(settings.stages)} stages")
        return settings

    def _check(self, source: str) -> None:
        if self.loss not in ("l1", "mse"):
            raise EmsrError(f"{source}: loss must be 'l1' or 'mse', got '{self.loss}'")
        if self.lr_schedule not in ("cosine", "constant", "cosine_restarts"):
            raise EmsrError(f"{source}: lr_schedule must be 'cosine', 'constant' or 'cosine_restarts', got '{self.lr_schedule}'")
        self._check_restarts(source)
        if self.iterations < 1 or self.batch_size < 1 or self.patch_size < 2:
            raise EmsrError(f"{source}: iterations, batch_size must be >= 1 and patch_size >= 2")
        if not 0 <= self.ema_decay < 1:
            raise EmsrError(f"{source}: ema_decay must be in [0, 1), got {self.ema_decay}")
        if not isinstance(self.objective, dict):
            raise EmsrError(f"{source}: objective must be a mapping of keyword arguments")
        self.betas = tuple(self.betas)

    def _check_restarts(self, source: str) -> None:
        periods, weights = self.lr_periods, self.lr_restart_weights
        if not isinstance(periods, (list, tuple)) or not isinstance(weights, (list, tuple)):
            raise EmsrError(f"{source}: lr_periods and lr_restart_weights must be lists")
        if self.lr_schedule != "cosine_restarts":
            if periods or weights:
                raise EmsrError(f"{source}: lr_periods / lr_restart_weights need lr_schedule: cosine_restarts, "
                                f"got lr_schedule '{self.lr_schedule}'")
            return
        if not periods or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in periods):
            raise EmsrError(f"{source}: lr_schedule cosine_restarts needs lr_periods, a list of iteration counts >= 1, got {list(periods)}")
        if weights and len(weights) != len(periods):
            raise EmsrError(f"{source}: lr_restart_weights has {len(weights)} entries, lr_periods {len(periods)}")
        if not all(isinstance(w, (int, float)) and not isinstance(w, bool) and 0 <= w for w in weights):
            raise EmsrError(f"{source}: lr_restart_weights must be numbers >= 0, got {list(weights)}")
        self.lr_periods, self.lr_restart_weights = list(periods), [float(w) for w in weights] or [1.0] * len(periods)

    def restart_periods(self) -> tuple[list[int], list[float]]:
        """(periods, weights) of the cosine_restarts schedule over this run's ``iterations``:
        the periods as given when they add up to it, else rescaled in proportion (each
        period's end rounded); periods that round to nothing are dropped with their weights."""
        periods = list(self.lr_periods)
        total = sum(periods)
        if total == self.iterations:
            return periods, list(self.lr_restart_weights)
        bounds = [round(self.iterations * c / total) for c in itertools.accumulate(periods)]
        sized = [(b - a, w) for a, b, w in zip([0] + bounds[:-1], bounds, self.lr_restart_weights)]
        kept = [(n, w) for n, w in sized if n > 0]
        return [n for n, _ in kept], [w for _, w in kept]

    def stage_iterations(self) -> dict[str, int]:
        """``iterations`` split between the stages in proportion to their own ``iterations``
        (largest remainder, every stage at least 1; exact when they already add up)."""
        weights = {name: over["iterations"] for name, over in self.stages.items()}
        total = sum(weights.values())
        exact = {n: self.iterations * w / total for n, w in weights.items()}
        split = {n: max(1, math.floor(v)) for n, v in exact.items()}
        for n in sorted(exact, key=lambda n: exact[n] - math.floor(exact[n]), reverse=True):
            if sum(split.values()) >= self.iterations:
                break
            split[n] += 1
        while sum(split.values()) > self.iterations:  # only when the max(1, .) floors overshoot
            n = max(split, key=split.get)
            split[n] -= 1
        return split

    def stage(self, name: str, source: str = "train") -> "TrainSettings":
        """The settings of stage ``name``: these, overridden by ``stages[name]``, with the
        stage's share of ``iterations``."""
        if name not in self.stages:
            raise EmsrError(f"{source}: stages: no stage '{name}' (has {sorted(self.stages)}); this method trains in stages and needs each in its preset")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        later = getattr(self, "_after_stages", ())
        values.update({k: copy.deepcopy(v) for k, v in self.stages[name].items() if k not in later})
        values["iterations"] = self.stage_iterations()[name]
        settings = TrainSettings(**values)
        settings._check(f"{source}: stages.{name}")
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
    # The planned job as the workflow names it (emsrbench.plan.Plan.training_identity): stored
    # in the model file, checked by inference. None outside the workflow (tests, scripts).
    identity: Fingerprint | None = None


# Settings that do not change the weights: a run may resume with other values of these.
NOT_SHAPING = ("device", "checkpoint_every", "log_every")


def training_fingerprint(job: TrainJob, settings: TrainSettings, stage: str = "",
                         shaped_by: dict | None = None) -> Fingerprint:
    """What the weights of one training run (one stage of a job) are made from: method,
    variant, scale, model and train settings, the content of the training and validation
    volumes, of the files in ``shaped_by`` (paths: upstream stage files; other values: settings
    the model's shape depends on) and of the pretrained files asked for since the previous
    run's fingerprint (this run's model and objective set-up)."""
    resolved = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name not in NOT_SHAPING}
    extra = {k: (file_digest(v) if isinstance(v, Path) else v) for k, v in (shaped_by or {}).items()}
    return Fingerprint({
        "method": job.method.name,
        "variant": job.model_params.get("variant", ""),
        "scale": job.scale,
        "stage": stage,
        "model": job.model_params,
        "train": resolved,
        "data": {"train": files_digest(job.train_files), "val": files_digest(job.val_files)},
        "shaped_by": extra,
        "pretrained": job.pretrained.take_used() if job.pretrained is not None else {},
    })


def _stale_checkpoint(ckpt: Path, record, fingerprint: Fingerprint, label: str) -> None:
    """Move a checkpoint made from other inputs aside (``stale/``), saying what changed."""
    old = record.get("digest", "unknown") if isinstance(record, dict) else "none"
    dest = ckpt.parent / "stale" / f"{ckpt.stem}-{old}{ckpt.suffix}"
    dest.parent.mkdir(parents=True, exist_ok=True)
    ckpt.replace(dest)
    print(f"{label}: checkpoint {ckpt} was made from other inputs ({fingerprint.changes_from(record)}); "
          f"moved to {dest}; training from step 0", file=sys.stderr)


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


class CosineRestartLR(torch.optim.lr_scheduler.LRScheduler):
    """BasicSR's ``CosineAnnealingRestartLR``: at iteration t in period i (cumulative ends
    c_0 < c_1 < ..., t <= c_i, the previous end c_{i-1}, 0 for the first),
    lr = eta_min + w_i / 2 * (base - eta_min) * (1 + cos(pi * (t - c_{i-1}) / p_i)).
    Past the last period the rate stays at the last period's end value."""

    def __init__(self, optimizer, periods: list[int], restart_weights: list[float], eta_min: float = 0.0,
                 last_epoch: int = -1):
        if len(periods) != len(restart_weights) or not periods:
            raise EmsrError(f"lr schedule: {len(periods)} periods and {len(restart_weights)} restart weights")
        self.periods, self.restart_weights, self.eta_min = list(periods), list(restart_weights), eta_min
        self.cumulative = list(itertools.accumulate(self.periods))
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = min(self.last_epoch, self.cumulative[-1])
        i = next(k for k, c in enumerate(self.cumulative) if t <= c)
        start = self.cumulative[i - 1] if i else 0
        w = self.restart_weights[i]
        return [self.eta_min + w * 0.5 * (base - self.eta_min) * (1 + math.cos(math.pi * (t - start) / self.periods[i]))
                for base in self.base_lrs]


def make_scheduler(opt: torch.optim.Optimizer, st: TrainSettings):
    """The learning-rate schedule of ``st.lr_schedule`` over ``st.iterations`` steps."""
    if st.lr_schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if st.lr_schedule == "cosine_restarts":
        periods, weights = st.restart_periods()
        return CosineRestartLR(opt, periods, weights, eta_min=st.lr_min)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=st.iterations, eta_min=st.lr_min)


class Objective:
    """What :func:`fit` optimises, and everything it owns besides the model's weights.

    :func:`fit` calls, in this order:

    - ``setup(job, model, settings, device)`` once: build optimizers and schedulers (and any
      auxiliary network: a discriminator, a frozen loss network) for ``model``; may append
      flags to ``job.flags`` (e.g. a pretrained loss network that is missing);
    - ``load_state_dict(state)`` when resuming from a checkpoint;
    - ``step(lr_batch, hr_batch, step) -> {name: float}`` once per iteration, with torch's
      RNG already seeded for that step: forward, losses, backward, optimizer and scheduler
      steps. The first entry, ``"loss"``, is the headline value (progress bar, ``final_loss``);
    - ``lr()`` for the progress bar;
    - ``state_dict()`` at every checkpoint: plain tensors and primitives only, so the
      checkpoint loads with ``torch.load(weights_only=True)``.

    Subclasses get :meth:`forward` (the model under autocast, with the output-shape check)
    and :meth:`check_finite`.
    """

    def setup(self, job: "TrainJob", model: nn.Module, settings: TrainSettings, device: torch.device) -> None:
        self.job, self.model, self.settings, self.device = job, model, settings, device

    def step(self, lr_b: torch.Tensor, hr_b: torch.Tensor, step: int) -> dict[str, float]:
        raise NotImplementedError

    def lr(self) -> float:
        return float("nan")

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def forward(self, lr_b: torch.Tensor, hr_b: torch.Tensor) -> torch.Tensor:
        with devices.autocast(self.device):
            sr = self.model(lr_b)
        if sr.shape != hr_b.shape:
            job = self.job
            raise EmsrError(f"{job.method.model_py}: build({job.scale}) maps LR {tuple(lr_b.shape)} to {tuple(sr.shape)}, expected {tuple(hr_b.shape)}")
        return sr

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        if not torch.isfinite(loss):
            raise EmsrError(f"{self.job.method.model_py}: training loss became {loss.item()} at step {step} (x{self.job.scale})")


class AdamObjective(Objective):
    """An objective optimised by Adam with the settings' ``lr_schedule``: :meth:`optimiser`
    builds one (a GAN objective builds one per network), :meth:`update` takes one step of it.
    By default one optimiser over the model's trainable parameters, saved with the checkpoint."""

    def optimiser(self, params) -> tuple[torch.optim.Optimizer, object]:
        st = self.settings
        params = [p for p in params if p.requires_grad]  # frozen pretrained parts stay out
        opt = torch.optim.Adam(params, lr=st.lr, betas=st.betas, weight_decay=st.weight_decay)
        return opt, make_scheduler(opt, st)

    def update(self, loss: torch.Tensor, opt, sched, params, step: int) -> None:
        """Check ``loss``, backpropagate, clip (``grad_clip``), step optimiser and schedule."""
        self.check_finite(loss, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.settings.grad_clip > 0:
            nn.utils.clip_grad_norm_([p for p in params if p.requires_grad], self.settings.grad_clip)
        opt.step()
        sched.step()

    def setup(self, job, model, settings, device):
        super().setup(job, model, settings, device)
        self.opt, self.sched = self.optimiser(model.parameters())

    def lr(self):
        return self.sched.get_last_lr()[0]

    def state_dict(self):
        return {"optimizer": self.opt.state_dict(), "scheduler": self.sched.state_dict()}

    def load_state_dict(self, state):
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])


class L1Objective(AdamObjective):
    """The harness objective: L1 (or MSE, ``loss: mse``) to the HR patch, Adam, the
    ``lr_schedule`` (cosine by default), optional gradient clipping."""

    def setup(self, job, model, settings, device):
        if settings.objective:
            raise EmsrError(f"{job.method.model_py}: train setting 'objective' {settings.objective} is for a method's own objective; the harness L1 objective takes none")
        super().setup(job, model, settings, device)
        self.loss_fn = nn.L1Loss() if settings.loss == "l1" else nn.MSELoss()

    def step(self, lr_b, hr_b, step):
        sr = self.forward(lr_b, hr_b)
        loss = self.loss_fn(sr.float(), hr_b)
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        return {"loss": loss.item()}


class EMA:
    """Exponential moving average of a model's weights (``ema_decay``), as basicsr keeps
    ``net_g_ema``: parameters are averaged, buffers copied."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters()):
            ema_p.mul_(self.decay).add_(p.detach(), alpha=1 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)


def fit(job: TrainJob, max_steps: int | None = None, *, objective: Objective | None = None,
        settings: TrainSettings | None = None, ckpt_dir: Path | None = None, out_path: Path | None = None,
        model: nn.Module | None = None, stage: str = "", meta: dict | None = None,
        prior_seconds: float = 0.0, sampler=None, shaped_by: dict | None = None) -> Path | None:
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
        raise EmsrError(f"{method.model_py}: build() returned a model with no parameters, but method.yaml says trains: true")
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
        state = {"step": step, "elapsed": elapsed + time.perf_counter() - t0, "model": model.state_dict(),
                 "objective": objective.state_dict(), "fingerprint": fingerprint.record()}
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
        running: dict[str, float] = {}
        while step < st.iterations:
            rng = np.random.default_rng(_step_seed(st.seed, step))
            torch.manual_seed(_step_seed(st.seed + 1, step))
            lr_b, hr_b = sampler.batch(rng, st.batch_size, st.patch_size, st.augment)
            lr_b, hr_b = lr_b.to(dev), hr_b.to(dev)
            losses = objective.step(lr_b, hr_b, step)
            if ema is not None:
                ema.update(model)
            step += 1
            for k, v in losses.items():
                running[k] = v if k not in running or math.isnan(running[k]) else 0.9 * running[k] + 0.1 * v
            bar.update(1)
            if step % st.log_every == 0:
                bar.set_postfix({k: f"{v:.4f}" for k, v in running.items()} | {"lr": f"{objective.lr():.2e}"})
            if val_sampler is not None and (step % st.checkpoint_every == 0 or step == st.iterations):
                val_curve.append((step, validation_psnr(final, val_sampler, st.patch_size, st.seed, dev)))
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
        print(f"SIGTERM: checkpointed {label} at step {step}; rerun to resume", file=sys.stderr)
        sys.exit(143)
    finally:
        signal.signal(signal.SIGTERM, previous)

    train_seconds = prior_seconds + elapsed + time.perf_counter() - t0
    if val_sampler is not None and not val_curve:  # resumed from a checkpoint of the last step
        val_curve.append((step, validation_psnr(final, val_sampler, st.patch_size, st.seed, dev)))
    save_model(job, final, train_seconds=train_seconds, final_loss=running.get("loss", float("nan")),
               threads=threads, device=dev, val_psnr=val_curve[-1][1] if val_curve else float("nan"),
               out_path=out_path, meta={**(meta or {}), "fingerprint": fingerprint.record()})
    return out_path


def save_model(job: TrainJob, model: nn.Module, train_seconds: float, final_loss: float, threads: int,
               device: torch.device, val_psnr: float = float("nan"), *, out_path: Path | None = None,
               meta: dict | None = None) -> None:
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
            raise EmsrError(f"{job.method.model_py}: train(job) wrote {job.out_path} without a training fingerprint; "
                            "train each stage through emsrbench.train.fit, which resumes only matching checkpoints")
    else:
        fit(job)
