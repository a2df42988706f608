"""Threads of local jobs (workflow/rules/common.smk ``job_threads``): a local run with --cores N
gives a job its method's ``cpus`` but at most N // 2 (at least 1), so two jobs always run side
by side; one thread each on a 2-core laptop, the planned cpus on a big workstation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from workflow_helpers import dry_run

REPO = Path(__file__).resolve().parent.parent


def _train_threads(workdir: Path, cores: int) -> dict[str, int]:
    """{method: threads} of the train jobs that ``snakemake -n --cores <cores>`` plans."""
    small = {"methods": ["rcan", "swinir", "edvr"], "scales": [8], "segmentation": {"enabled": False}}
    (workdir / "small.yaml").write_text(yaml.safe_dump(small))
    done = dry_run(workdir, workdir / "small.yaml", cores)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    threads = {}
    # one block per job: "rule train:" ... "wildcards: method=rcan, scale=8" ... ["threads: 4"]
    for block in re.split(r"\n(?=\[[^\n]*\]\nrule )", done.stdout):
        if "\nrule train:" not in block:
            continue
        method = re.search(r"wildcards: method=(\w+)", block).group(1)
        found = re.search(r"threads: (\d+)", block)
        threads[method] = int(found.group(1)) if found else 1  # Snakemake prints threads > 1 only
    return threads


@pytest.mark.parametrize(
    "cores, expected",
    [
        (2, {"rcan": 1, "swinir": 1, "edvr": 1}),  # the laptop: one thread each
        (8, {"rcan": 4, "swinir": 4, "edvr": 1}),  # capped at 8 // 2
        (32, {"rcan": 4, "swinir": 8, "edvr": 1}),  # each its method.yaml cpus (4, 8, 1)
    ],
)
def test_local_jobs_get_their_cpus_up_to_half_the_cores(tmp_path, cores, expected):
    cpus = {
        m: yaml.safe_load((REPO / "methods" / m / "method.yaml").read_text())["resources"]["train"]["cpus"]
        for m in expected
    }
    assert cpus == {"rcan": 4, "swinir": 8, "edvr": 1}, "method.yaml cpus changed: update the expected threads"
    assert _train_threads(tmp_path, cores) == expected
