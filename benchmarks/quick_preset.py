"""Time the quick preset end to end and per rule (from Snakemake's benchmark files).

    .venv/bin/python benchmarks/quick_preset.py [--config config/config.yaml] [--cores 2] [--keep DIR]

Runs the workflow in a fresh directory, then writes benchmarks/out/quick_preset.md: the
total wall time and CPU time, the load average during the run, and per rule and job the wall
seconds, CPU seconds and peak memory Snakemake measured, with the machine it ran on.

On a shared machine wall times grow with the other work; the CPU seconds much less (the whole
run's are exact: every process of the run, Snakemake's own included, from the kernel's
accounting of waited-for children; a job's are Snakemake's samples, once a second for its
first 30 s, then every 30 s, so they miss up to that much of its end).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]


def write_table(name: str, header: list[str], rows: list[str]) -> Path:
    """Write ``header``, the table ``rows`` and a final newline to benchmarks/out/``name``, print
    it, and return its path (the shared tail of the table-writing benchmarks)."""
    text = "\n".join(header + rows + [""])
    out = REPO / "benchmarks" / "out" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    return out


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
                # "NA" when the job ended before Snakemake's first sample
                "cpu_seconds": pd.to_numeric(b["cpu_time"], errors="coerce").iloc[0]
                if "cpu_time" in b
                else float("nan"),
                "max_rss_mb": float(b["max_rss"].iloc[0]) if "max_rss" in b else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished, waited-for descendant of this process."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class LoadSampler:
    """The 1-minute load average every ``every`` seconds while the run lasts (what else ran)."""

    def __init__(self, every: float = 30.0):
        self.samples = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every,), daemon=True)

    def _sample(self, every: float) -> None:
        while not self._stop.wait(every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def describe(self, cores: int) -> str:
        s = self.samples
        return (
            f"1-min load average min {min(s):.1f} / median {statistics.median(s):.1f} / max {max(s):.1f} "
            f"({len(s)} samples; the run itself accounts for up to {cores})"
        )


@contextlib.contextmanager
def workdir(keep: str | None):
    """A fresh directory to run in: DIR, kept afterwards, or a temporary one, removed."""
    if keep:
        Path(keep).mkdir(parents=True)
        yield str(Path(keep).resolve())
        return
    with tempfile.TemporaryDirectory(prefix="emsrbench-bench-") as work:
        yield work


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "out" / "quick_preset.md"))
    ap.add_argument(
        "--keep",
        metavar="DIR",
        help="run in DIR (must not exist) and keep it, e.g. to compare its leaderboard with another run's",
    )
    args = ap.parse_args()
    if args.keep and Path(args.keep).exists():
        ap.error(f"--keep {args.keep}: already exists (a fresh directory is what gets timed)")
    with workdir(args.keep) as work, LoadSampler() as load:
        t0, cpu0 = time.perf_counter(), children_cpu_seconds()
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
        total, cpu = time.perf_counter() - t0, children_cpu_seconds() - cpu0
        if run.returncode != 0:
            print("workflow failed", file=sys.stderr)
            return run.returncode
        jobs = collect(Path(work) / "results")
    per_rule = (
        jobs.groupby("rule")
        .agg(
            jobs=("job", "count"),
            seconds=("seconds", "sum"),
            cpu_seconds=("cpu_seconds", "sum"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .sort_values("seconds", ascending=False)
    )
    lines = [
        f"# Quick preset timing ({Path(args.config).name}, --cores {args.cores})",
        "",
        f"Machine: {machine()}",
        "",
        f"End to end (snakemake wall time): **{total:.1f} s**; CPU time of the whole run: {cpu:.1f} s; "
        f"{len(jobs)} jobs",
        "",
        f"Load: {load.describe(args.cores)}",
        "",
        f"## Per rule (sums over the rule's jobs; up to {args.cores} cores' worth of jobs run at once)",
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
