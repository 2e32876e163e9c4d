"""Download MVTec AD (resumable, SHA-256-checked, safely extracted) and guide the manual MPDD step.

``python -m data_tools download --dataset mvtec --to DIR`` streams the publisher's archive into
``DIR/mvtec_anomaly_detection.tar.xz.part`` (resuming an interrupted download with an HTTP
``Range`` request), checks its SHA-256, extracts it into a temporary folder inside ``DIR`` with
tarfile's ``"data"`` filter (no absolute paths, ``..``, links out of the tree or device files),
moves the category folders into place and runs ``verify``. Nothing is extracted before the
hash matches; a mismatching download is deleted. Offline, refused or moved: exit 2 with the
manual route (browser download, put the archive at ``DIR``, rerun).

``python -m data_tools download --dataset mpdd --to DIR`` prints the manual steps (MPDD is only
published as a shared folder linked from its GitHub page) and verifies what is already at ``DIR``.

Only the standard library's ``urllib`` is used (no ``requests`` dependency).

Example:
    >>> from data_tools.download import fetch, sha256_of
    >>> part = fetch("http://127.0.0.1:8000/a.tar.xz", "/tmp/a.tar.xz.part")   # doctest: +SKIP
    >>> sha256_of(part)                                                         # doctest: +SKIP
    '9f86d0...'
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import lzma
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm.auto import tqdm

from data_tools.constants import MPDD_CATEGORIES, MVTEC_CATEGORIES
from fsad.errors import FsadError

#: The publisher's archive of all 15 categories. This is the link anomalib's MVTecAD datamodule
#: uses (it tracks MVTec's share links; the older ``shares/38536/...1629952094`` link that many
#: READMEs quote has been reported to answer 404). MVTec may move it: pass ``--url`` then.
MVTEC_URL = (
    "https://www.mydrive.ch/shares/150996/b52ecdcbf521176e9db9c731f2304b27/"
    "download/420938113-1629960298/mvtec_anomaly_detection.tar.xz"
)
MVTEC_ARCHIVE_NAME = "mvtec_anomaly_detection.tar.xz"
#: SHA-256 of the official archive as recorded by anomalib and by several independent projects
#: that downloaded it (all report 5,264,982,680 bytes). Not published by MVTec itself.
MVTEC_SHA256 = "cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d"
MVTEC_SIZE = 5_264_982_680
MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
MPDD_PAGE = "https://github.com/stepanje/MPDD"
#: The "Download link" on the MPDD README (a Brno University of Technology OneDrive folder).
MPDD_SHARE = (
    "https://vutbr-my.sharepoint.com/:f:/g/personal/xjezek16_vutbr_cz/"
    "EhHS_ufVigxDo3MC6Lweau0BVMuoCmhMZj6ddamiQ7-FnA?e=oHKCxI"
)

USER_AGENT = "fsad-kit-data_tools/1 (+python urllib)"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_CHUNK = 1 << 20


class DownloadError(FsadError, RuntimeError):
    """The archive could not be fetched or extracted (offline, refused, moved, corrupt)."""


class ChecksumError(DownloadError):
    """The archive's SHA-256 differs from the expected one."""


def sha256_of(path: str | os.PathLike, chunk_size: int = DEFAULT_CHUNK) -> str:
    """Hex SHA-256 of a file, read in chunks (a 5 GB archive never sits in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def _content_range_total(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(?:\d+-\d+|\*)/(\d+)", value or "")
    return int(match.group(1)) if match else None


def _content_range_start(value: str | None) -> int | None:
    match = re.match(r"bytes\s+(\d+)-\d+/", value or "")
    return int(match.group(1)) if match else None


# Errors that mean "the connection broke while reading": resume from where the file ends.
_STREAM_ERRORS = (http.client.IncompleteRead, http.client.HTTPException, ConnectionError, TimeoutError, socket.timeout)


def fetch(
    url: str,
    part_path: str | os.PathLike,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    chunk_size: int = DEFAULT_CHUNK,
    max_failures: int = 5,
    retry_wait_s: float = 2.0,
    progress: bool | None = None,
) -> Path:
    """Stream ``url`` into ``part_path``, resuming from the bytes already there (HTTP Range).

    A broken connection is resumed up to ``max_failures`` times in a row without progress
    (waiting ``retry_wait_s × attempt`` between tries); a server that ignores ``Range`` is
    re-downloaded from the start.

    Args:
        url: http(s) URL of the archive.
        part_path: the partial file (created or appended to).
        timeout: socket timeout in seconds per connect/read.
        chunk_size: bytes per read.
        max_failures: consecutive attempts without new bytes before giving up.
        retry_wait_s: back-off unit between attempts.
        progress: tqdm bar (``None``: only on a terminal).

    Returns:
        ``Path(part_path)`` holding the complete download.

    Raises:
        DownloadError: unreachable host, refused connection, HTTP 4xx/5xx, or too many failures.
    """
    part = Path(part_path)
    part.parent.mkdir(parents=True, exist_ok=True)
    failures, last_error = 0, "no attempt made"
    for _ in range(1000):  # hard bound; each iteration either makes progress or counts a failure
        if failures >= max_failures:
            break
        if failures:
            time.sleep(retry_wait_s * failures)
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
        except urllib.error.HTTPError as exc:
            total = _content_range_total(exc.headers.get("Content-Range") if exc.headers else None)
            exc.close()
            if exc.code == 416 and offset and total == offset:
                return part  # the .part already holds the whole file
            if exc.code == 416 and offset:  # .part longer than the file or stale: start again
                part.unlink()
                failures += 1
                last_error = f"HTTP 416 for a resume from byte {offset}; restarted"
                continue
            raise DownloadError(f"the server refused the download: HTTP {exc.code} {exc.reason} for {url}") from exc
        except (urllib.error.URLError, *_STREAM_ERRORS, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            if offset == 0 and failures == 0 and not isinstance(exc, _STREAM_ERRORS):
                # Nothing fetched yet and the host cannot be reached: offline, DNS or firewall.
                raise DownloadError(f"cannot reach {urllib.parse.urlsplit(url).netloc or url}: {reason}") from exc
            failures += 1
            last_error = f"connection failed: {reason}"
            continue
        with response:
            status = getattr(response, "status", 200)
            if status == 206:
                start = _content_range_start(response.headers.get("Content-Range"))
                if start != offset:
                    raise DownloadError(
                        f"the server answered a resume from byte {offset} with "
                        f"Content-Range {response.headers.get('Content-Range')!r}; delete {part} and retry"
                    )
                mode = "ab"
            else:
                if offset:
                    print(
                        f"note: {urllib.parse.urlsplit(url).netloc} ignored the resume request; "
                        "downloading from the start",
                        file=sys.stderr,
                    )
                offset, mode = 0, "wb"
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            received = 0
            with (
                open(part, mode) as sink,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name,
                    leave=False,
                    disable=None if progress is None else not progress,
                ) as bar,
            ):
                try:
                    while True:
                        block = response.read(chunk_size)
                        if not block:
                            break
                        sink.write(block)
                        received += len(block)
                        bar.update(len(block))
                except _STREAM_ERRORS:
                    pass  # resumed below from what reached the disk
        size = part.stat().st_size
        if total is None or size >= total:
            if total is not None and size > total:
                raise DownloadError(f"{part} holds {size} bytes, more than the {total} announced; delete it and retry")
            return part
        # Short read: the connection broke (or the server closed early, for which http.client
        # returns b"" rather than raising). Resume; only attempts without progress count.
        failures = failures + 1 if received == 0 else 0
        last_error = f"connection closed after {size} of {total} bytes"
    raise DownloadError(
        f"download of {url} kept failing ({max_failures} attempts without progress); "
        f"last error: {last_error}. The partial file {part} is kept: rerun to resume."
    )


def _unwrap(folder: Path) -> Path:
    """Archives sometimes wrap the categories in one extra folder: return the folder holding them."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        inner = entries[0]
        has_categories = any((c / "train").is_dir() or (c / "test").is_dir() for c in inner.iterdir() if c.is_dir())
        if has_categories and not (inner / "train").is_dir():
            return inner
    return folder


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> list[Path]:
    """Extract a tar archive safely into ``dest``: all-or-nothing.

    Members are unpacked into a temporary folder inside ``dest`` with tarfile's ``"data"`` filter
    (rejects absolute paths, ``..``, links pointing outside and device files); only when the whole
    archive extracted do its top-level entries replace those of the same name in ``dest``.

    Returns:
        The paths moved into ``dest``.

    Raises:
        DownloadError: corrupt/truncated archive or a member the safety filter rejects.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(tmp, filter="data")
        except (tarfile.TarError, EOFError, OSError, ValueError, lzma.LZMAError, zlib.error) as exc:
            raise DownloadError(f"cannot extract {archive} (corrupt or unsafe archive): {exc}") from exc
        moved = []
        for entry in sorted(_unwrap(tmp).iterdir()):
            target = dest / entry.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.replace(entry, target)
            moved.append(target)
        return moved
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download_and_extract(
    url: str,
    to: str | os.PathLike,
    archive_name: str,
    sha256: str | None,
    *,
    keep_archive: bool = False,
    **fetch_kwargs,
) -> list[Path]:
    """Fetch (or reuse ``to/archive_name`` placed by hand), check SHA-256, extract into ``to``.

    Args:
        url: archive URL.
        to: destination folder; the download goes to ``to/<archive_name>.part``.
        archive_name: file name of the archive.
        sha256: expected hex digest, or ``None`` to skip the check (the caller warns).
        keep_archive: keep the verified archive as ``to/<archive_name>`` instead of deleting it.
        **fetch_kwargs: passed to :func:`fetch`.

    Returns:
        The top-level paths extracted into ``to``.

    Raises:
        ChecksumError: hash mismatch (a downloaded ``.part`` is deleted; a hand-placed archive is kept).
        DownloadError: see :func:`fetch` and :func:`extract_archive`.
    """
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    placed = to / archive_name
    part = to / (archive_name + ".part")
    if placed.is_file():
        print(f"using the archive already at {placed} (no download)", file=sys.stderr)
        source, downloaded = placed, False
    else:
        source, downloaded = fetch(url, part, **fetch_kwargs), True
    if sha256:
        digest = sha256_of(source)
        if digest.lower() != sha256.lower():
            if downloaded:
                source.unlink()
            what = "deleted it" if downloaded else "left it in place; delete or replace it"
            raise ChecksumError(
                f"SHA-256 mismatch for {source}: got {digest}, expected {sha256.lower()}; "
                f"{what}. Nothing was extracted."
            )
    moved = extract_archive(source, to)
    if downloaded:
        if keep_archive:
            os.replace(source, placed)
        else:
            source.unlink()
    return moved


def _run_verify(root: Path, dataset: str) -> int:
    try:  # lazy: verify pulls in torch via data_tools.datasets
        from data_tools.verify import run_verify
    except ImportError as exc:  # pragma: no cover - only when verify.py is broken
        print(
            f"warning: could not import data_tools.verify ({exc}); run "
            f"`python -m data_tools verify --root {root} --dataset {dataset}` yourself.",
            file=sys.stderr,
        )
        return 0
    return run_verify(root, dataset, require_splits=("train", "test"))


def _mvtec_manual_route(to: Path) -> str:
    return (
        f"Manual route:\n"
        f"  1. In a browser open {MVTEC_PAGE}, accept the licence (CC BY-NC-SA 4.0, non-commercial) and\n"
        f"     download {MVTEC_ARCHIVE_NAME} ({MVTEC_SIZE:,} bytes, SHA-256 {MVTEC_SHA256}).\n"
        f"  2. Put it at {to / MVTEC_ARCHIVE_NAME} and rerun this command: it checks the hash and extracts\n"
        f"     without downloading (a partial {to / (MVTEC_ARCHIVE_NAME + '.part')} is resumed instead).\n"
        f"  3. Or extract it yourself so that {to / 'bottle' / 'train' / 'good'} exists, then run\n"
        f"     python -m data_tools verify --root {to} --dataset mvtec --require-splits train test\n"
        f"  If the publisher moved the file, pass --url NEW_URL (anomalib's MVTecAD datamodule tracks the "
        f"current link)."
    )


def download_mvtec(
    to: str | os.PathLike,
    url: str = MVTEC_URL,
    sha256: str | None = MVTEC_SHA256,
    *,
    skip_hash: bool = False,
    keep_archive: bool = False,
    **fetch_kwargs,
) -> int:
    """Download, check, extract and verify MVTec AD into ``to``; returns the CLI exit status.

    Returns:
        0 when the extracted dataset verifies, 2 on any download, hash, extraction or verify problem
        (the message on stderr says what to do).
    """
    to = Path(to).expanduser()
    if all((to / c).is_dir() for c in MVTEC_CATEGORIES):
        print(f"MVTec AD is already extracted at {to}; verifying it (delete the folders to download again).")
        return _run_verify(to, "mvtec")
    if skip_hash:
        sha256 = None
        print(
            "WARNING: --insecure-skip-hash: the archive's SHA-256 will NOT be checked; a truncated or "
            "tampered file would be extracted as is.",
            file=sys.stderr,
        )
    try:
        download_and_extract(url, to, MVTEC_ARCHIVE_NAME, sha256, keep_archive=keep_archive, **fetch_kwargs)
    except ChecksumError as exc:
        print(
            f"error: {exc}\nThe file at {url} is not the expected MVTec AD archive (corrupt transfer, a login "
            f"page, or a changed release).\n{_mvtec_manual_route(to)}",
            file=sys.stderr,
        )
        return 2
    except DownloadError as exc:
        print(f"error: could not download MVTec AD: {exc}\n{_mvtec_manual_route(to)}", file=sys.stderr)
        return 2
    print(f"extracted MVTec AD into {to}")
    return _run_verify(to, "mvtec")


def mpdd_instructions(to: str | os.PathLike) -> str:
    """The manual MPDD steps, with ``to`` filled in."""
    to = Path(to).expanduser()
    first = MPDD_CATEGORIES[0]
    return (
        f"MPDD has no direct archive to download; get it by hand:\n"
        f"  1. Open {MPDD_PAGE} and follow its 'Download link' (a Brno University of Technology\n"
        f"     OneDrive folder): {MPDD_SHARE}\n"
        f"  2. Download the dataset and unpack it so that {to} holds one folder per category\n"
        f"     ({', '.join(MPDD_CATEGORIES)}) in MVTec's layout:\n"
        f"       {to / first / 'train' / 'good' / '000.png'} ...\n"
        f"       {to / first / 'test' / 'good'}/ and {to / first / 'test' / '<defect>' / '000.png'}\n"
        f"       {to / first / 'ground_truth' / '<defect>' / '000_mask.png'}\n"
        f"     If the unpacked folder wraps the categories in an extra folder (e.g. MPDD/), move the\n"
        f"     category folders up into {to}.\n"
        f"  3. Licence: CC BY-NC-SA 4.0 (non-commercial); cite Jezek et al., ICUMT 2021.\n"
        f"  4. Rerun: python -m data_tools download --dataset mpdd --to {to}\n"
        f"     (or: python -m data_tools verify --root {to} --dataset mpdd --require-splits train test)"
    )


def download_mpdd(to: str | os.PathLike) -> int:
    """Print the manual MPDD steps, then verify ``to``: 0 when valid, 2 when not (yet)."""
    to = Path(to).expanduser()
    print(mpdd_instructions(to))
    present = [c for c in MPDD_CATEGORIES if (to / c).is_dir()]
    if not present:
        print(f"\nnothing to verify yet: no MPDD category folder under {to}.", file=sys.stderr)
        return 2
    print(f"\nverifying {to} ({len(present)} of {len(MPDD_CATEGORIES)} categories present)")
    return _run_verify(to, "mpdd")


def _cli(args: argparse.Namespace) -> int:
    fetch_kwargs = {"timeout": args.timeout}
    if args.dataset == "mpdd":
        if args.url:
            name = Path(urllib.parse.urlsplit(args.url).path).name or "mpdd_archive.tar"
            if not args.sha256 and not args.insecure_skip_hash:
                print(
                    "error: MPDD has no published checksum: pass --sha256 HEX for the archive at --url, "
                    "or --insecure-skip-hash to extract it unchecked.",
                    file=sys.stderr,
                )
                return 2
            if args.insecure_skip_hash:
                print("WARNING: --insecure-skip-hash: the archive's SHA-256 will NOT be checked.", file=sys.stderr)
            try:
                download_and_extract(
                    args.url,
                    args.to,
                    name,
                    None if args.insecure_skip_hash else args.sha256,
                    keep_archive=args.keep_archive,
                    **fetch_kwargs,
                )
            except DownloadError as exc:
                print(f"error: {exc}\n{mpdd_instructions(args.to)}", file=sys.stderr)
                return 2
            return _run_verify(Path(args.to), "mpdd")
        return download_mpdd(args.to)
    sha = args.sha256 or MVTEC_SHA256
    if not re.fullmatch(r"[0-9a-fA-F]{64}", sha):
        print(f"error: --sha256 must be 64 hex digits (got {sha!r}).", file=sys.stderr)
        return 2
    return download_mvtec(
        args.to,
        args.url or MVTEC_URL,
        sha,
        skip_hash=args.insecure_skip_hash,
        keep_archive=args.keep_archive,
        **fetch_kwargs,
    )


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``download`` sub-command to ``python -m data_tools``."""
    parser = subparsers.add_parser(
        "download",
        help="download + verify MVTec AD (resumable), or print the MPDD steps",
        description="MVTec AD: stream the publisher's archive with resume, check SHA-256, extract safely, verify. "
        "MPDD: print the manual download steps, then verify what is at --to. Exit 2 on any problem.",
    )
    parser.add_argument("--dataset", choices=("mvtec", "mpdd"), required=True)
    parser.add_argument("--to", type=Path, required=True, help="destination folder (the dataset root)")
    parser.add_argument("--url", default=None, help=f"archive URL (mvtec default: {MVTEC_URL})")
    parser.add_argument(
        "--sha256", default=None, help="expected SHA-256 of the archive (mvtec default: the official archive's)"
    )
    parser.add_argument(
        "--insecure-skip-hash", action="store_true", help="do not check the archive's SHA-256 (loud warning)"
    )
    parser.add_argument("--keep-archive", action="store_true", help="keep the verified archive in --to")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="socket timeout in seconds")
    parser.set_defaults(func=_cli)
    return parser
