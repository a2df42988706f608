"""Helpers for tests that plan the workflow as a user runs it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def dry_run(workdir: Path, configfile: Path, cores: int = 1) -> subprocess.CompletedProcess:
    """``snakemake -n --cores <cores>`` as a user runs it: the Snakefile's default
    config/config.yaml (copied into the working directory, where Snakemake looks for it) with
    ``--configfile`` over it."""
    (workdir / "config").mkdir(exist_ok=True)
    shutil.copy(REPO / "config" / "config.yaml", workdir / "config" / "config.yaml")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["-n", "--cores", str(cores), "--configfile", str(configfile)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)
