"""Small shared helpers: devices, seeding, provenance records; the file helpers live in :mod:`fsad.files`
(re-exported here)."""

from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsad.errors import ConfigError, DeviceError
from fsad.files import (  # noqa: F401  (re-exported: fsad.utils was their home)
    atomic_path,
    atomic_write_json,
    atomic_write_text,
    check_output_dir,
    check_output_file,
    json_safe,
    sha256_file,
)


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
