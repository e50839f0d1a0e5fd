"""Tests for spectral_edit.data.locate and .registry: data-dir precedence, resolve, verified
downloads and the registry of known files.

Downloads are exercised against a real loopback HTTP server (127.0.0.1, ephemeral port,
daemon thread, short timeouts), never the internet.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
import pytest

from spectral_edit.data import locate
from spectral_edit.data.errors import ChecksumMismatch, DataFileMissing, DownloadError
from spectral_edit.data.locate import data_dir, download, resolve
from spectral_edit.data.registry import BBQ_CATEGORIES, KNOWN_FILES, RemoteFile
from spectral_edit.util.atomic import sha256_file

PAYLOAD = "Invented benchmark line, ünïcödé included.\n".encode() * 300
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
TIMEOUT = 5.0


@dataclass
class Server:
    """A loopback HTTP server serving ``routes`` (path -> bytes) and counting requests."""

    routes: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    httpd: http.server.ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.httpd is not None
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"


def _handler(server: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server naming)
            server.requests.append(self.path)
            if self.path == "/truncated":
                # Promise more bytes than are sent, then close: a short read.
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD) * 2))
                self.end_headers()
                self.wfile.write(PAYLOAD[:1000])
                self.wfile.flush()
                self.close_connection = True
                return
            body = server.routes.get(self.path)
            if body is None:
                self.send_error(404, "not here")
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server(routes={"/file.txt": PAYLOAD})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(srv))
    httpd.daemon_threads = True
    srv.httpd = httpd
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield srv
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEA_DATA_DIR", raising=False)
    monkeypatch.delenv("SEA_OFFLINE", raising=False)


def _entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --------------------------------------------------------------------------- download


def test_download_good_file_is_verified_and_placed(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "file.txt"
    out = download(f"{server.base}/file.txt", dest, PAYLOAD_SHA, timeout=TIMEOUT, progress=False)
    assert out == dest
    assert dest.read_bytes() == PAYLOAD
    assert sha256_file(dest) == PAYLOAD_SHA
    assert _entries(dest.parent) == ["file.txt"]  # no temporary file left over
    assert server.requests == ["/file.txt"]


def test_download_accepts_uppercase_digest(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "f.txt"
    download(f"{server.base}/file.txt", dest, PAYLOAD_SHA.upper(), timeout=TIMEOUT, progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_download_wrong_checksum_leaves_nothing(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "file.txt"
    wrong = hashlib.sha256(b"something else").hexdigest()
    with pytest.raises(ChecksumMismatch) as info:
        download(f"{server.base}/file.txt", dest, wrong, timeout=TIMEOUT, progress=False)
    msg = str(info.value)
    assert wrong in msg and PAYLOAD_SHA in msg and f"{server.base}/file.txt" in msg
    assert _entries(tmp_path) == []
    assert isinstance(info.value, DataFileMissing)


def test_download_wrong_checksum_keeps_existing_dest(server: Server, tmp_path: Path) -> None:
    dest = tmp_path / "file.txt"
    dest.write_bytes(b"previous content")
    with pytest.raises(ChecksumMismatch):
        download(f"{server.base}/file.txt", dest, "0" * 64, timeout=TIMEOUT, progress=False)
    assert dest.read_bytes() == b"previous content"
    assert _entries(tmp_path) == ["file.txt"]


def test_download_http_404_is_clear(server: Server, tmp_path: Path) -> None:
    url = f"{server.base}/missing.txt"
    with pytest.raises(DownloadError, match="404") as info:
        download(url, tmp_path / "x.txt", PAYLOAD_SHA, timeout=TIMEOUT, progress=False)
    assert url in str(info.value)
    assert _entries(tmp_path) == []


def test_download_truncated_body_leaves_nothing(server: Server, tmp_path: Path) -> None:
    url = f"{server.base}/truncated"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "x.txt", PAYLOAD_SHA, timeout=TIMEOUT, progress=False)
    assert url in str(info.value)
    assert _entries(tmp_path) == []


def test_download_server_gone_is_clear(tmp_path: Path) -> None:
    # Bind an ephemeral port, then close it: nothing listens there any more.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/file.txt"
    with pytest.raises(DownloadError) as info:
        download(url, tmp_path / "d" / "x.txt", PAYLOAD_SHA, timeout=TIMEOUT, progress=False)
    assert url in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert _entries(tmp_path / "d") == []


def test_download_after_server_shutdown(server: Server, tmp_path: Path) -> None:
    url = f"{server.base}/file.txt"
    assert server.httpd is not None
    server.httpd.shutdown()
    server.httpd.server_close()
    with pytest.raises(DownloadError, match=re.escape(url)):
        download(url, tmp_path / "x.txt", PAYLOAD_SHA, timeout=TIMEOUT, progress=False)
    assert _entries(tmp_path) == []


def test_offline_env_forbids_download(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    with pytest.raises(DataFileMissing, match="SEA_OFFLINE"):
        download(f"{server.base}/file.txt", tmp_path / "x.txt", PAYLOAD_SHA, progress=False)
    assert server.requests == []
    assert _entries(tmp_path) == []


@pytest.mark.parametrize(
    ("url", "digest"),
    [("file:///etc/passwd", PAYLOAD_SHA), ("http://127.0.0.1:1/x", "abc"), ("ftp://x/y", "0" * 64)],
)
def test_download_rejects_bad_arguments(url: str, digest: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        download(url, tmp_path / "x", digest, progress=False)
    assert _entries(tmp_path) == []


# --------------------------------------------------------------------------- data_dir


def test_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = platformdirs.user_cache_path("spectral-edit") / "data"
    assert data_dir() == cache
    monkeypatch.setenv("SEA_DATA_DIR", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "explicit") == tmp_path / "explicit"
    assert data_dir(str(tmp_path / "explicit")) == tmp_path / "explicit"
    monkeypatch.setenv("SEA_DATA_DIR", "")
    assert data_dir() == cache


def test_resolve_precedence_explicit_env_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rel = "halueval/qa_data.json"
    explicit, env, cache_root = tmp_path / "explicit", tmp_path / "env", tmp_path / "cache"
    for root in (explicit, env, cache_root / "data"):
        (root / "halueval").mkdir(parents=True)
        (root / rel).write_text(root.name)
    monkeypatch.setattr(locate.platformdirs, "user_cache_path", lambda app: cache_root)
    assert resolve(rel) == cache_root / "data" / rel
    monkeypatch.setenv("SEA_DATA_DIR", str(env))
    assert resolve(rel) == env / rel
    assert resolve(rel, explicit) == explicit / rel


def test_resolve_existing_file_needs_no_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEA_OFFLINE", "1")
    for rel in ("bbq/official/SES.jsonl", "some/unregistered/file.txt"):
        f = tmp_path / rel
        f.parent.mkdir(parents=True)
        f.write_text("{}\n")
        assert resolve(rel, tmp_path) == f
        assert resolve(rel, tmp_path, download=False) == f


@pytest.fixture
def pinned(server: Server, monkeypatch: pytest.MonkeyPatch) -> RemoteFile:
    entry = RemoteFile("test/file.txt", f"{server.base}/file.txt", PAYLOAD_SHA)
    monkeypatch.setitem(KNOWN_FILES, entry.relpath, entry)
    return entry


def test_resolve_downloads_pinned_file_once(
    pinned: RemoteFile, server: Server, tmp_path: Path
) -> None:
    path = resolve(pinned.relpath, tmp_path, timeout=TIMEOUT, progress=False)
    assert path == tmp_path / "test" / "file.txt"
    assert path.read_bytes() == PAYLOAD
    assert resolve(pinned.relpath, tmp_path) == path
    assert server.requests == ["/file.txt"]  # second resolve used the local copy


def test_resolve_checksum_mismatch_explains_manual_route(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = RemoteFile("test/file.txt", f"{server.base}/file.txt", "1" * 64)
    monkeypatch.setitem(KNOWN_FILES, entry.relpath, entry)
    with pytest.raises(ChecksumMismatch) as info:
        resolve(entry.relpath, tmp_path, timeout=TIMEOUT, progress=False)
    msg = str(info.value)
    assert "checksum mismatch" in msg and str(tmp_path / "test" / "file.txt") in msg
    assert _entries(tmp_path / "test") == []


@pytest.mark.parametrize("how", ["download_false", "offline_env"])
def test_resolve_without_permission_does_not_fetch(
    how: str, pinned: RemoteFile, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if how == "offline_env":
        monkeypatch.setenv("SEA_OFFLINE", "1")
    with pytest.raises(DataFileMissing) as info:
        resolve(pinned.relpath, tmp_path, download=(how != "download_false"))
    msg = str(info.value)
    assert pinned.relpath in msg and str(pinned.url) in msg and str(tmp_path) in msg
    assert server.requests == []
    assert _entries(tmp_path) == []


def test_resolve_unpinned_missing_file_has_helpful_message(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = RemoteFile("test/unpinned.txt", f"{server.base}/file.txt", None, "an invented note")
    monkeypatch.setitem(KNOWN_FILES, entry.relpath, entry)
    monkeypatch.setenv("SEA_DATA_DIR", str(tmp_path))
    with pytest.raises(DataFileMissing) as info:
        resolve(entry.relpath)
    msg = str(info.value)
    assert "test/unpinned.txt" in msg
    assert str(tmp_path) in msg and "SEA_DATA_DIR" in msg  # where it looked and why
    assert "not pinned" in msg
    assert str(tmp_path / "test" / "unpinned.txt") in msg  # where to put it
    assert f"{server.base}/file.txt" in msg and "an invented note" in msg
    assert server.requests == []  # never downloaded without a checksum


def test_resolve_unknown_file_message(tmp_path: Path) -> None:
    with pytest.raises(DataFileMissing) as info:
        resolve("nowhere/thing.csv", tmp_path)
    msg = str(info.value)
    assert "nowhere/thing.csv" in msg and str(tmp_path) in msg and "--data-dir" in msg


def test_real_unpinned_registry_entry_is_not_downloaded(tmp_path: Path) -> None:
    # crows-pairs has a URL but no local copy to hash: it must not be fetched.
    entry = KNOWN_FILES["crows_pairs/crows_pairs_anonymized.csv"]
    assert entry.url is not None and entry.sha256 is None and not entry.downloadable
    with pytest.raises(DataFileMissing, match="not pinned"):
        resolve(entry.relpath, tmp_path)


@pytest.mark.parametrize("bad", ["../etc/passwd", "/abs/path.json", "a/../../b", ""])
def test_resolve_rejects_paths_outside_data_dir(bad: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        resolve(bad, tmp_path)


# --------------------------------------------------------------------------- registry


def test_registry_is_consistent() -> None:
    for rel, entry in KNOWN_FILES.items():
        assert entry.relpath == rel
        assert not rel.startswith("/") and ".." not in rel.split("/")
        if entry.sha256 is not None:
            assert re.fullmatch(r"[0-9a-f]{64}", entry.sha256), rel
        if entry.url is not None:
            assert entry.url.startswith("https://raw.githubusercontent.com/"), rel
    for cat in BBQ_CATEGORIES:
        assert f"bbq/official/{cat}.jsonl" in KNOWN_FILES
    assert len(BBQ_CATEGORIES) == 11
    for rel in (
        "truthfulqa/mc_task_v0.json",
        "truthfulqa/mc_task.json",
        "truthfulqa/TruthfulQA.csv",
        "truthfulqa/folds/TruthfulQA-1.csv",
        "truthfulqa/folds/TruthfulQA-2.csv",
        "halueval/qa_data.json",
        "halueval/qa_one-turn_data.json",
        "crows_pairs/crows_pairs_anonymized.csv",
        "control/piqa.jsonl",
    ):
        assert rel in KNOWN_FILES
    # lm-evaluation-harness's TruthfulQA MC file is pinned to an immutable commit.
    v0 = KNOWN_FILES["truthfulqa/mc_task_v0.json"]
    assert v0.downloadable and re.search(r"/[0-9a-f]{40}/", str(v0.url))
