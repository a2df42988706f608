"""What :func:`~emsrbench.train.loop.fit` optimises: the :class:`Objective` protocol, an Adam
base with the settings' schedule, and the harness's pixel-loss objective."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import device as devices
from ..errors import EmsrError
from .schedules import make_scheduler
from .settings import TrainSettings

if TYPE_CHECKING:  # the loop imports this module
    from .loop import TrainJob


def refuse_objective_setting(settings: TrainSettings, where: str, why: str) -> None:
    """An objective with nothing to set refuses a train setting ``objective`` (``why``: whose it
    is not) rather than train as if it were not there; ``where`` prefixes the error."""
    if settings.objective:
        raise EmsrError(f"{where}: train setting 'objective' {settings.objective} {why}")


class Objective:
    """What :func:`fit` optimises, and everything it owns besides the model's weights.

    :func:`fit` calls, in this order:

    - ``setup(job, model, settings, device)`` once: build optimizers and schedulers (and any
      auxiliary network: a discriminator, a frozen loss network) for ``model``; may append
      flags to ``job.flags`` (e.g. a pretrained loss network that is missing);
    - ``load_state_dict(state)`` when resuming from a checkpoint;
    - ``step(lr_batch, hr_batch, step) -> {name: value}`` once per iteration, with torch's
      RNG already seeded for that step: forward, losses, backward, optimizer and scheduler
      steps. Values are detached 0-d tensors (or floats): the loop averages them on the device
      and reads them every ``log_every`` steps, so a step never waits for the GPU. The first
      entry, ``"loss"``, is the headline value (progress bar, ``final_loss``);
    - ``lr()`` for the progress bar;
    - ``state_dict()`` at every checkpoint: plain tensors and primitives only, so the
      checkpoint loads with ``torch.load(weights_only=True)``.

    Subclasses get :meth:`forward` (the model under autocast, with the output-shape check)
    and :meth:`check_finite`.
    """

    def setup(self, job: "TrainJob", model: nn.Module, settings: TrainSettings, device: torch.device) -> None:
        self.job, self.model, self.settings, self.device = job, model, settings, device
        self.defer_finite_checks = device.type != "cpu"

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
            raise EmsrError(
                f"{job.method.model_py}: build({job.scale}) maps LR {tuple(lr_b.shape)} to {tuple(sr.shape)}, "
                f"expected {tuple(hr_b.shape)}"
            )
        return sr

    _first_bad: torch.Tensor | None = None  # (step, value) of the first non-finite loss, on the device
    defer_finite_checks = False  # set by setup() off the CPU

    def check_finite(self, loss: torch.Tensor, step: int) -> None:
        """A non-finite loss stops training with a one-line error. On the CPU at once; on a GPU,
        where reading a value makes the host wait for the device, the first bad step is kept on
        the device and :meth:`raise_if_not_finite` (called by the loop every ``log_every`` steps
        and before every checkpoint) raises it."""
        if not self.defer_finite_checks:
            if not torch.isfinite(loss):
                self._raise(step, loss.item())
            return
        loss = loss.detach().float()
        here = torch.stack([torch.tensor(float(step), device=loss.device), loss])
        if self._first_bad is None:
            self._first_bad = torch.full((2,), float("nan"), device=loss.device)
        first = torch.isnan(self._first_bad[0]) & ~torch.isfinite(loss)
        self._first_bad = torch.where(first, here, self._first_bad)

    def raise_if_not_finite(self) -> None:
        if self._first_bad is not None:
            step, value = self._first_bad.tolist()
            if step == step:  # not NaN: a bad step was recorded
                self._raise(int(step), value)

    def _raise(self, step: int, value: float) -> None:
        raise EmsrError(f"{self.job.method.model_py}: training loss became {value} at step {step} (x{self.job.scale})")


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
        refuse_objective_setting(
            settings, job.method.model_py, "is for a method's own objective; the harness L1 objective takes none"
        )
        super().setup(job, model, settings, device)
        self.loss_fn = nn.L1Loss() if settings.loss == "l1" else nn.MSELoss()

    def step(self, lr_b, hr_b, step):
        sr = self.forward(lr_b, hr_b)
        loss = self.loss_fn(sr.float(), hr_b)
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        return {"loss": loss.detach()}
