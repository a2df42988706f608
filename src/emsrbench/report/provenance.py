"""Where the numbers come from: code version, packages, machine, data, settings and devices."""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import h5py

PACKAGES = [
    "emsrbench",
    "torch",
    "torchvision",
    "snakemake",
    "numpy",
    "scipy",
    "h5py",
    "scikit-image",
    "pandas",
    "lpips",
    "basicsr",
    "waterz",
    "matplotlib",
    "seaborn",
]


def git(repo: str | Path) -> str:
    def call(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=20)

    try:
        head = call("rev-parse", "HEAD")
        if head.returncode != 0:
            return "not a git checkout"
        status = call("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"unknown ({err})"
    dirty = len(status.stdout.splitlines())
    return head.stdout.strip() + (f" with {dirty} modified tracked file(s)" if dirty else "")


def packages() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> dict[str, str]:
    try:
        mem = f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        mem = "unknown"
    from ..device import cpu_name

    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_name(),
        "cpus": str(os.cpu_count()),
        "memory": mem,
    }


def devices(sr_files: dict) -> dict[str, str]:
    """``method xS`` -> the device and precision of its inference, from each SR volume's
    ``stats`` (files written before the precision was recorded say so)."""
    out = {}
    for (method, scale), path in sorted(sr_files.items()):
        try:
            with h5py.File(path, "r") as f:
                stats = json.loads(f.attrs.get("stats", "{}"))
        except (OSError, ValueError):
            continue
        if stats.get("device"):
            out[f"{method} x{scale}"] = f"{stats['device']}, {stats.get('precision') or 'precision not recorded'}"
    return out


def run_settings(config: dict) -> dict[str, str]:
    data = config.get("data", {})
    source = data.get("source", "?")
    samples = data.get(source, {}).get("samples", {}) if isinstance(data.get(source), dict) else {}
    splits = {
        k: ", ".join(f"{p['sample']}{'' if p.get('z') is None else ' z=' + str(list(p['z']))}" for p in v)
        for k, v in data.get("splits", {}).items()
    }
    return {
        "preset": str(config.get("preset")),
        "scales": ", ".join(f"{s}x" for s in config.get("scales", [])),
        "methods": str(config.get("methods")),
        "data source": f"{source}: "
        + ", ".join(f"{k} {json.dumps(v) if not isinstance(v, str) else v}" for k, v in samples.items()),
        "splits": "; ".join(f"{k}: {v}" for k, v in splits.items()),
        "degradation": json.dumps(config.get("degradation", {})),
        "results": str(config.get("results", "results")),
        "report generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
