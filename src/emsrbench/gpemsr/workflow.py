"""GPEMSR's three stages as workflow jobs (``workflow/rules/gpemsr.smk``).

Stage I is trained once per stage I setting (not per scale: it sees HR patches only), stage II
once per scale and indexer setting, stage III once per scale and variant.  Stage files are
named by :func:`~.config.stage_key` of the settings they depend on, so the ablation variants
that leave stages I and II alone (MPF without mask, without POD, without 3DA) reuse the full
model's, while the attention ablations get their own; "without MPF" needs neither.

Paths (``<results>/models/<method>/``): ``stage1-<key>.pt``, ``x<scale>/stage2-<key>.pt``,
then the model inference reads, ``x<scale>/model.pt`` (the method's own row) or
``<variant>/x<scale>/model.pt`` (an ablation row).  Each stage checkpoints under
``checkpoints/<stage>/`` beside its file and resumes from a checkpoint of the same fingerprint.

A method whose preset has released weights (``method_presets: {gpemsr: released}``) trains
nothing: rule ``gpemsr_released`` writes its ``x<scale>/model.pt`` from the study's stage III
file (:mod:`.install`), and it has no stage files and no ablation variants.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import EmsrError
from ..fingerprint import Fingerprint, planned_job
from .config import GPEMSRConfig, make_config, stage_key


def config(model_params: dict, scale: int | None = None) -> GPEMSRConfig:
    params = dict(model_params)
    return make_config(params.pop("preset", "paper"), params.pop("variant", "full"), scale, **params)


class StagePlan:
    """Which stage files every (method, scale, variant) of a :class:`~emsrbench.plan.Plan`
    needs, for the methods trained by ``gpemsr.smk``."""

    RULES = "gpemsr"

    def __init__(self, plan):
        self.plan = plan
        # trained through the three stages; those on released weights are installed instead
        self.methods = [m for m in plan.staged(self.RULES) if not plan.is_released(m)]
        self.released = [m for m in plan.staged(self.RULES) if plan.is_released(m)]
        self.stage1: dict[tuple[str, str], str] = {}  # (method, key) -> a variant that has it
        self.stage2: dict[tuple[str, str, int], str] = {}
        for m in self.methods:
            for v in plan.method(m).variants or ("full",):
                for s in plan.scales:
                    cfg = self.config(m, s, v)
                    if cfg.mpf:
                        self.stage1.setdefault((m, stage_key(cfg, "vqgan")), v)
                        self.stage2.setdefault((m, stage_key(cfg, "indexer"), int(s)), v)

    def config(self, method: str, scale, variant: str) -> GPEMSRConfig:
        return config(self.plan.preset_of(method, int(scale), variant)["model"], int(scale))

    def own_variant(self, method: str) -> str:
        return (self.plan.method(method).variants or ("full",))[0]

    # -- files ------------------------------------------------------------------------
    def stage1_file(self, method: str, key: str) -> str:
        return str(self.plan.results / "models" / method / f"stage1-{key}.pt")

    def stage2_file(self, method: str, scale, key: str) -> str:
        return str(self.plan.results / "models" / method / f"x{scale}" / f"stage2-{key}.pt")

    def model_file(self, method: str, scale, variant: str) -> str:
        if variant == self.own_variant(method):
            return self.plan.model_file(method, scale)
        return self.plan.variant_model_file(method, variant, scale)

    def prior_files(self, method: str, scale, variant: str) -> dict[str, str]:
        """Stage I and II files the stage III model of ``variant`` loads ({} without MPF)."""
        cfg = self.config(method, scale, variant)
        if not cfg.mpf:
            return {}
        return {
            "stage1": self.stage1_file(method, stage_key(cfg, "vqgan")),
            "stage2": self.stage2_file(method, scale, stage_key(cfg, "indexer")),
        }

    def variant_of_stage1(self, method: str, key: str) -> str:
        try:
            return self.stage1[(method, key)]
        except KeyError:
            raise EmsrError(f"gpemsr: no variant of '{method}' has stage I settings {key} in this config") from None

    def variant_of_stage2(self, method: str, scale, key: str) -> str:
        try:
            return self.stage2[(method, key, int(scale))]
        except KeyError:
            raise EmsrError(
                f"gpemsr: no variant of '{method}' has x{scale} stage II settings {key} in this config"
            ) from None

    def checkpoints(self, folder: str, stage: str) -> str:
        """``<folder>/checkpoints/<stage>``: one checkpoint folder per stage file. A rerun after
        a change of data, settings or upstream stage resumes nothing from it: the trainer
        checks the checkpoint's fingerprint (:func:`emsrbench.train.fit`)."""
        return str(Path(folder) / "checkpoints" / stage)

    def released_params(self, methods_dir: str) -> dict:
        """Params of a ``gpemsr_released`` job (functions of its wildcards): the released
        file's state (its sha256) makes a new or changed file reinstall the model."""
        plan = self.plan
        return dict(
            stage="released",
            scale=lambda w: int(w.scale),
            preset=lambda w: plan.preset_name(w.method),
            methods_dir=methods_dir,
            model=lambda w: plan.preset_of(w.method, int(w.scale))["model"],
            entry=lambda w: plan.released_entry(w.method, w.scale),
            pretrained_dir=plan.pretrained_dir,
            pretrained=lambda w: plan.pretrained_state([plan.released_entry(w.method, w.scale)]),
        )

    # -- what the rules of gpemsr.smk ask ----------------------------------------------
    def job_variant(self, stage: str, w) -> str:
        """The variant whose settings a stage job of wildcards ``w`` trains with: stage I and
        II jobs take the first variant that has their key."""
        if stage == "vqgan":
            return self.variant_of_stage1(w.method, w.key)
        if stage == "indexer":
            return self.variant_of_stage2(w.method, w.scale, w.key)
        return getattr(w, "variant", self.own_variant(w.method))

    def job_scale(self, stage: str, w) -> int:
        """Stage I runs at the smallest scale (it reads HR sections only)."""
        return self.stage1_scale() if stage == "vqgan" else int(w.scale)

    def rule_params(self, stage: str, methods_dir: str) -> dict:
        """model / settings / preset / pretrained params of a stage job (functions of its
        wildcards); the pretrained state makes a new or changed weight file rerun the job."""
        plan = self.plan

        def variant(w):
            return self.job_variant(stage, w)

        def scale(w):
            return self.job_scale(stage, w)

        return dict(
            stage=stage,
            scale=scale,
            preset=lambda w: plan.preset_name(w.method),
            methods_dir=methods_dir,
            model=lambda w: plan.preset_of(w.method, scale(w), variant(w))["model"],
            settings=lambda w: plan.train_layers(w.method, scale(w)),
            pretrained_dir=plan.pretrained_dir,
            pretrained=lambda w: plan.pretrained_state(self.pretrained_names(stage, w.method, scale(w), variant(w))),
        )

    def stage_inputs(self, stage: str, method: str, scale, variant: str) -> dict:
        """Input files of a stage job, by role (the rules' inputs and the identities' files)."""
        if stage == "vqgan":
            return {"train": self.plan.degraded("train", self.stage1_scale())}
        if stage == "indexer":
            return {
                "train": self.plan.degraded("train", scale),
                "stage1": self.prior_files(method, scale, variant)["stage1"],
            }
        return dict(
            train=self.plan.degraded("train", scale),
            val=self.plan.degraded("val", scale),
            **self.prior_files(method, scale, variant),
        )

    def stage3_input(self, w) -> dict:
        """Inputs of a stage III job: training/validation volumes and its prior's stage files."""
        return self.stage_inputs("fusion", w.method, w.scale, self.job_variant("fusion", w))

    def pretrained_names(self, stage: str, method: str, scale, variant: str) -> list[str]:
        """Registry entries a stage job reads: stage III's MPF mask VGG19 (and the contextual
        loss through it) and POD's SPyNet, where the variant has them; stages I and II none."""
        if stage != "fusion":
            return []
        cfg = self.config(method, scale, variant)
        names = (["vgg19"] if cfg.mpf and cfg.mpf_mask else []) + (["spynet"] if cfg.pod else [])
        return [n for n in names if n in self.plan.pretrained_names(method)]

    def identity(self, stage: str, method: str, scale, variant: str) -> Fingerprint:
        """The planned stage job (:func:`emsrbench.fingerprint.planned_job`): what its file
        must be made from; ``scale`` is the job's (stage I: :meth:`stage1_scale`)."""
        scale = self.stage1_scale() if stage == "vqgan" else int(scale)
        return planned_job(
            f"gpemsr_{stage}",
            method=method,
            variant=variant,
            scale=scale,
            preset=self.plan.preset_name(method),
            model=self.plan.preset_of(method, scale, variant)["model"],
            train=self.plan.train_layers(method, scale),
            inputs=self.stage_inputs(stage, method, scale, variant),
            pretrained=self.plan.pretrained_state(self.pretrained_names(stage, method, scale, variant)),
        )

    def stage1_scale(self) -> int:
        """The scale whose degraded training files stage I reads the HR sections of (the
        smallest: the least cropped; stage I itself does not depend on the scale)."""
        return min(self.plan.scales)

    # -- stage I on its own (supplement Table 2): `gpemsr_stage1_evaluate` -------------
    def prior_variants(self, method: str) -> list[str]:
        """The variants that own a stage I model (the first of those sharing its settings):
        the model's own and the attention ablations."""
        owners = {v for (m, _), v in self.stage1.items() if m == method}
        return [v for v in (self.plan.method(method).variants or ("full",)) if v in owners]

    def prior_metrics_file(self, method: str, variant: str) -> str:
        return str(self.plan.results / "metrics" / method / variant / "stage1.csv")

    def prior_metrics(self) -> list[str]:
        """Stage I reconstruction rows of every stage I model (part of `snakemake ablations`)."""
        return [
            self.prior_metrics_file(m, v)
            for m in self.methods
            if self.plan.method(m).variants
            for v in self.prior_variants(m)
        ]

    def ablation_inputs(self) -> list[str]:
        """The rows of `snakemake ablations`: every method with variants, its variants and
        stage I models; a one-line error when no planned method has variants."""
        released = [m for m in self.released if self.plan.method(m).variants]
        if released:
            m = released[0]
            raise EmsrError(
                f"ablations: '{m}' runs preset '{self.plan.preset_name(m)}' (the study's released weights), "
                f"which has no ablation variants; set method_presets.{m} to paper or quick to train them"
            )
        files = self.plan.ablation_metrics() + self.prior_metrics()
        if not files:
            raise EmsrError(
                f"ablations: no method of this run has variants (methods: {', '.join(self.plan.methods)}); "
                "add one whose method.yaml lists `variants:` (gpemsr) to `methods` in the config"
            )
        return files

    def prior_model(self, method: str, variant: str) -> str:
        files = self.prior_files(method, self.stage1_scale(), variant)
        if not files:
            raise EmsrError(f"gpemsr: variant '{variant}' of '{method}' has no stage I model")
        return files["stage1"]

    def all_stage_files(self) -> list[str]:
        return [self.stage1_file(m, k) for m, k in self.stage1] + [self.stage2_file(m, s, k) for m, k, s in self.stage2]


def run_stage(smk, plan) -> None:
    """The body of one stage job (``plan``: the job's :class:`~emsrbench.plan.Plan`):
    ``smk.params.stage`` is "vqgan", "indexer", "fusion" or "reconstruct" (stage I evaluation)."""
    from ..train import TrainJob, TrainSettings
    from . import training

    method = plan.method(smk.wildcards.method)
    stage = smk.params.stage
    if stage == "reconstruct":
        evaluate_prior(smk, plan, method)
        return
    if stage == "released":
        from .install import install_job

        install_job(smk, plan)
        return
    scale = int(smk.params.scale)
    stages = StagePlan(plan)
    variant = stages.job_variant(stage, smk.wildcards)
    source = f"{method.name} {stage} train settings"
    job = TrainJob(
        method=method,
        scale=scale,
        preset=smk.params.preset,
        model_params=dict(smk.params.model),
        settings=TrainSettings.merged(*smk.params.settings, source=source),
        train_files=list(smk.input.train),
        val_files=list(getattr(smk.input, "val", [])),
        out_path=Path(smk.output[0]),
        ckpt_dir=Path(smk.params.ckpt_dir),
        threads=smk.threads,
        pretrained=plan.pretrained(
            stages.pretrained_names(stage, method.name, scale, variant),
            who=f"gpemsr {stage} {method.name} x{scale} {variant}",
        ),
        identity=stages.identity(stage, method.name, scale, variant),
    )
    print(
        f"gpemsr stage {stage}: {method.name} x{scale} variant {job.model_params.get('variant', 'full')}",
        file=sys.stderr,
    )
    if stage == "vqgan":
        training.train_vqgan(job, job.out_path, job.ckpt_dir)
    elif stage == "indexer":
        training.train_indexer(job, Path(smk.input.stage1), job.out_path, job.ckpt_dir)
    elif stage == "fusion":
        prior = [Path(p) for p in (getattr(smk.input, "stage1", None), getattr(smk.input, "stage2", None)) if p]
        # the model file's training time covers every stage it depends on (a stage I model
        # shared by both scales counts in each)
        seconds = sum(float(torch.load(p, map_location="cpu", weights_only=True)["train_seconds"]) for p in prior)
        training.train_fusion(
            job,
            prior[0] if prior else None,
            prior[1] if prior else None,
            job.out_path,
            job.ckpt_dir,
            prior_seconds=seconds,
        )
    else:
        raise EmsrError(f"gpemsr: unknown stage '{stage}' (vqgan, indexer, fusion)")


def evaluate_prior(smk, plan, method) -> None:
    """The body of a ``gpemsr_stage1_evaluate`` job: the stage I model of
    ``smk.wildcards.variant`` reconstructs the HR test sections; tidy rows per scale."""
    from .. import device as devices
    from ..evaluate import write_rows
    from .reconstruct import prior_rows

    devices.set_threads(smk.threads)
    variant = smk.wildcards.variant
    df = prior_rows(
        config(dict(smk.params.model)),
        smk.input.model,
        smk.input.hr,
        method=method,
        preset=smk.params.preset,
        variant=variant,
        scales=list(smk.params.scales),
        pretrained=plan.pretrained(["alexnet"], who="stage I LPIPS") if smk.params.lpips else None,
        device=devices.pick_device(),
    )
    print(df[["metric", "value", "note"]].drop_duplicates("metric").to_string(index=False), file=sys.stderr)
    write_rows(df, smk.output[0])
