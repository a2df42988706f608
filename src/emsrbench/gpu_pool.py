"""GPUs of one machine shared between the jobs of a local run (no SLURM).

``make bench GPUS=N`` runs ``snakemake --resources gpu=N`` with ``EMSR_GPUS=N`` in the
environment: Snakemake then starts at most N GPU jobs at once, and each job, before it
touches CUDA, claims device indices from a pool of lock files and sets
``CUDA_VISIBLE_DEVICES`` to them, so no two jobs share a card. A job whose rule declares no
GPU sees none (it would otherwise take ``cuda:0`` from the jobs that were given it).

The locks are ``flock`` locks on ``<dir>/gpu-<i>.lock`` (``EMSR_GPU_LOCKS``, default a folder
in the system's temporary directory, shared by every run of the machine): the kernel releases
them when the job's process ends, however it ends, so a crashed job never leaves a card
claimed. Under SLURM the scheduler has already set the job's devices, and the pool stays out.
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

from .errors import EmsrError

POOL_SIZE_ENV = "EMSR_GPUS"
LOCK_DIR_ENV = "EMSR_GPU_LOCKS"
WAIT_SECONDS = 600  # Snakemake's gpu resource makes waiting rare: only another run's jobs hold cards

_held: list = []  # open lock files of this process: closing one would release its card


def pool_size(environ=os.environ) -> int:
    """N of ``EMSR_GPUS`` (0: no pool, jobs see the devices the process was given)."""
    value = environ.get(POOL_SIZE_ENV, "").strip()
    if not value:
        return 0
    if not value.isdigit():
        raise EmsrError(f"{POOL_SIZE_ENV}={value!r}: expected the number of GPUs of this machine (e.g. GPUS=2)")
    return int(value)


def lock_dir(environ=os.environ) -> Path:
    return Path(environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / f"emsrbench-gpus-{os.getuid()}")


def claim(count: int, size: int, locks: Path, wait_seconds: float = WAIT_SECONDS) -> list[int]:
    """Lock ``count`` of the device indices 0 .. size-1 (the lowest free ones) for the life of
    this process; waits while fewer are free, then fails in one line."""
    if count > size:
        raise EmsrError(f"a job asks for {count} GPUs, the pool ({POOL_SIZE_ENV}) has {size}")
    locks.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait_seconds
    while True:
        got = []
        for i in range(size):
            f = open(locks / f"gpu-{i}.lock", "a+")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            got.append((i, f))
            if len(got) == count:
                _held.extend(f for _, f in got)
                return [i for i, _ in got]
        for _, f in got:  # not enough free: give back what we took and wait
            f.close()
        if time.monotonic() > deadline:
            raise EmsrError(
                f"no {count} of the {size} GPUs free after {wait_seconds:.0f} s (locks in {locks}): "
                "another run holds them"
            )
        time.sleep(1.0)


def assign(gpus_requested: int, environ=os.environ) -> str | None:
    """Give this job its devices: sets and returns ``CUDA_VISIBLE_DEVICES`` ("" for a job
    without GPUs), or None when no pool is in use (no ``EMSR_GPUS``, or a SLURM job)."""
    size = pool_size(environ)
    if size == 0 or environ.get("SLURM_JOB_ID"):
        return None
    visible = ",".join(map(str, claim(gpus_requested, size, lock_dir(environ)))) if gpus_requested > 0 else ""
    environ["CUDA_VISIBLE_DEVICES"] = visible
    print(f"emsrbench: GPU pool of {size}: this job uses {visible or 'no GPU'}", file=sys.stderr)
    return visible
