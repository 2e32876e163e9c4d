"""Writing results safely, with no torch import: checks that an output can be written before any work, atomic
writes (a reader never sees a half-written file) and strict JSON.

Kept apart from :mod:`fsad.utils` so that code that only writes files (the notebook batch runner, which every
Ray worker imports before its first cell) does not pay torch's two-second import.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fsad.errors import OutputError


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    A reader never sees a half-written file, and a crash leaves the old file intact.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path.cwd()


def _probe_writable(folder: Path, option: str, target: Path) -> None:
    """Create and delete a temporary file in ``folder``: the one check that also holds for root and read-only mounts."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(
            f"{option} {target}: cannot write in {folder} ({error.strerror or error}); "
            f"choose another {option} or fix the folder's permissions."
        ) from None


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that a results file can be written at ``path`` (its folders may not exist yet).

    Raises:
        OutputError: ``path`` is a folder, a parent is a file, or the folder is not writable; the message names
            ``option`` and the path.

    Example:
        >>> check_output_file("/tmp/fsad-example/results.json").name
        'results.json'
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{option} {path} is a folder; pass a file path such as {path / 'results.json'}.")
    ancestor = _existing_ancestor(path.parent)
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: {ancestor} is a file, not a folder; choose another {option}.")
    _probe_writable(ancestor, option, path)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Check, before any work, that ``path`` is (or can be created as) a writable folder.

    Raises:
        OutputError: ``path`` or a parent is a file, or the folder is not writable (option and path named).
    """
    path = Path(path)
    ancestor = _existing_ancestor(path)
    if not ancestor.is_dir():
        what = "is a file" if ancestor == path else f"is inside {ancestor}, which is a file"
        raise OutputError(f"{option} {path} {what}, not a folder; choose another {option}.")
    _probe_writable(ancestor, option, path)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON: NaN and infinities become ``null`` (bare ``NaN`` is not JSON, and strict
    readers such as ``jq`` or browsers reject it); readers treat ``null`` as a missing value."""
    text = json.dumps(json_safe(obj), indent=2, sort_keys=False, default=_json_default, allow_nan=False)
    atomic_write_text(path, text + "\n")


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf; Python or NumPy) replaced by ``None``, recursively.

    Example:
        >>> json_safe({"a": float("nan"), "b": [1.0, np.float32("inf")]})
        {'a': None, 'b': [1.0, None]}
    """
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")
