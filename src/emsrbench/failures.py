"""Failure records: one small JSON file per failed job, ``<results>/failed/<rule>-<wildcards>.json``.

Snakemake forgets why a job failed once the run is over, and with ``--keep-going`` the other
methods' rows still exist. :func:`emsrbench.steps.run` writes a record when a job fails and
removes it when the same job later succeeds, so the report can show each missing row as
failed, with the one-line reason, instead of silently leaving it out.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EmsrError
from .io import atomic_path

FAILED_DIR = "failed"
# A reason is shown in a table cell; tracebacks stay in the job's log.
MAX_REASON = 400


@dataclass(frozen=True)
class Failure:
    rule: str
    wildcards: dict = field(hash=False)
    reason: str
    log: str = ""
    time: str = ""
    path: str = ""

    @property
    def job(self) -> str:
        """``infer (method=rcan, scale=8)``: how the failed job is named on the page."""
        wc = ", ".join(f"{k}={v}" for k, v in self.wildcards.items())
        return f"{self.rule} ({wc})" if wc else self.rule

    def concerns(self, method: str, scale) -> bool:
        """True when this failure explains a missing (method, scale) row.

        A job with neither a ``method`` nor a ``scale`` wildcard (a phantom or download job)
        is reported on its own, not pinned on rows; a degrade failure (scale only) explains
        every method at that scale.
        """
        wc = self.wildcards
        if "method" not in wc and "scale" not in wc:
            return False
        return wc.get("method", method) == method and str(wc.get("scale", scale)) == str(scale)


def _stem(rule: str, wildcards: dict) -> str:
    parts = ",".join(f"{k}={v}" for k, v in sorted(wildcards.items()))
    stem = f"{rule}-{parts}" if parts else rule
    return re.sub(r"[^A-Za-z0-9_.,=+-]", "_", stem)


def record_path(results: str | Path, rule: str, wildcards: dict) -> Path:
    return Path(results) / FAILED_DIR / f"{_stem(rule, wildcards)}.json"


def one_line(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= MAX_REASON else line[: MAX_REASON - 3] + "..."


def write(results: str | Path, rule: str, wildcards: dict, reason: str, log: str = "") -> Path:
    path = record_path(results, rule, wildcards)
    record = {
        "rule": rule,
        "wildcards": {k: str(v) for k, v in wildcards.items()},
        "reason": one_line(reason),
        "log": log,
        "time": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(record, indent=1) + "\n")
    return path


def clear(results: str | Path, rule: str, wildcards: dict) -> None:
    record_path(results, rule, wildcards).unlink(missing_ok=True)


def read(path: str | Path) -> Failure:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EmsrError(f"{path}: not a readable failure record ({err})") from None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("rule"), str)
        or not isinstance(data.get("wildcards", {}), dict)
    ):
        raise EmsrError(f"{path}: not a failure record (needs 'rule' and 'wildcards')")
    return Failure(
        rule=data["rule"],
        wildcards=dict(data.get("wildcards", {})),
        reason=str(data.get("reason", "")),
        log=str(data.get("log", "")),
        time=str(data.get("time", "")),
        path=str(path),
    )


def load(results: str | Path) -> list[Failure]:
    folder = Path(results) / FAILED_DIR
    return [read(p) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
