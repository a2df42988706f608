import os
import re
import sys
from pathlib import Path

# Jobs share cores (--cores 2 runs two 1-thread jobs, SLURM packs nodes): OpenMP's default
# spin-waiting then burns the cores the other job needs, and small models ran 10x slower in a
# measurement. Passive waiting costs little on dedicated cores. Jobs inherit it; users override it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The library lives in src/; it is pip-installed in .venv, but a bare checkout works too.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from emsrbench.config import check_config, take_data_from_user
from emsrbench.errors import EmsrError
from emsrbench.gpemsr.workflow import StagePlan
from emsrbench.plan import Plan
from emsrbench.pretrained import Pretrained

SCHEMA = Path(workflow.basedir) / "config" / "schema" / "config.schema.yaml"
# `data` comes from one layer: a --configfile / --config that sets it replaces the default's
# whole (no phantom split leaking into the user's data); every other section deep-merges.
take_data_from_user(config, workflow.config_settings.overwrite_config)
try:
    check_config(config, SCHEMA)
except EmsrError as err:
    raise WorkflowError(f"emsrbench: {err}") from None
validate(config, str(SCHEMA))  # fills in the schema's defaults
METHODS_DIR = str(Path(workflow.basedir) / "methods")
try:
    PLAN = Plan(config, methods_dir=METHODS_DIR)
except EmsrError as err:
    raise WorkflowError(f"emsrbench: {err}") from None

PRETRAINED = Pretrained(PLAN.pretrained_dir)
try:  # the stage files of the methods trained by gpemsr.smk (the report reads their stage I rows)
    GPEMSR = StagePlan(PLAN)
except EmsrError as err:
    raise WorkflowError(f"emsrbench: {err}") from None


def fetching_weights():
    """`snakemake fetch_weights` (or a weight file) on the command line: let it through the
    pretrained check. Snakemake reads this file before it sets its targets (dag_settings),
    so the command line is where they can be seen."""
    return any(a in ("fetch_weights", "fetch_weight") or a.startswith(f"{PLAN.pretrained_dir}/") for a in sys.argv[1:])


# The paper preset runs on the study's pretrained parts or not at all: stop here, in one line,
# rather than hours later with flagged numbers (unless `pretrained: {allow_missing: true}`).
if not fetching_weights():
    try:
        PLAN.check_pretrained_present()
    except EmsrError as err:
        raise WorkflowError(f"emsrbench: {err}") from None
RESULTS = str(PLAN.results)
METHODS = list(PLAN.methods)
# methods of the generic train rule; those with `stage_rules` train in their own rules
TRAINED = PLAN.harness_trained() or ["__none__"]
SCALES = [str(s) for s in PLAN.scales]


wildcard_constraints:
    method="|".join(METHODS),
    scale="|".join(SCALES),
    split="train|val|test",
    index=r"\d+",


def method_resource(stage, key):
    return lambda wildcards: PLAN.resources(wildcards.method, stage)[key]


# Threads of a job planned for `cpus` cores (method.yaml and segmentation `resources`). A
# cluster job gets its cpus: the submitting Snakemake (non-local executor) asks SLURM for them,
# and the Snakemake that runs the job inside its allocation (started by the job step in remote
# mode, itself a local executor with --cores all) evaluates the same threads. A local run
# (`make bench`, `snakemake --cores N`) shares its N cores between jobs: a job gets its cpus
# but at most N // 2 (at least 1), so two or more jobs always run side by side and no core
# idles through one job's start-up, data reading or single-threaded scoring. On a 2-core
# laptop that is one thread each: the quick models are too small to gain from more (issue
# #15: BSRN's quick training step took 8x the CPU time on 2 threads as on 1, on 2 shared
# cores); a 32-core workstation gives a job asking for 8 cpus its 8.
def job_threads(cpus):
    if workflow.non_local_exec or workflow.remote_exec:
        return int(cpus)
    return max(1, min(int(cpus), local_cores() // 2))


def local_cores():
    """The local run's --cores; 1 where there is none (`snakemake -n` without --cores)."""
    try:
        return int(workflow.cores)
    except WorkflowError:
        return 1


def method_threads(stage):
    return lambda wildcards: job_threads(PLAN.resources(wildcards.method, stage)["cpus"])


def hr_segmentation(wildcards):
    """Input hr_seg of the segment job: the same network's HR segmentation, whose segments
    the orphan score matches; HR's own job compares with the segmentation it has just written,
    and without hallucination scores there is none to read."""
    if not PLAN.hallucination_networks() or wildcards.method == PLAN.HR:
        return []
    return PLAN.segment_file(wildcards.net, PLAN.HR, wildcards.scale)


def method_env(wildcards):
    return str(Path(workflow.basedir) / PLAN.method(wildcards.method).env)


# Inputs of the report rule. As part of `snakemake` (rule all) the report waits for every row.
# Asked for by name (`snakemake report`) it is built from the rows that exist, so after a
# --keep-going run the page still builds; a failed job's row shows its reason from
# results/failed/*.json (written by emsrbench.steps.run).
def report_only_existing():
    targets = getattr(getattr(workflow, "dag_settings", None), "targets", None) or ()
    return any(t == "report" or str(t).endswith(PLAN.report_page()) for t in targets)


def report_inputs(wildcards):
    tables = PLAN.metric_tables()
    wanted = {
        "metrics": [p for _, _, p in tables],
        "sr": [PLAN.sr_file(m, s) for m in PLAN.methods for s in PLAN.scales],
        "test": [PLAN.test_file(s) for s in PLAN.scales],
        "bootstrap": PLAN.all_sidecars(),  # paired tie marks (emsrbench.stats.sidecar)
    }
    if report_only_existing():
        wanted = {k: [p for p in v if Path(p).exists()] for k, v in wanted.items()}
    # Ablation rows are opt-in (`snakemake ablations`): the page lays out those that have run.
    # (GPEMSR: also its stage I reconstruction rows, GPEMSR.prior_metrics() of gpemsr.smk)
    wanted["metrics"] += [p for p in PLAN.ablation_metrics() + GPEMSR.prior_metrics()
                          if p not in wanted["metrics"] and Path(p).exists()]
    return wanted
