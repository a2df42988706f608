"""Trainer settings: harness defaults (``config.train``), overridden by a method preset's
``train`` and by ``config.train_override``; per-stage settings of multi-stage methods."""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field, fields

from ..errors import EmsrError
from ..settings import merge_layers


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
    # Worker processes that cut the batches ahead of the loop (torch DataLoader). None: none on
    # CPU (they would take the cores the job's threads compute on), 4 on a GPU, which would
    # otherwise wait for each batch. Batches depend on (seed, step) only: any count gives the
    # same training.
    loader_workers: int | None = None
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
        settings._after_stages = tuple(
            k for k, i in last.items() if "stages" in last and i > last["stages"] and k not in ("stages", "iterations")
        )
        stage_keys = {f.name for f in fields(cls)} - {"stages"}
        if not isinstance(settings.stages, dict):
            raise EmsrError(f"{source}: stages must be a mapping {{stage: {{setting: value}}}}")
        for name, over in settings.stages.items():
            if not isinstance(over, dict):
                raise EmsrError(f"{source}: stages.{name} must be a mapping of train settings")
            for key in over:
                if key not in stage_keys:
                    raise EmsrError(
                        f"{source}: stages.{name}: unknown train setting '{key}' (known: {sorted(stage_keys)})"
                    )
            if not isinstance(over.get("iterations"), int) or over["iterations"] < 1:
                raise EmsrError(f"{source}: stages.{name}: needs iterations >= 1 (its share of the total)")
        if settings.stages and settings.iterations < len(settings.stages):
            raise EmsrError(
                f"{source}: iterations {settings.iterations} cannot be split between {len(settings.stages)} stages"
            )
        return settings

    def _check(self, source: str) -> None:
        if self.loss not in ("l1", "mse"):
            raise EmsrError(f"{source}: loss must be 'l1' or 'mse', got '{self.loss}'")
        if self.lr_schedule not in ("cosine", "constant", "cosine_restarts"):
            raise EmsrError(
                f"{source}: lr_schedule must be 'cosine', 'constant' or 'cosine_restarts', got '{self.lr_schedule}'"
            )
        self._check_restarts(source)
        if self.iterations < 1 or self.batch_size < 1 or self.patch_size < 2:
            raise EmsrError(f"{source}: iterations, batch_size must be >= 1 and patch_size >= 2")
        if not 0 <= self.ema_decay < 1:
            raise EmsrError(f"{source}: ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.loader_workers is not None and (not isinstance(self.loader_workers, int) or self.loader_workers < 0):
            raise EmsrError(
                f"{source}: loader_workers must be an integer >= 0 or null (auto), got {self.loader_workers!r}"
            )
        if not isinstance(self.objective, dict):
            raise EmsrError(f"{source}: objective must be a mapping of keyword arguments")
        self.betas = tuple(self.betas)

    def _check_restarts(self, source: str) -> None:
        periods, weights = self.lr_periods, self.lr_restart_weights
        if not isinstance(periods, (list, tuple)) or not isinstance(weights, (list, tuple)):
            raise EmsrError(f"{source}: lr_periods and lr_restart_weights must be lists")
        if self.lr_schedule != "cosine_restarts":
            if periods or weights:
                raise EmsrError(
                    f"{source}: lr_periods / lr_restart_weights need lr_schedule: cosine_restarts, "
                    f"got lr_schedule '{self.lr_schedule}'"
                )
            return
        if not periods or not all(isinstance(p, int) and not isinstance(p, bool) and p >= 1 for p in periods):
            raise EmsrError(
                f"{source}: lr_schedule cosine_restarts needs lr_periods, "
                f"a list of iteration counts >= 1, got {list(periods)}"
            )
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
            raise EmsrError(
                f"{source}: stages: no stage '{name}' (has {sorted(self.stages)}); "
                "this method trains in stages and needs each in its preset"
            )
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "stages"}
        later = getattr(self, "_after_stages", ())
        values.update({k: copy.deepcopy(v) for k, v in self.stages[name].items() if k not in later})
        values["iterations"] = self.stage_iterations()[name]
        settings = TrainSettings(**values)
        settings._check(f"{source}: stages.{name}")
        return settings
