"""Helpers for tests that run workflows on the local one-node SLURM cluster.

Usage from a test module (the fixture must be imported into the module namespace
so that pytest sees it)::

    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from slurm_helpers import slurm_cluster, run_snakemake_on_slurm  # noqa: F401

    @pytest.mark.slurm
    @pytest.mark.slow
    def test_pipeline_on_slurm(slurm_cluster, tmp_path):
        res = run_snakemake_on_slurm(tmp_path, ["--configfile", str(cfg)])
        assert res.returncode == 0, res.tail()

``slurm_cluster`` (session scope) runs ``tests/slurm/cluster.sh start`` once and
``stop`` at the end of the session (only if it started the cluster itself). Without
slurm-wlm/munge installed (or when not root) dependent tests are skipped, unless
``EMSR_REQUIRE_SLURM=1`` is set, which turns the skip into a failure (CI sets it).
``EMSR_SLURM_GPUS=N`` starts the cluster with N fake GPUs (GRES gpu:fake:N).

``run_snakemake_on_slurm`` runs, from the repo root (so that ``--profile slurm``
resolves to ./slurm)::

    python -m snakemake --cores 8 --profile slurm --profile tests/slurm/profile \
        --directory WORKDIR --max-threads <node CPUs> [--snakefile S] EXTRA_ARGS...

``tests/slurm/profile`` layers the test-cluster settings over the repo profile
(squeue status polling, fast status checks, small default-resources, retries 0, and
set-resources giving the ``train``/``infer`` rules gpu=0 and mem_mb=1000). The
GPU-less test node rejects any job that requests GPUs (sbatch fails at once).

The real pipeline reads ``configfile: config/config.yaml`` relative to --directory,
so pass an absolute config: ``run_snakemake_on_slurm(tmp, ["--configfile",
str(REPO_ROOT / "config" / "test.yaml")])`` (17 SLURM jobs, about 160 s here).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_SH = REPO_ROOT / "tests" / "slurm" / "cluster.sh"
REPO_PROFILE = "slurm"  # resolved by snakemake relative to the cwd (REPO_ROOT)
TEST_PROFILE = REPO_ROOT / "tests" / "slurm" / "profile"
TOY_SNAKEFILE = REPO_ROOT / "tests" / "slurm" / "toy" / "Snakefile"

SLURM_DIR = Path(os.environ.get("EMSR_SLURM_DIR", "/tmp/emsrbench-slurm"))
SLURM_CONF = SLURM_DIR / "etc" / "slurm.conf"
REQUIRED_TOOLS = ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "srun")


@dataclass
class SlurmCluster:
    conf: Path
    partition: str
    cpus: int
    gpus: int
    env: dict

    def squeue_states(self, job_ids: Iterable[str]) -> dict:
        """{job id: state} for the given ids (finished jobs stay 1 h: MinJobAge)."""
        ids = ",".join(str(i) for i in job_ids)
        out = subprocess.run(
            ["squeue", "--states=all", "-h", "-o", "%i|%T", "-j", ids],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        return dict(line.split("|", 1) for line in out.split() if "|" in line)


@dataclass
class SnakemakeRun:
    returncode: int
    output: str
    cmd: list
    log_file: Path
    seconds: float

    def tail(self, n: int = 80) -> str:
        lines = self.output.splitlines()[-n:]
        return f"$ {' '.join(map(str, self.cmd))}\n(exit {self.returncode})\n" + "\n".join(lines)


def slurm_env(base: Optional[dict] = None) -> dict:
    env = dict(os.environ if base is None else base)
    env["SLURM_CONF"] = str(SLURM_CONF)
    return env


def _skip_or_fail(reason: str):
    if os.environ.get("EMSR_REQUIRE_SLURM") == "1":
        pytest.fail(f"EMSR_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _cluster(cmd: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SH), cmd],
        cwd=REPO_ROOT,
        env=slurm_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _node_info(env: dict) -> tuple[int, int]:
    out = subprocess.run(
        ["sinfo", "-h", "-N", "-o", "%c|%G"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()[0]
    cpus, gres = out.split("|", 1)
    gpus = 0
    for item in gres.split(","):
        if item.startswith("gpu"):
            gpus += int(item.split(":")[-1].split("(")[0])
    return int(cpus), gpus


@pytest.fixture(scope="session")
def slurm_cluster():
    """Start the local SLURM cluster for the session; stop it afterwards."""
    missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
    if missing:
        _skip_or_fail(
            f"SLURM is not installed (missing {', '.join(missing)}); "
            "run .ci/slurm-deps.sh (apt-get install slurm-wlm munge)"
        )
    if os.geteuid() != 0:
        _skip_or_fail("the local SLURM test cluster needs root (tests/slurm/cluster.sh)")

    already_up = _cluster("status").returncode == 0
    started = _cluster("start")
    if started.returncode != 0:
        pytest.fail(
            "tests/slurm/cluster.sh start failed:\n" + started.stdout + started.stderr,
            pytrace=False,
        )
    env = slurm_env()
    cpus, gpus = _node_info(env)
    try:
        yield SlurmCluster(
            conf=SLURM_CONF,
            partition=os.environ.get("EMSR_SLURM_PARTITION", "main"),
            cpus=cpus,
            gpus=gpus,
            env=env,
        )
    finally:
        if not already_up:  # leave a cluster we did not start as we found it
            stopped = _cluster("stop")
            if stopped.returncode != 0:
                print("tests/slurm/cluster.sh stop failed:\n" + stopped.stdout + stopped.stderr)


def run_snakemake_on_slurm(
    workdir,
    extra_args: Sequence[str] = (),
    *,
    snakefile=None,
    cores: int = 8,
    max_threads: Optional[int] = None,
    profiles: Sequence = (REPO_PROFILE, TEST_PROFILE),
    timeout: float = 1200,
    env: Optional[dict] = None,
) -> SnakemakeRun:
    """Run snakemake with the SLURM executor from the repo root.

    workdir: --directory for the run (outputs, .snakemake/, slurm logs).
    snakefile: default None = the repo's own Snakefile (found from the repo root).
    max_threads: cap for rule threads; default = the test node's CPU count (a job
        asking for more CPUs than the node has is rejected by sbatch).
    The combined stdout/stderr is also written to WORKDIR/snakemake-slurm.log.
    On timeout snakemake gets SIGINT (it then scancels its jobs), then SIGKILL.
    """
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    run_env = slurm_env(env)
    if max_threads is None:
        max_threads = _node_info(run_env)[0]
    cmd = [sys.executable, "-m", "snakemake", "--cores", str(cores)]
    for p in profiles:
        cmd += ["--profile", str(p)]
    cmd += ["--directory", str(workdir), "--max-threads", str(max_threads)]
    if snakefile is not None:
        cmd += ["--snakefile", str(Path(snakefile).resolve())]
    cmd += [str(a) for a in extra_args]

    log_file = workdir / "snakemake-slurm.log"
    t0 = time.monotonic()
    with open(log_file, "w") as log:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO_ROOT,
            env=run_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # lets snakemake cancel its SLURM jobs
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            rc = -999
    output = log_file.read_text(errors="replace")
    if rc == -999:
        output += f"\n[run_snakemake_on_slurm] TIMEOUT after {timeout} s\n"
    return SnakemakeRun(rc, output, cmd, log_file, time.monotonic() - t0)
