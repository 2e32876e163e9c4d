"""Small shared helpers: devices, seeding, atomic file writes, provenance records."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from fsad.errors import ConfigError, DeviceError, OutputError


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda|cuda:N`` into a device, refusing CUDA when there is none.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    name = (name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name} was requested but CUDA is not available on this machine "
                f"(torch {torch.__version__}, torch.cuda.is_available() is False). "
                "Use --device cpu, or --device auto to pick CUDA only when present."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"Unknown device {name!r}: expected one of auto, cpu, cuda, cuda:N.")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def adopt_buffer_shapes(module: torch.nn.Module, state_dict: dict[str, Any], prefix: str) -> None:
    """Give ``module``'s own buffers the shape and dtype of the tensors ``state_dict`` holds for them.

    For fitted state (a Gaussian's factors, a memory bank) whose size is known only once fitted:
    ``nn.Module.load_state_dict`` copies into the existing buffers and refuses a different shape, so
    before it copies, every buffer whose incoming tensor differs in shape or dtype is replaced by an
    empty one of the incoming shape and dtype, on the buffer's current device. Keys, strictness and
    the copy itself stay torch's. Call it from a ``register_load_state_dict_pre_hook`` hook.
    """
    for name, buffer in module._buffers.items():
        incoming = state_dict.get(prefix + name)
        if not isinstance(incoming, torch.Tensor) or buffer is None:
            continue
        if incoming.shape != buffer.shape or incoming.dtype != buffer.dtype:
            module._buffers[name] = torch.empty(incoming.shape, dtype=incoming.dtype, device=buffer.device)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")


def git_commit() -> str | None:
    """The source checkout's commit (with ``+dirty`` for uncommitted changes), or None for an installed wheel.

    Results record it beside the kit version, so a number can be traced to the exact code that made it.
    """
    import subprocess

    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):  # no git binary, or not a repository after all
        return None
    return commit + ("+dirty" if dirty else "")


def environment_info(device: torch.device | None = None) -> dict[str, Any]:
    """Versions and hardware that a results file records, so every number says how it was made."""
    import scipy
    import sklearn
    import torchvision

    import fsad

    info: dict[str, Any] = {
        "fsad_kit": fsad.__version__,
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["cuda_device_name"] = torch.cuda.get_device_name(device)
    return info


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
