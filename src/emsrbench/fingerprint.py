"""Fingerprints: what a checkpoint or a model file was made from, by content.

A training run resumes only from a checkpoint made from the same things, and inference reads
only a model file trained for the job the config plans. "The same things" is a mapping of
*components*: names, settings, and the content digests of every file that shapes the weights
(training volumes, upstream stage files, pretrained networks). Files are named by their
content, never their path: a new phantom seed or a user's own HDF5 at the same path is a
different input.

Hashing a multi-GB volume at every job start would cost seconds to minutes, so a file's
digest is computed once and cached beside it (``.<name>.sha256``), keyed by size,
modification time and inode; a rewritten file (the workflow writes atomically, so a new inode)
is hashed again. Where the folder is read-only the digest is simply recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .download import sha256_file

ABSENT = "absent"


def _cache_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.sha256")


def _cache_key(path: Path) -> str:
    st = path.stat()
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def file_digest(path: str | Path) -> str:
    """The sha256 of ``path``'s bytes (cached beside the file, see the module docstring)."""
    path = Path(path)
    key = _cache_key(path)
    cache = _cache_path(path)
    try:
        cached_key, cached_digest = cache.read_text().split()
        if cached_key == key:
            return cached_digest
    except (OSError, ValueError):
        pass
    digest = sha256_file(path)
    if _cache_key(path) == key:  # not rewritten while we read it
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(f"{key} {digest}\n")
            os.replace(tmp, cache)
        except OSError:  # a read-only data folder: hash again next time
            tmp.unlink(missing_ok=True)
    return digest


def files_digest(paths) -> list[str]:
    return [file_digest(p) for p in paths]


def _plain(value):
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    return str(value)


def plain(components: dict) -> dict:
    """``components`` as JSON types (tuples become lists, paths strings): what is stored in a
    checkpoint (``torch.load(weights_only=True)`` reads plain types only) and compared."""
    return json.loads(json.dumps(components, sort_keys=True, default=_plain))


def _flatten(value, prefix: str = "") -> dict[str, object]:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out or {prefix: {}}
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = {}
        for i, v in enumerate(value):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: value}


def _is_digest(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _show(value) -> str:
    if _is_digest(value):
        return f"sha256 {value[:8]}"
    if isinstance(value, list) and value and all(_is_digest(v) for v in value):
        return "[" + ", ".join(f"sha256 {v[:8]}" for v in value) + "]"
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class Fingerprint:
    """The components a piece of training state was made from, and their digest."""

    components: dict

    def __post_init__(self):
        object.__setattr__(self, "components", plain(self.components))

    @property
    def digest(self) -> str:
        text = json.dumps(self.components, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def record(self) -> dict:
        """What a checkpoint or model file stores."""
        return {"digest": self.digest, "components": self.components}

    @classmethod
    def from_record(cls, record) -> "Fingerprint | None":
        if not isinstance(record, dict) or not isinstance(record.get("components"), dict):
            return None
        return cls(record["components"])

    def matches(self, record) -> bool:
        return isinstance(record, dict) and record.get("digest") == self.digest

    def changes_from(self, record, limit: int = 4) -> str:
        """What differs between ``record`` (an older fingerprint's :meth:`record`) and this one,
        in a few words: ``train.iterations 20 -> 40; data.train content changed``."""
        old = Fingerprint.from_record(record)
        if old is None:
            return "it records no fingerprint (made by an older emsrbench)"
        before, after = _flatten(old.components), _flatten(self.components)
        changes = []
        for key in sorted(set(before) | set(after)):
            a, b = before.get(key, ABSENT), after.get(key, ABSENT)
            if a == b:
                continue
            if (
                _is_digest(a)
                and _is_digest(b)
                or (isinstance(a, list) and isinstance(b, list) and all(map(_is_digest, a + b)) and len(a) == len(b))
            ):
                changes.append(f"{key} content changed")
            else:
                changes.append(f"{key} {_show(a)} -> {_show(b)}")
        if not changes:
            return "same components, other digest (a different emsrbench version)"
        more = f"; and {len(changes) - limit} more" if len(changes) > limit else ""
        return "; ".join(changes[:limit]) + more


def planned_job(
    rule: str, *, method: str, variant: str, scale: int, preset: str, model: dict, train, inputs: dict, pretrained: dict
) -> Fingerprint:
    """The identity of a planned training job as the workflow names it: rule, method, variant,
    scale, preset, model and train settings, the content of each input file (``inputs``:
    role -> path or paths) and the pretrained files' state (:meth:`Pretrained.state`).

    The training job stores it in its model file; the jobs that read the model compute it
    from the same plan and refuse a file made for another (:func:`check_planned`)."""

    def digests(paths):
        return file_digest(paths) if isinstance(paths, (str, Path)) else files_digest(paths)

    return Fingerprint(
        {
            "rule": rule,
            "method": method,
            "variant": variant,
            "scale": int(scale),
            "preset": preset,
            "model": model,
            "train": train,
            "inputs": {role: digests(paths) for role, paths in sorted(inputs.items())},
            "pretrained": pretrained,
        }
    )


def check_planned(path: str | Path, recorded, expected: Fingerprint | None, what: str) -> None:
    """One-line error when the model file ``path`` (its ``planned`` record) was not trained
    for the job the config plans (``expected``; None: nothing planned, e.g. the user's own
    weights)."""
    from .errors import EmsrError

    if expected is None or expected.matches(recorded):
        return
    raise EmsrError(
        f"{path}: not the {what} this config plans ({expected.changes_from(recorded)}); "
        "retrain it: delete the file or rerun with `snakemake --forcerun <its rule>`"
    )
