"""Learning-rate schedules of the harness: cosine decay, constant, cosine with restarts."""

from __future__ import annotations

import itertools
import math

import torch

from ..errors import EmsrError
from .settings import TrainSettings


class CosineRestartLR(torch.optim.lr_scheduler.LRScheduler):
    """BasicSR's ``CosineAnnealingRestartLR``: at iteration t in period i (cumulative ends
    c_0 < c_1 < ..., t <= c_i, the previous end c_{i-1}, 0 for the first),
    lr = eta_min + w_i / 2 * (base - eta_min) * (1 + cos(pi * (t - c_{i-1}) / p_i)).
    Past the last period the rate stays at the last period's end value."""

    def __init__(
        self, optimizer, periods: list[int], restart_weights: list[float], eta_min: float = 0.0, last_epoch: int = -1
    ):
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
        return [
            self.eta_min + w * 0.5 * (base - self.eta_min) * (1 + math.cos(math.pi * (t - start) / self.periods[i]))
            for base in self.base_lrs
        ]


def make_scheduler(opt: torch.optim.Optimizer, st: TrainSettings):
    """The learning-rate schedule of ``st.lr_schedule`` over ``st.iterations`` steps."""
    if st.lr_schedule == "constant":
        return torch.optim.lr_scheduler.ConstantLR(opt, factor=1.0, total_iters=0)
    if st.lr_schedule == "cosine_restarts":
        periods, weights = st.restart_periods()
        return CosineRestartLR(opt, periods, weights, eta_min=st.lr_min)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=st.iterations, eta_min=st.lr_min)
