"""Tests for data_tools.download against a local HTTP server on 127.0.0.1 (no external network)."""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import socket
import tarfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import download as dl

ARCHIVE_PATH = "/mvtec_anomaly_detection.tar.xz"


@dataclass
class ServerState:
    payload: bytes = b""
    requests: list[dict] = field(default_factory=list)
    cut_first_after: int | None = None  # first response: announce everything, send this many bytes, hang up
    ignore_range: bool = False


def _handler(state: ServerState):
    # BaseHTTPRequestHandler rather than SimpleHTTPRequestHandler: the latter has no Range support,
    # and serving one in-memory payload needs no file-system logic.
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            state.requests.append({"path": self.path, "range": self.headers.get("Range")})
            if self.path != ARCHIVE_PATH:
                self.send_error(404, "Not Found")
                return
            data, start = state.payload, 0
            wanted = None if state.ignore_range else self.headers.get("Range")
            if wanted:
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if state.cut_first_after is not None and len(state.requests) == 1:
                self.wfile.write(body[: state.cut_first_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def server():
    state = ServerState()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _mvtec_like_archive(extra_members: dict[str, bytes] | None = None) -> bytes:
    """A small tar.xz in MVTec layout: bottle with train/test/ground_truth and the licence file."""
    rng = np.random.default_rng(0)
    members: dict[str, bytes] = {"license.txt": b"CC BY-NC-SA 4.0 (test stand-in)\n"}
    for split, count in (("train/good", 4), ("test/good", 2), ("test/broken", 2)):
        for i in range(count):
            members[f"bottle/{split}/{i:03d}.png"] = _png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    for i in range(2):
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8 + i : 20] = 255
        members[f"bottle/ground_truth/broken/{i:03d}_mask.png"] = _png_bytes(mask)
    members.update(extra_members or {})
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="module")
def archive() -> bytes:
    return _mvtec_like_archive()


def _leftovers(to: Path) -> list[str]:
    return sorted(p.name for p in to.iterdir() if p.name.endswith(".part") or p.name.startswith(".extract-"))


def _download(url: str, to: Path, sha: str, **kw) -> int:
    return dl.download_mvtec(to, url + ARCHIVE_PATH, sha, retry_wait_s=0, chunk_size=4096, timeout=5, **kw)


def test_good_hash_downloads_extracts_and_verifies(server, archive, tmp_path, capsys):
    state, base = server
    state.payload = archive
    to = tmp_path / "mvtec"
    assert _download(base, to, hashlib.sha256(archive).hexdigest()) == 0
    assert (to / "bottle" / "train" / "good" / "003.png").is_file()
    assert (to / "bottle" / "ground_truth" / "broken" / "001_mask.png").is_file()
    assert (to / "license.txt").is_file()
    assert _leftovers(to) == [] and not (to / dl.MVTEC_ARCHIVE_NAME).exists()
    assert [r["range"] for r in state.requests] == [None]
    out = capsys.readouterr().out
    assert "bottle" in out and "valid mvtec dataset" in out


def test_wrong_hash_rejects_file_and_extracts_nothing(server, archive, tmp_path, capsys):
    state, base = server
    state.payload = archive
    to = tmp_path / "mvtec"
    assert _download(base, to, "0" * 64) == 2
    err = capsys.readouterr().err
    assert "SHA-256 mismatch" in err and "Manual route" in err and "0" * 64 in err
    assert list(to.iterdir()) == []  # no .part, no temp folder, no half-extracted category


def test_interrupted_download_resumes_with_range(server, archive, tmp_path):
    state, base = server
    state.payload, state.cut_first_after = archive, 5000
    to = tmp_path / "mvtec"
    assert len(archive) > 10000
    assert _download(base, to, hashlib.sha256(archive).hexdigest(), keep_archive=True) == 0
    assert [r["range"] for r in state.requests] == [None, "bytes=5000-"]
    assert hashlib.sha256((to / dl.MVTEC_ARCHIVE_NAME).read_bytes()).hexdigest() == hashlib.sha256(archive).hexdigest()
    assert (to / "bottle" / "test" / "broken" / "001.png").is_file()
    assert _leftovers(to) == []


def test_existing_partial_file_is_resumed(server, archive, tmp_path):
    state, base = server
    state.payload = archive
    to = tmp_path / "mvtec"
    to.mkdir()
    (to / (dl.MVTEC_ARCHIVE_NAME + ".part")).write_bytes(archive[:3000])
    assert _download(base, to, hashlib.sha256(archive).hexdigest()) == 0
    assert [r["range"] for r in state.requests] == ["bytes=3000-"]
    assert (to / "bottle" / "train" / "good" / "000.png").is_file()


def test_complete_partial_file_and_server_ignoring_range(server, archive, tmp_path):
    state, base = server
    state.payload = archive
    part = tmp_path / "a.part"
    part.write_bytes(archive)  # already complete: the server answers 416, nothing re-downloaded
    assert dl.fetch(base + ARCHIVE_PATH, part, retry_wait_s=0, timeout=5) == part
    assert part.read_bytes() == archive
    state.ignore_range = True  # a server without Range support: restart from zero, not append
    part.write_bytes(archive[:1000])
    dl.fetch(base + ARCHIVE_PATH, part, retry_wait_s=0, timeout=5)
    assert part.read_bytes() == archive


def test_unreachable_server_gives_offline_message(tmp_path, capsys):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    to = tmp_path / "mvtec"
    start = time.perf_counter()
    assert _download(f"http://127.0.0.1:{port}", to, "a" * 64) == 2
    assert time.perf_counter() - start < 10
    err = capsys.readouterr().err
    assert "cannot reach 127.0.0.1" in err and "Manual route" in err
    assert str(to / dl.MVTEC_ARCHIVE_NAME) in err and "--dataset mvtec" in err
    assert _leftovers(to) == []


def test_http_error_gives_manual_route(server, tmp_path, capsys):
    _, base = server
    assert dl.download_mvtec(tmp_path, base + "/moved.tar.xz", "a" * 64, retry_wait_s=0, timeout=5) == 2
    err = capsys.readouterr().err
    assert "HTTP 404" in err and "Manual route" in err and "--url" in err


def test_archive_placed_by_hand_is_used_without_network(archive, tmp_path):
    to = tmp_path / "mvtec"
    to.mkdir()
    (to / dl.MVTEC_ARCHIVE_NAME).write_bytes(archive)
    rc = dl.download_mvtec(to, "http://127.0.0.1:9/never-contacted", hashlib.sha256(archive).hexdigest(), timeout=1)
    assert rc == 0 and (to / "bottle" / "train" / "good" / "000.png").is_file()
    assert (to / dl.MVTEC_ARCHIVE_NAME).is_file()  # the user's file is theirs to delete


def test_unsafe_member_is_refused_and_nothing_extracted(tmp_path):
    bad = _mvtec_like_archive({"../escape.txt": b"outside"})
    path = tmp_path / "bad.tar.xz"
    path.write_bytes(bad)
    to = tmp_path / "out"
    with pytest.raises(dl.DownloadError, match="unsafe") as info:
        dl.extract_archive(path, to)
    assert isinstance(info.value.__cause__, tarfile.FilterError)  # refused by the "data" filter
    assert list(to.iterdir()) == [] and not (tmp_path / "escape.txt").exists()


def test_extract_unwraps_a_single_top_folder(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("MPDD/tubes/train/good/000.png")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    path = tmp_path / "w.tar.gz"
    path.write_bytes(buf.getvalue())
    dl.extract_archive(path, tmp_path / "out")
    assert (tmp_path / "out" / "tubes" / "train" / "good" / "000.png").read_bytes() == b"abc"


def test_mpdd_prints_steps_then_verifies(tmp_path, capsys):
    to = tmp_path / "mpdd"
    assert dl.download_mpdd(to) == 2
    captured = capsys.readouterr()
    assert "github.com/stepanje/MPDD" in captured.out and "bracket_black" in captured.out
    assert str(to / "bracket_black" / "ground_truth") in captured.out
    assert "nothing to verify yet" in captured.err
    rng = np.random.default_rng(1)
    for split in ("train/good", "test/good", "test/hole"):
        folder = to / "tubes" / split
        folder.mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / "000.png")
    (to / "tubes" / "ground_truth" / "hole").mkdir(parents=True)
    Image.fromarray(np.full((24, 24), 255, np.uint8)).save(to / "tubes" / "ground_truth" / "hole" / "000_mask.png")
    assert dl.download_mpdd(to) == 0
    (to / "tubes" / "ground_truth" / "hole" / "000_mask.png").unlink()  # defect image without its mask
    assert dl.download_mpdd(to) == 2


def test_cli(server, archive, tmp_path, capsys):
    state, base = server
    state.payload = archive
    parser = argparse.ArgumentParser()
    dl.register_cli(parser.add_subparsers(dest="command"))
    to = tmp_path / "cli"
    args = parser.parse_args(
        [
            "download",
            "--dataset",
            "mvtec",
            "--to",
            str(to),
            "--url",
            base + ARCHIVE_PATH,
            "--sha256",
            hashlib.sha256(archive).hexdigest(),
            "--timeout",
            "5",
        ]
    )
    assert args.func(args) == 0 and (to / "bottle").is_dir()
    bad = parser.parse_args(["download", "--dataset", "mvtec", "--to", str(tmp_path / "x"), "--sha256", "xyz"])
    assert bad.func(bad) == 2 and "64 hex digits" in capsys.readouterr().err
    mpdd = parser.parse_args(
        ["download", "--dataset", "mpdd", "--to", str(tmp_path / "m"), "--url", base + ARCHIVE_PATH]
    )
    assert mpdd.func(mpdd) == 2 and "no published checksum" in capsys.readouterr().err
    assert dl.MVTEC_URL.endswith(dl.MVTEC_ARCHIVE_NAME) and re.fullmatch(r"[0-9a-f]{64}", dl.MVTEC_SHA256)
