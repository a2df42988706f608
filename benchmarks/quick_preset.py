"""Time the quick preset end to end and per rule (from Snakemake's benchmark files).

    .venv/bin/python benchmarks/quick_preset.py [--config config/config.yaml] [--cores 2]

Runs the workflow in a fresh directory, then writes benchmarks/out/quick_preset.md: the
total wall time, and per rule and job the seconds and peak memory Snakemake measured, with
the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def machine() -> str:
    from emsrbench.device import cpu_name

    cpu = cpu_name()
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB, {gpu}, "
        f"Python {platform.python_version()}, torch {torch.__version__}"
    )


def collect(results: Path) -> pd.DataFrame:
    rows = []
    for tsv in sorted((results / "benchmarks").glob("*/*.tsv")):
        b = pd.read_csv(tsv, sep="\t")
        rows.append(
            {
                "rule": tsv.parent.name,
                "job": tsv.stem,
                "seconds": float(b["s"].iloc[0]),
                "max_rss_mb": float(b["max_rss"].iloc[0]) if "max_rss" in b else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "quick_preset.md"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="emsrbench-bench-") as work:
        t0 = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "snakemake",
                "-s",
                str(REPO / "Snakefile"),
                "--directory",
                work,
                "--configfile",
                args.config,
                "--cores",
                str(args.cores),
                "--quiet",
                "progress",
            ]
        )
        total = time.perf_counter() - t0
        if run.returncode != 0:
            print("workflow failed", file=sys.stderr)
            return run.returncode
        jobs = collect(Path(work) / "results")
    per_rule = (
        jobs.groupby("rule")
        .agg(jobs=("job", "count"), seconds=("seconds", "sum"), max_rss_mb=("max_rss_mb", "max"))
        .sort_values("seconds", ascending=False)
    )
    lines = [
        f"# Quick preset timing ({Path(args.config).name}, --cores {args.cores})",
        "",
        f"Machine: {machine()}",
        "",
        f"End to end (snakemake wall time): **{total:.1f} s**",
        "",
        "## Per rule (sum of job seconds; jobs run two at a time)",
        "",
        per_rule.to_markdown(floatfmt=".1f"),
        "",
        "## Per job",
        "",
        jobs.sort_values("seconds", ascending=False).to_markdown(index=False, floatfmt=".1f"),
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
