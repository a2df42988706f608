"""SLURM executor tests.

- test_repo_profile_*: no cluster needed; check that `--profile slurm` (from the repo
  root) resolves to ./slurm/config.yaml and that the profile parses (dry run).
- test_toy_workflow_on_slurm: starts the local one-node cluster (tests/slurm/cluster.sh,
  via the session fixture in tests/slurm_helpers.py) and runs the 3-job toy workflow
  through snakemake-executor-plugin-slurm with the repo profile.

Run: pytest -m slurm tests/test_slurm.py   (root, slurm-wlm + munge installed;
EMSR_REQUIRE_SLURM=1 turns "not installed" skips into failures).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

# Fake GPUs on the test node so GPU requests from method.yaml can be scheduled (cluster.sh).
os.environ.setdefault("EMSR_SLURM_GPUS", "2")

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from slurm_helpers import (  # noqa: E402,F401  (slurm_cluster is a fixture)
    REPO_ROOT,
    TEST_PROFILE,
    TOY_SNAKEFILE,
    run_snakemake_on_slurm,
    slurm_cluster,
)


def test_repo_profile_resolves_from_repo_root(monkeypatch):
    from snakemake.cli import get_profile_dir

    monkeypatch.chdir(REPO_ROOT)
    profile_dir, config_file = get_profile_dir("slurm")
    assert Path(profile_dir).resolve() == REPO_ROOT / "slurm"
    assert Path(config_file).resolve() == REPO_ROOT / "slurm" / "config.yaml"


def test_repo_profile_dry_run(tmp_path):
    """The repo profile (+ test overlay) parses and yields the expected resources."""
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "--cores",
        "8",
        "--profile",
        "slurm",
        "--profile",
        str(TEST_PROFILE),
        "--snakefile",
        str(TOY_SNAKEFILE),
        "--directory",
        str(tmp_path),
        "--dry-run",
    ]
    res = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Using profiles slurm and" in out
    assert "slurm_partition=main" in out
    assert re.search(r"\bstamp\s+2\b", out) and re.search(r"\bgather\s+1\b", out), out


@pytest.mark.slurm
@pytest.mark.slow
def test_toy_workflow_on_slurm(slurm_cluster, tmp_path):
    res = run_snakemake_on_slurm(tmp_path, snakefile=TOY_SNAKEFILE, timeout=300)
    assert res.returncode == 0, res.tail()

    # every job wrote the SLURM job id it ran under
    stamps = {}
    for name in ("a", "b"):
        text = (tmp_path / "results" / f"stamp_{name}.txt").read_text().split()
        assert text[0] == f"stamp_{name}", text
        stamps[name] = text[1]
    gathered = (tmp_path / "results" / "gathered.txt").read_text().splitlines()
    assert gathered[:2] == [
        (tmp_path / "results" / "stamp_a.txt").read_text().strip(),
        (tmp_path / "results" / "stamp_b.txt").read_text().strip(),
    ]
    kind, gather_id = gathered[2].split()
    assert kind == "gather"

    job_ids = [stamps["a"], stamps["b"], gather_id]
    assert all(j.isdigit() for j in job_ids), job_ids
    assert len(set(job_ids)) == 3, job_ids
    # ... and SLURM agrees those jobs ran and completed
    states = slurm_cluster.squeue_states(job_ids)
    assert states == {j: "COMPLETED" for j in job_ids}, states
    # the plugin submitted them (its per-run log directory exists in the workdir)
    assert (tmp_path / ".snakemake" / "slurm_logs").is_dir()


@pytest.mark.slurm
@pytest.mark.slow
def test_pipeline_on_slurm_with_gpu_requests(slurm_cluster, tmp_path):
    """The tiny config through `--profile slurm`: every job runs as a SLURM job, and the rules
    whose method asks for a GPU get one allocated (the test node declares fake GPUs)."""
    assert slurm_cluster.gpus > 0, "start the test cluster with EMSR_SLURM_GPUS >= 1"
    # Replace the test overlay's set-resources (which zeroes GPUs) with memory caps only,
    # so the GPU requests come from method.yaml as on a real cluster.
    # Hallucination scoring is tested in test_pipeline; here its 12 jobs would only add SLURM
    # round trips (about 10 s each on the CI machine) to the longest test of the suite.
    overlay = tmp_path / "no-hallucination.yaml"
    overlay.write_text("segmentation:\n  hallucination:\n    enabled: false\n")
    res = run_snakemake_on_slurm(
        tmp_path,
        [
            "--configfile",
            str(REPO_ROOT / "config" / "test.yaml"),
            str(overlay),
            "--set-resources",
            "train:mem_mb=1000",
            "infer:mem_mb=1000",
            "train_segmenter:mem_mb=1000",
            "segment:mem_mb=1000",
        ],
        timeout=900,
    )
    assert res.returncode == 0, res.tail()
    results = tmp_path / "results"
    assert (results / "leaderboard.md").exists()
    job_of = {}
    for log in sorted((results / "logs").glob("*/*.log")):
        m = re.search(r"SLURM job (\d+)", log.read_text())
        assert m, f"{log} was not written by a SLURM job"
        job_of[f"{log.parent.name}/{log.stem}"] = m.group(1)
    assert {"train/rcan-x8", "train/rcan-x16", "infer/bicubic-x8", "infer/rcan-x16"} <= set(job_of)
    states = slurm_cluster.squeue_states(job_of.values())
    assert set(states.values()) == {"COMPLETED"}, states

    def gres(job_id):
        out = subprocess.run(
            ["scontrol", "show", "job", job_id], capture_output=True, text=True, env=slurm_cluster.env
        ).stdout
        return re.search(r"TresPerJob=\S*gpu:1\b", out) is not None

    assert gres(job_of["train/rcan-x8"]) and gres(job_of["infer/rcan-x16"])  # rcan: gpus 1 in method.yaml
    assert not gres(job_of["infer/bicubic-x8"])  # bicubic: gpus 0
    # The affinity networks train and predict on a GPU (segmentation.resources defaults).
    assert gres(job_of["train_segmenter/mala"]) and gres(job_of["segment/superhuman-hr-x8"])
    # A SLURM job trains on its cpus (rcan: 4 in method.yaml, capped at the node's CPUs), not
    # on a local run's share: the Snakemake inside the allocation runs in remote mode
    # (job_threads in workflow/rules/common.smk).
    import torch

    model = torch.load(results / "models" / "rcan" / "x8" / "model.pt", map_location="cpu", weights_only=True)
    assert model["threads"] == min(4, slurm_cluster.cpus), (model["threads"], slurm_cluster.cpus)
