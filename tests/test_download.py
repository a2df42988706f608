"""Tests for emsrbench.download against a local HTTP server that supports Range requests."""

from __future__ import annotations

import hashlib
import socket
import threading
from pathlib import Path

import pytest

from emsrbench import download as dl
from emsrbench.download import check_sha256, download, sha256_file
from emsrbench.errors import EmsrError

PAYLOAD = bytes((i * 37 + i // 251) % 256 for i in range(300_000))  # 300 kB, not a multiple of anything
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def srv(http_server):
    """(base_url, state) with a fresh state serving PAYLOAD at /data.bin."""
    httpd, state = http_server
    state.__init__()
    state.files["/data.bin"] = PAYLOAD
    host, port = httpd.server_address[:2]
    return f"http://{host}:{port}", state


def _no_part(dest: Path) -> bool:
    return not dest.with_name(dest.name + ".part").exists()


def _one_line(excinfo, *needles) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert str(needle) in msg, f"{needle!r} not in {msg!r}"
    return msg


# ---------------------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(tmp_path):
    data = b"The quick brown fox jumps over the lazy dog"
    path = tmp_path / "fox.txt"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == "d7a8fbb307d7809469ca9abcb0082e4f8d5651e46d3cdb762d02d0bf37c9e592"
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert sha256_file(empty) == hashlib.sha256(b"").hexdigest()


def test_sha256_file_larger_than_chunk(tmp_path):
    data = PAYLOAD * 5  # 1.5 MB > CHUNK (1 MiB): several blocks
    assert len(data) > dl.CHUNK
    path = tmp_path / "big"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_check_sha256(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    check_sha256(path, PAYLOAD_SHA)
    check_sha256(path, PAYLOAD_SHA[:8])
    check_sha256(path, "  " + PAYLOAD_SHA.upper() + "\n")  # case and surrounding blanks are ignored
    with pytest.raises(EmsrError) as excinfo:
        check_sha256(path, "0" * 64)
    _one_line(excinfo, path, "sha256", PAYLOAD_SHA)


@pytest.mark.parametrize("bad", ["", "abc", "1234567", "xyz12345", "g" * 64, PAYLOAD_SHA[:10] + "-" + PAYLOAD_SHA[11:]])
def test_invalid_sha_string(tmp_path, bad):
    path = tmp_path / "f"
    path.write_bytes(PAYLOAD)
    with pytest.raises(EmsrError) as excinfo:
        check_sha256(path, bad)
    _one_line(excinfo, "sha256", "hexadecimal")


@pytest.mark.parametrize("bad", ["abc", "not-a-sha256"])
def test_download_invalid_sha_string_fails_before_any_request(srv, tmp_path, bad):
    base, state = srv
    dest = tmp_path / "out.bin"
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/data.bin", dest, bad)
    _one_line(excinfo, "sha256", "hexadecimal")
    assert state.log == []
    assert not dest.exists() and _no_part(dest)


@pytest.mark.parametrize("sha", [PAYLOAD_SHA, PAYLOAD_SHA[:8], PAYLOAD_SHA.upper()])
def test_fresh_download(srv, tmp_path, sha):
    base, state = srv
    dest = tmp_path / "sub" / "out.bin"
    assert download(f"{base}/data.bin", dest, sha) == dest
    assert dest.read_bytes() == PAYLOAD
    assert _no_part(dest)
    assert state.log == [("GET", "/data.bin", None)]


def test_wrong_sha256(srv, tmp_path):
    base, _ = srv
    dest = tmp_path / "out.bin"
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/data.bin", dest, "0123abcd")
    _one_line(excinfo, f"{base}/data.bin", "sha256")
    assert not dest.exists() and _no_part(dest)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("k", [1, 1000, len(PAYLOAD) - 1])
def test_resume_from_part(srv, tmp_path, k):
    base, state = srv
    dest = tmp_path / "out.bin"
    part = tmp_path / "out.bin.part"
    part.write_bytes(PAYLOAD[:k])
    download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    assert state.log == [("GET", "/data.bin", f"bytes={k}-")]
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_resume_when_server_ignores_range(srv, tmp_path):
    base, state = srv
    state.ignore_range = True  # answers 200 with the whole file: the part must be overwritten, not appended to
    dest = tmp_path / "out.bin"
    (tmp_path / "out.bin.part").write_bytes(PAYLOAD[:5000])
    download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    assert state.log == [("GET", "/data.bin", "bytes=5000-")]
    assert dest.read_bytes() == PAYLOAD
    assert _no_part(dest)


def test_part_already_complete_416(srv, tmp_path):
    base, state = srv
    dest = tmp_path / "out.bin"
    (tmp_path / "out.bin.part").write_bytes(PAYLOAD)
    download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    assert state.log == [("GET", "/data.bin", f"bytes={len(PAYLOAD)}-")]
    assert dest.read_bytes() == PAYLOAD
    assert _no_part(dest)


def test_corrupt_part_is_removed_then_retry_succeeds(srv, tmp_path):
    base, _ = srv
    dest = tmp_path / "out.bin"
    (tmp_path / "out.bin.part").write_bytes(b"\xff" * 1000)  # wrong prefix: resumed file cannot verify
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    _one_line(excinfo, "sha256")
    assert not dest.exists() and _no_part(dest)
    download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    assert dest.read_bytes() == PAYLOAD


def test_interrupted_transfer_keeps_part_and_resumes(srv, tmp_path):
    base, state = srv
    dest = tmp_path / "out.bin"
    part = tmp_path / "out.bin.part"
    state.truncate_to = 12_345  # the server closes the connection early
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    _one_line(excinfo, f"{base}/data.bin")
    assert not dest.exists()
    assert part.read_bytes() == PAYLOAD[:12_345]
    state.truncate_to = None
    download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    assert state.log[-1] == ("GET", "/data.bin", "bytes=12345-")
    assert dest.read_bytes() == PAYLOAD
    assert not part.exists()


def test_existing_dest_with_right_sha_makes_no_request(srv, tmp_path):
    base, state = srv
    dest = tmp_path / "out.bin"
    dest.write_bytes(PAYLOAD)
    assert download(f"{base}/data.bin", dest, PAYLOAD_SHA[:8]) == dest
    assert state.log == []
    assert dest.read_bytes() == PAYLOAD


def test_existing_dest_with_wrong_sha(srv, tmp_path):
    base, state = srv
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"something else")
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/data.bin", dest, PAYLOAD_SHA)
    _one_line(excinfo, dest, "sha256")
    assert state.log == []


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url(tmp_path):
    url = f"http://127.0.0.1:{_closed_port()}/data.bin"
    dest = tmp_path / "out.bin"
    with pytest.raises(EmsrError) as excinfo:
        download(url, dest, PAYLOAD_SHA, timeout=5)
    _one_line(excinfo, url, "download failed")
    assert not dest.exists() and _no_part(dest)


def test_http_404(srv, tmp_path):
    base, state = srv
    url = f"{base}/missing.bin"
    dest = tmp_path / "out.bin"
    with pytest.raises(EmsrError) as excinfo:
        download(url, dest, PAYLOAD_SHA)
    _one_line(excinfo, url, "404")
    assert state.log == [("GET", "/missing.bin", None)]
    assert not dest.exists() and _no_part(dest)


def test_http_404_keeps_existing_part(srv, tmp_path):
    base, _ = srv
    dest = tmp_path / "out.bin"
    part = tmp_path / "out.bin.part"
    part.write_bytes(PAYLOAD[:100])
    with pytest.raises(EmsrError) as excinfo:
        download(f"{base}/missing.bin", dest, PAYLOAD_SHA)
    _one_line(excinfo, "404")
    assert part.read_bytes() == PAYLOAD[:100]


def test_garbage_http_response(tmp_path):
    """A peer that does not speak HTTP gives a one-line EmsrError, not an http.client traceback."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(5)

    def answer():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            conn.sendall(b"this is not http\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/data.bin"
    dest = tmp_path / "out.bin"
    try:
        with pytest.raises(EmsrError) as excinfo:
            download(url, dest, PAYLOAD_SHA, timeout=5)
        _one_line(excinfo, url, "download failed")
        assert not dest.exists()
    finally:
        thread.join(5)
        listener.close()
