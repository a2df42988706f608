"""The three GPEMSR training stages as functions of a harness :class:`~emsrbench.train.TrainJob`,
each reading the previous stages' model files and writing its own (one Snakemake rule each),
plus :func:`train`, all three in a row (the method contract's ``train(job)``).

``job.model_params`` are :func:`~.config.make_config`'s arguments (``preset``, ``variant``,
setting overrides).  ``job.settings.stages`` holds the per-stage train settings under the
names of :data:`STAGES`; each stage's ``objective`` mapping is its objective's keyword
arguments.  Stage I trains on HR patches only (:class:`HRSampler`; its ``patch_size`` counts
HR pixels, so the model does not depend on the scale), stage II on the pairs (the centre LR section), stage III on the
2N+1-section pairs.  Only stage III is validated (the harness validation is an SR PSNR).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

from ..errors import EmsrError
from ..pretrained import Pretrained
from ..train import TrainJob, fit
from .config import GPEMSRConfig, make_config
from .indexer import Indexer
from .model import GPEMSR, attach_pretrained
from .objectives import FusionObjective, IndexerObjective, VQGANObjective
from .stages import load_prior, load_vqgan, read_state
from .vqgan import VQGAN

STAGES = ("vqgan", "indexer", "fusion")  # names in train.stages


def config_of(job: TrainJob) -> GPEMSRConfig:
    params = dict(job.model_params)
    return make_config(params.pop("preset", "paper"), params.pop("variant", "full"), job.scale, **params)


def _settings(job: TrainJob, stage: str):
    return job.settings.stage(stage, source=f"{job.method.name} train")


def _objective(cls, job: TrainJob, stage: str, kwargs: dict, *args):
    try:
        return cls(*args, **kwargs)
    except TypeError as err:  # an unknown loss weight name in the preset
        raise EmsrError(f"{job.method.name} train: stages.{stage}.objective: {err}") from None


def _seeded(seed: int, cls, *args):
    """``cls(*args)`` initialised from ``seed``: a stage's initial weights are the same whether
    it runs in its own workflow job or after the previous stages in one ``train(job)``."""
    import torch

    torch.manual_seed(seed)
    return cls(*args)


def _meta(cfg: GPEMSRConfig, stage: str) -> dict:
    return {"gpemsr_stage": stage, "gpemsr_config": cfg.as_dict()}


class HRSampler:
    """Stage I's batches: random HR patches of ``patch`` HR pixels (flips and rotations), the
    same for every scale (one stage I model serves all), as ``(hr, hr)`` pairs for ``fit``."""

    def __init__(self, files: list[str]):
        from ..io import RAW_KEY, read_dataset

        if not files:
            raise EmsrError("gpemsr stage I: no training volumes given")
        self.volumes = [read_dataset(f, RAW_KEY, dtype=np.uint8, ndim=3)[0] for f in files]
        self.files = list(files)
        sizes = np.array([v.size for v in self.volumes], dtype=float)
        self.weights = sizes / sizes.sum()

    def batch(self, rng, batch: int, patch: int, augment: bool):
        import torch

        out = []
        for _ in range(batch):
            i = rng.choice(len(self.volumes), p=self.weights)
            vol = self.volumes[i]
            z, h, w = vol.shape
            if h < patch or w < patch:
                raise EmsrError(
                    f"{self.files[i]}: HR sections {h}x{w} are smaller than the stage I patch_size {patch} "
                    "(stage I patch_size is in HR pixels)"
                )
            k, y, x = rng.integers(z), rng.integers(h - patch + 1), rng.integers(w - patch + 1)
            p = vol[k, y : y + patch, x : x + patch]
            if augment:
                p = np.rot90(p, rng.integers(4))
                if rng.integers(2):
                    p = p[:, ::-1]
            out.append(np.ascontiguousarray(p)[None])
        hr = torch.from_numpy(np.stack(out)).float().div_(255.0)
        return hr, hr


def train_vqgan(job: TrainJob, out_path: Path, ckpt_dir: Path) -> Path:
    """Stage I: the VQGAN on HR patches of ``stages.vqgan.patch_size`` HR pixels (independent
    of ``job.scale``: the study trains one stage I model, on 512 px patches, for both scales)."""
    cfg = config_of(job)
    st = _settings(job, "vqgan")
    hr_only = dataclasses.replace(job, val_files=[])
    fit(
        hr_only,
        objective=_objective(VQGANObjective, job, "vqgan", st.objective),
        settings=st,
        ckpt_dir=ckpt_dir,
        out_path=out_path,
        model=_seeded(st.seed, VQGAN, cfg),
        stage="I vqgan",
        meta=_meta(cfg, "vqgan"),
        sampler=HRSampler(job.train_files),
        shaped_by={"gpemsr_config": cfg.as_dict()},
    )
    return Path(out_path)


def train_indexer(job: TrainJob, vqgan_path: Path, out_path: Path, ckpt_dir: Path) -> Path:
    """Stage II: the x``job.scale`` indexer against the frozen stage I encoder + codebook."""
    cfg = config_of(job)
    st = _settings(job, "indexer")
    vq = load_vqgan(cfg, read_state(vqgan_path), str(vqgan_path))
    no_val = dataclasses.replace(job, val_files=[])
    fit(
        no_val,
        objective=_objective(IndexerObjective, job, "indexer", st.objective, vq),
        settings=st,
        ckpt_dir=ckpt_dir,
        out_path=out_path,
        model=_seeded(st.seed, Indexer, cfg, job.scale),
        stage="II indexer",
        meta=_meta(cfg, "indexer"),
        shaped_by={"gpemsr_config": cfg.as_dict(), "stage1": Path(vqgan_path)},
    )
    return Path(out_path)


def build_fusion(job: TrainJob, vqgan_path: Path | None, indexer_path: Path | None) -> GPEMSR:
    """The stage III network with its frozen prior loaded and the pretrained parts attached
    (flags for missing ones go to ``job.flags``)."""
    cfg = config_of(job)
    model = _seeded(job.settings.seed, GPEMSR, cfg, job.scale)
    if cfg.mpf:
        load_prior(model, read_state(vqgan_path), read_state(indexer_path), str(vqgan_path), str(indexer_path))
    job.flags.extend(attach_pretrained(model, job.pretrained or Pretrained()))
    return model


def train_fusion(
    job: TrainJob,
    vqgan_path: Path | None,
    indexer_path: Path | None,
    out_path: Path | None = None,
    ckpt_dir: Path | None = None,
    prior_seconds: float = 0.0,
) -> Path:
    """Stage III: the multi-image fusion network (writes the model inference reads)."""
    cfg = config_of(job)
    st = _settings(job, "fusion")
    if st.objective.get("ref_weight") and not (cfg.mpf and cfg.mpf_mask):
        # the reference loss compares the output with the prior image through the mask's VGG:
        # the ablations without MPF or without the mask have neither, so train without it
        print(
            f"gpemsr stage III: variant without {'MPF' if not cfg.mpf else 'the MPF mask'}: no reference loss "
            f"(ref_weight {st.objective['ref_weight']} ignored)",
            file=sys.stderr,
        )
        st.objective = {k: v for k, v in st.objective.items() if k != "ref_weight"}
    model = build_fusion(job, vqgan_path, indexer_path)
    prior = {"stage1": Path(vqgan_path), "stage2": Path(indexer_path)} if cfg.mpf else {}
    fit(
        job,
        objective=_objective(FusionObjective, job, "fusion", st.objective),
        settings=st,
        ckpt_dir=ckpt_dir,
        out_path=out_path,
        model=model,
        stage="III fusion",
        meta=_meta(cfg, "fusion"),
        prior_seconds=prior_seconds,
        shaped_by={"gpemsr_config": cfg.as_dict(), **prior},
    )
    return Path(out_path or job.out_path)


def train(job: TrainJob) -> None:
    """All stages in one job; intermediate model files and checkpoints beside ``job.out_path``
    / in ``job.ckpt_dir``, so a rerun resumes in whichever stage it stopped (a stage file is
    kept only when its fingerprint is the rerun's: see :func:`emsrbench.train.fit`)."""
    import torch

    cfg = config_of(job)
    base = Path(job.out_path)
    ckpt = Path(job.ckpt_dir)
    vq_path = indexer_path = None
    seconds = 0.0
    if cfg.mpf:  # the "without MPF" ablation has no prior and skips stages I and II
        vq_path = base.with_name(base.stem + ".stage1" + base.suffix)
        indexer_path = base.with_name(base.stem + ".stage2" + base.suffix)
        train_vqgan(job, vq_path, ckpt / "stage1")
        train_indexer(job, vq_path, indexer_path, ckpt / "stage2")
        seconds = sum(float(torch.load(p, weights_only=True)["train_seconds"]) for p in (vq_path, indexer_path))
    train_fusion(job, vq_path, indexer_path, job.out_path, ckpt / "stage3", prior_seconds=seconds)
