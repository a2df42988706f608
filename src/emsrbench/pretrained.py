"""The pretrained-weights registry (config/pretrained.yaml) bound to a weights directory.

Nothing here downloads implicitly: ``fetch`` is called only by the ``fetch_weights`` rule.
A consumer asks :meth:`Pretrained.status` and either gets a verified file or the reason it
has none, which becomes a visible flag on every output that depends on it.

An entry with ``fetch: manual`` (a file its publishers share only through a page a program
cannot download from, e.g. a Google Drive folder) is put in place by hand; ``fetch_weights``
skips it and says so. Only such an entry may have ``sha256: null``: the publishers give no
checksum, so the file is used unverified, by its content digest (the jobs that read it carry
that digest and say it was not verified). Every other entry is checked as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from .download import download, expected_sha256
from .errors import EmsrError
from .fingerprint import ABSENT, file_digest

REGISTRY = Path(__file__).resolve().parents[2] / "config" / "pretrained.yaml"


FETCH_MODES = ("download", "manual")


@dataclass(frozen=True)
class Weight:
    name: str
    file: str
    url: str
    sha256: str | None  # None: the publishers give none (``fetch: manual`` only); used unverified
    used_by: tuple[str, ...]
    description: str
    fetch: str = "download"  # "download": by `snakemake fetch_weights`; "manual": by hand from ``url``
    notes: str = ""

    @property
    def manual(self) -> bool:
        return self.fetch == "manual"

    @property
    def verified(self) -> bool:
        """Whether a file of this entry is checked against a checksum."""
        return self.sha256 is not None


@lru_cache(maxsize=None)
def registry(path: str | Path = REGISTRY) -> dict[str, Weight]:
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    out = {}
    for name, e in raw.items():
        missing = {"file", "url", "sha256"} - set(e)
        if missing:
            raise EmsrError(f"{path}: {name}: missing {sorted(missing)}")
        fetch = e.get("fetch", "download")
        if fetch not in FETCH_MODES:
            raise EmsrError(f"{path}: {name}.fetch: '{fetch}' is not one of {list(FETCH_MODES)}")
        if e["sha256"] is None:
            if fetch != "manual":
                raise EmsrError(
                    f"{path}: {name}.sha256: null (no published checksum) is only allowed with "
                    "`fetch: manual`; a downloaded file must be verified"
                )
        else:
            expected_sha256(e["sha256"], f"{path}: {name}.sha256")
        out[name] = Weight(
            name,
            e["file"],
            e["url"],
            e["sha256"],
            tuple(e.get("used_by", [])),
            e.get("description", ""),
            fetch,
            e.get("notes", ""),
        )
    return out


def missing_flag(name: str, consequence: str) -> str:
    """The text every output of a job run without pretrained ``name`` carries."""
    return f"flag: pretrained {name} missing, {consequence}"


class Pretrained:
    """The registry bound to a weights directory.

    ``declared``: the entries the job using this object may ask for (the workflow passes what
    the job's rule depends on, see :meth:`emsrbench.plan.Plan.pretrained_names`); asking for
    another is an error, so a job can never read a weight file its rule does not track.
    ``used`` records every entry asked for and its content digest (or ``absent``): each
    training run takes those asked for since the previous one (:meth:`take_used`) into its
    fingerprint, so stage 1 of a two-stage method never depends on stage 2's loss network."""

    def __init__(
        self,
        weights_dir: str | Path = "weights",
        registry_path: str | Path = REGISTRY,
        declared: tuple[str, ...] | list[str] | None = None,
        who: str = "",
    ):
        self.dir = Path(weights_dir)
        self.entries = registry(str(registry_path))
        self.declared = None if declared is None else tuple(declared)
        self.who = who
        self.used: dict[str, str] = {}

    def entry(self, name: str) -> Weight:
        if name not in self.entries:
            raise EmsrError(f"{REGISTRY}: no pretrained entry '{name}' (has {sorted(self.entries)})")
        return self.entries[name]

    def candidates(self, name: str) -> list[Path]:
        f = self.entry(name).file
        return [self.dir / f, self.dir / "checkpoints" / f, self.dir / "hub" / "checkpoints" / f]

    def status(self, name: str) -> tuple[Path | None, str]:
        """(verified path, "") or (None, why it is unavailable)."""
        if self.declared is not None and name not in self.declared:
            raise EmsrError(
                f"{self.who or 'this job'} asked for pretrained '{name}', which its rule does not declare "
                f"(declared: {list(self.declared) or 'none'}); add it to the method's method.yaml `pretrained`"
            )
        path, why, digest = self.lookup(name)
        self.used[name] = digest
        return path, why

    def take_used(self) -> dict[str, str]:
        """{entry: sha256 or ``absent``} asked for since the last call; forgets them."""
        used, self.used = self.used, {}
        return used

    def lookup(self, name: str) -> tuple[Path | None, str, str]:
        """(verified path, "", its sha256) or (None, why it is unavailable, ``absent`` or the
        sha256 of a file that fails the check)."""
        w = self.entry(name)
        for p in self.candidates(name):
            if p.is_file():
                actual = file_digest(p)
                if w.verified and not actual.startswith(expected_sha256(w.sha256, p)):
                    return None, f"{p}: sha256 mismatch, expected {w.sha256}, got {actual}", actual
                return p, "", actual
        where = self.candidates(name)[0]
        return None, f"{name} weights not found: looked for {where} ({self.how_to_get(name)})", ABSENT

    def how_to_get(self, name: str) -> str:
        w = self.entry(name)
        if w.manual:
            return (
                f"download {Path(w.file).name} by hand from {w.url} and put it there; "
                "`snakemake fetch_weights` cannot fetch it"
            )
        return f"run `snakemake fetch_weights` or copy {w.file} there"

    def downloadable(self) -> list[Weight]:
        """The entries `snakemake fetch_weights` downloads (the others are put in place by hand)."""
        return [w for w in self.entries.values() if not w.manual]

    def manual(self) -> list[Weight]:
        return [w for w in self.entries.values() if w.manual]

    def manual_note(self) -> str:
        """What `snakemake fetch_weights` says of the entries it skips: where to get them."""
        groups: dict[tuple[str, str], list[str]] = {}
        for w in self.manual():
            groups.setdefault((w.url, str(self.dir / Path(w.file).parent)), []).append(Path(w.file).name)
        if not groups:
            return "fetch_weights: every registry entry is downloaded"
        return "fetch_weights: skipped, to download by hand (no program can fetch them): " + "; ".join(
            f"{', '.join(files)} from {url} into {folder}/" for (url, folder), files in groups.items()
        )

    def state(self, names) -> dict[str, str]:
        """{name: sha256 or ``absent``} of ``names``: a rule param, so that adding, removing or
        changing a weight file reruns exactly the jobs that use it."""
        return {n: self.lookup(n)[2] for n in sorted(set(names))}

    def path(self, name: str) -> Path | None:
        return self.status(name)[0]

    def fetch(self, name: str) -> Path:
        w = self.entry(name)
        if w.manual:
            raise EmsrError(
                f"pretrained {name}: {w.file} cannot be downloaded by emsrbench; "
                f"download it by hand from {w.url} into {self.dir / Path(w.file).parent}"
            )
        return download(w.url, self.dir / w.file, w.sha256)
