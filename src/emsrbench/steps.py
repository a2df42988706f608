"""The bodies of the workflow's scripts: each takes Snakemake's ``snakemake`` object.

``workflow/scripts/<step>.py`` is one line calling :func:`run`, which sends stderr to the
rule's log and turns an :class:`EmsrError` into a one-line message and exit status 1. A failed
job leaves a record under ``<results>/failed/`` (:mod:`emsrbench.failures`) that the report
shows; the job's next success removes it.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from . import gpu_pool
from .errors import EmsrError
from .pretrained import Pretrained

if TYPE_CHECKING:  # the steps import their modules when run: a job loads only what it uses
    from .segment.stage import RowIdentity


@lru_cache(maxsize=1)
def job_plan(smk):
    """The run plan of this job, built once from the config Snakemake hands the job (a job
    runs in its own process, so the Snakefile's plan is not at hand)."""
    from .plan import Plan

    return Plan(smk.config, methods_dir=smk.params.methods_dir)


def phantom(smk) -> None:
    from . import phantom as ph

    spec = smk.params.spec
    ph.write(
        smk.output[0],
        tuple(spec["shape"]),
        seed=int(spec.get("seed", 0)),
        resolution=tuple(float(r) for r in smk.params.resolution),
    )


def download_cremi(smk) -> None:
    from .download import download

    spec = smk.params.spec
    download(spec["url"], smk.output[0], spec["sha256"], verify_tls=smk.params.verify_tls)


def degrade(smk) -> None:
    from .degrade import Degradation, degrade_file

    piece = smk.params.piece
    degrade_file(
        smk.input[0],
        smk.output[0],
        int(smk.wildcards.scale),
        Degradation.from_config(smk.params.degradation),
        z=piece.z,
        center_crop=smk.params.center_crop,
        raw_key=smk.params.raw_key,
        labels_key=smk.params.labels_key,
        min_yx=int(smk.params.max_scale),
        resolution=smk.params.resolution,
    )


def train(smk) -> None:
    from .train import TrainJob, TrainSettings
    from .train import run as run_training

    plan = job_plan(smk)
    method = plan.method(smk.wildcards.method)
    job = TrainJob(
        method=method,
        scale=int(smk.wildcards.scale),
        preset=smk.params.preset,
        model_params=dict(smk.params.model),
        settings=TrainSettings.merged(*smk.params.settings, source=f"{method.name} train settings"),
        train_files=list(smk.input.train),
        val_files=list(smk.input.val),
        out_path=Path(smk.output[0]),
        ckpt_dir=Path(smk.params.ckpt_dir),
        threads=smk.threads,
        pretrained=plan.pretrained(plan.pretrained_names(method.name), who=f"{method.name} training"),
        identity=plan.training_identity(method.name, int(smk.wildcards.scale)),
    )
    run_training(job)


def fetch_weight(smk) -> None:
    pretrained = Pretrained(smk.params.pretrained_dir)
    name = next(n for n, w in pretrained.entries.items() if w.file == smk.wildcards.file)
    pretrained.fetch(name)


def infer(smk) -> None:
    from .infer import InferSettings, infer_file

    plan = job_plan(smk)
    method = plan.method(smk.wildcards.method)
    scale = int(smk.wildcards.scale)
    settings = InferSettings.merged(*smk.params.settings, source=f"{method.name} inference settings")
    # an ablation variant's model (workflow/rules/gpemsr.smk) was planned for that variant
    planned = (
        plan.training_identity(method.name, scale, getattr(smk.wildcards, "variant", "")) if method.trains else None
    )
    stats = infer_file(
        method,
        scale,
        dict(smk.params.model),
        settings,
        smk.input.lr,
        smk.output[0],
        model_file=smk.input.model or None,
        threads=smk.threads,
        planned=planned,
    )
    print(stats, file=sys.stderr)


def evaluate(smk) -> None:
    from .evaluate import evaluate as score
    from .evaluate import write_rows

    plan = job_plan(smk)
    method = plan.method(smk.wildcards.method)
    lpips = plan.pretrained(plan.lpips_pretrained(), who="LPIPS") if smk.params.lpips else None
    # an ablation variant's rows (workflow/rules/gpemsr.smk) carry its name
    variant = getattr(smk.wildcards, "variant", "")
    df = score(
        method,
        int(smk.wildcards.scale),
        smk.params.preset,
        smk.input.sr,
        smk.input.hr,
        lpips,
        variant=variant,
        intervals=_intervals(smk),
        sidecar_path=smk.output.get("bootstrap"),
    )
    write_rows(df, smk.output[0])


def _intervals(smk):
    """The rule's ``intervals`` param (config metrics.intervals) as settings; None when disabled."""
    from .stats.bootstrap import BootstrapSettings

    intervals = dict(smk.params.get("intervals") or {})
    return BootstrapSettings.merged(intervals, source="config metrics.intervals") if intervals else None


def leaderboard(smk) -> None:
    from .leaderboard import write

    # rule leaderboard names its inputs (metrics, bootstrap sidecars); the ablation leaderboard does not
    metrics = smk.input.get("metrics")
    write(
        list(smk.input if metrics is None else metrics),
        smk.output.csv,
        smk.output.md,
        smk.output.tidy,
        bootstrap=list(smk.input.get("bootstrap") or []),
        own_variant=smk.params.get("own_variant", ""),
        published=smk.params.get("published"),
    )
    print(f"leaderboard: {Path(smk.output.md).resolve()}", file=sys.stderr)


def report(smk) -> None:
    from .report import build

    plan = job_plan(smk)
    path = build(
        plan,
        list(smk.input.metrics),
        smk.output.html,
        smk.output.figures,
        repo=smk.params.repo,
        workdir=Path.cwd(),
        bootstrap=list(smk.input.get("bootstrap") or []),
    )
    print(f"report: {Path(path).resolve()}", file=sys.stderr)


def train_segmenter(smk) -> None:
    from .segment.training import train_segmenter as train_network

    net = smk.wildcards.net
    train_network(
        net,
        smk.params.preset,
        list(smk.input.train),
        smk.output[0],
        smk.params.ckpt_dir,
        override=dict(smk.params.override),
        threads=smk.threads,
        identity=job_plan(smk).segmenter_identity(net),
    )


def segment(smk) -> None:
    """Rule ``segment``: segment one volume, then score the segmentation and (when its output is
    planned) its hallucination, in one process (the three always run together: one start-up
    and one read of the volumes instead of three)."""
    _segment_volume(smk)
    _score_segmentation(smk)
    if smk.output.get("hallucination"):
        _score_hallucination(smk)


def _segment_volume(smk) -> None:
    from .segment.stage import segment_volume

    net = smk.wildcards.net
    segment_volume(
        net,
        smk.params.preset,
        smk.input.model,
        smk.input.raw,
        smk.output.seg,
        thresholds=list(smk.params.thresholds),
        scoring=smk.params.scoring,
        inference=dict(smk.params.inference),
        threads=smk.threads,
        planned=job_plan(smk).segmenter_identity(net),
    )


def _segmentation_row(smk) -> RowIdentity:
    """The row identity of a segmentation score job: the HR reference or a planned method."""
    from .segment.stage import HR_DISPLAY, RowIdentity

    method = smk.wildcards.method
    preset = smk.params.run_preset
    if method == smk.params.hr:
        display, family = HR_DISPLAY, "reference"
    else:
        m = job_plan(smk).method(method)
        display, family, preset = m.display_name, m.family, job_plan(smk).preset_name(method)  # method_presets
    return RowIdentity(
        net=smk.wildcards.net,
        method=method,
        display_name=display,
        family=family,
        preset=preset,
        scale=int(smk.wildcards.scale),
    )


def _score_segmentation(smk) -> None:
    from .evaluate import write_rows
    from .segment.stage import score_volume

    rows, sweep = score_volume(
        smk.output.seg,
        smk.input.gt,
        row=_segmentation_row(smk),
        border_nm=smk.params.border_nm,
        gt_labels=smk.params.gt_labels,
        threads=smk.threads,
        intervals=_intervals(smk),
        sidecar_path=smk.output.bootstrap,
    )
    write_rows(rows, smk.output.rows)
    write_rows(sweep, smk.output.sweep)


def _score_hallucination(smk) -> None:
    from .evaluate import write_rows
    from .segment.stage import score_hallucination as score

    # HR's own job compares with itself (no hr_seg input): HR has boundary scores, no orphans
    hr_seg = smk.input.hr_seg if smk.wildcards.method != smk.params.hr else smk.output.seg
    rows = score(
        smk.output.seg,
        hr_seg,
        smk.input.gt,
        row=_segmentation_row(smk),
        tolerance_nm=smk.params.tolerance_nm,
        iou=smk.params.iou,
        hr_method=smk.params.hr,
    )
    write_rows(rows, smk.output.hallucination)


def gpemsr_stage(smk) -> None:
    from .gpemsr.workflow import run_stage

    run_stage(smk, job_plan(smk))


# Every step a workflow script may name: workflow/scripts/<name>.py calls run(snakemake, "<name>").
STEPS = {
    f.__name__: f
    for f in (
        phantom,
        download_cremi,
        fetch_weight,
        degrade,
        train,
        infer,
        evaluate,
        leaderboard,
        report,
        train_segmenter,
        segment,
        gpemsr_stage,
    )
}


def _job_record(smk, step: str):
    """(results dir, rule, wildcards) naming this job's failure record; None outside a workflow."""
    rule = getattr(smk, "rule", None) or step
    config = getattr(smk, "config", None) or {}
    try:
        wildcards = {k: str(v) for k, v in smk.wildcards.items()}
    except AttributeError:
        wildcards = {}
    return config.get("results", "results"), rule, wildcards


def _record_failure(smk, step: str, reason: str) -> None:
    from . import failures

    results, rule, wildcards = _job_record(smk, step)
    try:
        failures.write(results, rule, wildcards, reason, log=str(smk.log[0]) if smk.log else "")
    except OSError as err:  # the job's own error matters more than its record
        print(f"emsrbench: could not write the failure record: {err}", file=sys.stderr)


def _clear_failure(smk, step: str) -> None:
    from . import failures

    results, rule, wildcards = _job_record(smk, step)
    try:
        failures.clear(results, rule, wildcards)
    except OSError as err:
        print(f"emsrbench: could not remove the old failure record: {err}", file=sys.stderr)


def run(smk, step: str) -> None:
    log = open(smk.log[0], "a") if smk.log else None
    if log:
        sys.stderr = log
    job = os.environ.get("SLURM_JOB_ID")
    print(f"emsrbench {step} on {socket.gethostname()}" + (f", SLURM job {job}" if job else ""), file=sys.stderr)
    try:
        # a local run with a GPU pool (make bench GPUS=N): this job's own cards, or none
        gpu_pool.assign(int(getattr(getattr(smk, "resources", None), "gpu", 0) or 0))
        STEPS[step](smk)
    except EmsrError as err:
        message = f"emsrbench error in {step}: {err}"
        print(message, file=sys.stderr)
        if log:
            print(message, file=sys.__stderr__)
        _record_failure(smk, step, str(err))
        sys.exit(1)
    except Exception as err:
        traceback.print_exc()
        if log:
            traceback.print_exc(file=sys.__stderr__)
        _record_failure(smk, step, f"{type(err).__name__}: {err}")
        raise SystemExit(1)
    else:
        _clear_failure(smk, step)
    finally:
        if log:
            sys.stderr.flush()
