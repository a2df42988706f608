"""Training of the affinity networks with the harness loop (:func:`emsrbench.train.fit`).

What differs from super-resolution training is only what goes into the loop:

* :class:`AffinitySampler` draws (raw block, target) pairs from HR training volumes with
  labels: the target is the affinities of the labels with borders widened by one pixel
  (:func:`.affinities.affinities_from_labels`), stacked with their class-balancing weights
  (:func:`.affinities.class_balance_weights`) as 6 channels;
* augmentation: flips along z, y, x, a rotation by k * 90 degrees in xy (applied to the labels
  before the affinities are made, so the affinity directions stay right) and intensity
  (contrast, brightness, gamma) on the raw;
* :class:`WeightedMSEObjective`: class-balanced weighted MSE, Adam, the settings' schedule.

Checkpoints, resume (replaying the same batches), SIGTERM handling, seeding and the model
file come from :func:`~emsrbench.train.fit` unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from ..errors import EmsrError
from ..io import LABELS_KEY, RAW_KEY, read_dataset
from ..train import AdamObjective, TrainJob, TrainSettings, fit
from ..train.objectives import refuse_objective_setting
from . import networks
from .affinities import affinities_from_labels, class_balance_weights, widen_borders


class AffinitySampler:
    """Random (raw input block, affinity target + weights) pairs from labelled volumes.

    Volumes smaller than the output block are padded (raw by reflection, labels by 0) and the
    padded voxels carry weight 0, so tiny test volumes train too.
    """

    def __init__(self, files: list[str], in_shape, out_shape, labels_key: str = LABELS_KEY):
        self.in_shape = tuple(int(v) for v in in_shape)
        self.out_shape = tuple(int(v) for v in out_shape)
        self.context = tuple((i - o) // 2 for i, o in zip(self.in_shape, self.out_shape))
        self.square = self.in_shape[1] == self.in_shape[2] and self.out_shape[1] == self.out_shape[2]
        self.pieces = []
        for f in files:
            raw, _ = read_dataset(f, RAW_KEY, dtype=np.uint8, ndim=3)
            try:
                labels, _ = read_dataset(f, labels_key, ndim=3)
            except EmsrError as err:
                raise EmsrError(f"segmentation training needs labels: {err}") from None
            if labels.dtype.kind not in "ui":
                raise EmsrError(f"{f}:{labels_key}: labels must be integers, got {labels.dtype}")
            if labels.shape != raw.shape:
                raise EmsrError(f"{f}:{labels_key}: shape {labels.shape} differs from {RAW_KEY} {raw.shape}")
            extra = [max(0, o - s) for o, s in zip(self.out_shape, raw.shape)]
            raw_p = np.pad(raw, [(c, c + e) for c, e in zip(self.context, extra)], mode="reflect")
            # One voxel of label context on each side: the affinity of a block's first voxel
            # needs its predecessor, and widening needs the neighbours.
            widths = [(1, 1 + e) for e in extra]
            lab_p = np.pad(labels, widths)
            valid = np.pad(np.ones(raw.shape, np.uint8), widths)
            self.pieces.append((raw_p, lab_p, valid, tuple(s + e for s, e in zip(raw.shape, extra))))
        if not self.pieces:
            raise EmsrError("segmentation training: no training volumes given")
        sizes = np.array([np.prod(p[3]) for p in self.pieces], dtype=float)
        self.weights = sizes / sizes.sum()

    def sample(self, rng: np.random.Generator, augment: bool) -> tuple[np.ndarray, np.ndarray]:
        raw_p, lab_p, valid, shape = self.pieces[rng.choice(len(self.pieces), p=self.weights)]
        o = [int(rng.integers(s - b + 1)) for s, b in zip(shape, self.out_shape)]
        x = raw_p[tuple(slice(a, a + i) for a, i in zip(o, self.in_shape))]
        box = tuple(slice(a, a + b + 2) for a, b in zip(o, self.out_shape))
        lab, m = lab_p[box], valid[box]
        x = x.astype(np.float32) / 255.0
        if augment:
            # Every crop is centred on the output block, so flips and xy rotations of the three
            # arrays stay aligned.
            for axis in range(3):
                if rng.integers(2):
                    x, lab, m = (np.flip(a, axis) for a in (x, lab, m))
            k = int(rng.integers(4)) if self.square else 2 * int(rng.integers(2))
            if k:
                x, lab, m = (np.rot90(a, k, axes=(1, 2)) for a in (x, lab, m))
            contrast, brightness = rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1)
            gamma = 2.0 ** rng.uniform(-0.5, 0.5)
            x = np.clip((x - 0.5) * contrast + 0.5 + brightness, 0.0, 1.0) ** gamma
        lab = widen_borders(np.ascontiguousarray(lab), 1)
        inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
        aff = affinities_from_labels(lab, widen=False)[inner]
        mask = affinities_from_labels(np.ascontiguousarray(m), widen=False)[inner]
        weight = class_balance_weights(aff, mask)
        return np.ascontiguousarray(x, dtype=np.float32), np.concatenate([aff, weight])

    def batch(self, rng: np.random.Generator, batch: int, patch: int = 0, augment: bool = True):
        """``patch`` is the SR sampler's argument: here the block shapes are fixed."""
        xs, ts = zip(*(self.sample(rng, augment) for _ in range(batch)))
        return torch.from_numpy(np.stack(xs)[:, None]), torch.from_numpy(np.stack(ts))


class WeightedMSEObjective(AdamObjective):
    """Class-balanced weighted MSE on sigmoid affinities; Adam with the settings' schedule."""

    def setup(self, job, model, settings, device):
        refuse_objective_setting(settings, job.method.name, "is not used by the affinity networks")
        super().setup(job, model, settings, device)

    def step(self, x, target, step):
        from .. import device as devices

        with devices.autocast(self.device):
            pred = self.model(x)
        aff, weight = target[:, :3], target[:, 3:]
        if pred.shape != aff.shape:
            raise EmsrError(
                f"{self.job.method.model_py}: the network maps {tuple(x.shape)} to {tuple(pred.shape)}, "
                f"expected {tuple(aff.shape)}"
            )
        loss = (weight * (pred.float() - aff) ** 2).mean()
        self.update(loss, self.opt, self.sched, self.model.parameters(), step)
        return {"loss": loss.detach()}


def train_segmenter(
    name: str,
    preset: str,
    train_files: list[str],
    out_path: str | Path,
    ckpt_dir: str | Path,
    override: dict | None = None,
    threads: int | None = None,
    max_steps: int | None = None,
    labels_key: str = LABELS_KEY,
    identity=None,
) -> Path | None:
    """Train network ``name`` with its ``preset`` on HR volumes with labels; write ``out_path``.

    ``override``: trainer settings applied after the preset's (``segmentation.train``).
    ``max_steps``: stop after a checkpoint at that step (tests simulate a kill with it).
    ``identity``: the planned job's fingerprint (:meth:`emsrbench.plan.Plan.segmenter_identity`),
    stored in the model file for the segment jobs to check.
    """
    pre = networks.preset(name, preset)
    settings = TrainSettings.merged(pre["train"], override or {}, source=f"segmentation {name} train settings")
    torch.manual_seed(settings.seed)
    model = networks.build(name, pre["model"])
    in_shape, out_shape = networks.block_shapes(name, model, pre["block"])
    sampler = AffinitySampler(train_files, in_shape, out_shape, labels_key=labels_key)
    job = TrainJob(
        method=networks.segmenter(name),
        scale=1,
        preset=preset,
        model_params=pre["model"],
        settings=settings,
        train_files=list(train_files),
        out_path=Path(out_path),
        ckpt_dir=Path(ckpt_dir),
        threads=threads,
        identity=identity,
    )
    meta = {"network": name, "block": list(pre["block"]), "in_shape": list(in_shape), "out_shape": list(out_shape)}
    print(f"segmentation: training {name} ({preset}), blocks {in_shape} -> {out_shape}", file=sys.stderr)
    return fit(
        job,
        max_steps,
        objective=WeightedMSEObjective(),
        model=model,
        sampler=sampler,
        meta=meta,
        stage="affinities",
        shaped_by={"network": meta, "labels_key": labels_key},
    )
