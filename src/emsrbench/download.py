"""Resumable, checksum-verified downloads (CREMI samples, pretrained weights).

A partial download lives in ``<dest>.part`` and is continued with an HTTP Range request on
the next attempt; the file is moved to ``dest`` only after its sha256 matches.  A sha256 may
be given in full or as a prefix of at least 8 hex digits (torchvision's convention: its
weight file names carry the first 8 digits of their sha256).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

from .errors import EmsrError

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def expected_sha256(expected: str, where) -> str:
    expected = expected.lower().strip()
    if len(expected) < 8 or any(c not in "0123456789abcdef" for c in expected):
        raise EmsrError(f"{where}: sha256 '{expected}' must be at least 8 hexadecimal digits")
    return expected


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    expected = expected_sha256(expected, path)
    actual = sha256_file(path)
    if not actual.startswith(expected):
        raise EmsrError(f"{path}: sha256 mismatch: expected {expected}, got {actual}")


def download(url: str, dest: str | os.PathLike, sha256: str, verify_tls: bool = True, timeout: float = 60) -> Path:
    """Fetch ``url`` into ``dest`` (resuming a previous partial download) and verify it."""
    dest = Path(dest)
    expected_sha256(sha256, url)  # a malformed checksum fails before any transfer
    if dest.exists():
        check_sha256(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    # cremi.org has served expired certificates; users may opt out of verification explicitly.
    context = None if verify_tls else ssl._create_unverified_context()
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as resp:
            resumed = have and resp.status == 206
            with open(part, "ab" if resumed else "wb") as out:
                total = resp.headers.get("Content-Length")
                print(
                    f"downloading {url} -> {dest} ({'resuming at ' + str(have) + ' bytes, ' if resumed else ''}"
                    f"{total or '?'} bytes to go)",
                    file=sys.stderr,
                )
                start = out.tell()
                shutil.copyfileobj(resp, out, CHUNK)
                got = out.tell() - start
            if total is not None and total.isdigit() and got < int(total):  # connection closed early
                raise EmsrError(
                    f"{url}: download interrupted after {got} of {total} bytes "
                    f"(partial data kept in {part}; rerun to resume)"
                )
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the partial file is already complete
            pass
        else:
            raise EmsrError(
                f"{url}: download failed: HTTP {err.code} {err.reason} (partial data kept in {part})"
            ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
        raise EmsrError(
            f"{url}: download failed: {getattr(err, 'reason', err)} (partial data kept in {part}; rerun to resume)"
        ) from None
    try:
        check_sha256(part, sha256)
    except EmsrError:
        part.unlink()
        raise EmsrError(f"{url}: downloaded file does not match sha256 {sha256}; removed it, rerun to retry") from None
    os.replace(part, dest)
    return dest
