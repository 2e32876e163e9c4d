"""Model checkpoints: what training writes and evaluation reads, in a format that cannot run code when loaded.

A checkpoint records the model's constructor arguments (backbone, image size, STN mode, attention,
DCN), the category it must never have seen (``target``), the weights it started from and, when
written by training, the optimiser/scheduler/RNG state needed to resume.

Format ``fsad-checkpoint-v2`` (one file, written by :func:`save_checkpoint`)
-----------------------------------------------------------------------------
A ``torch.save`` file holding only a dict of three entries, so ``torch.load(weights_only=True)`` reads it
and no pickled object (no class, no function) is ever rebuilt from a user file:

* ``"format"``: the string ``"fsad-checkpoint-v2"``;
* ``"metadata"``: a JSON **string** with every non-tensor field (``model_config``, ``target``, ``dataset``,
  ``epoch``, ``train_config``, ``history``, ``weights``, the scheduler state, the optimiser's param groups,
  the RNG states ...). Where the checkpoint holds a tensor, the JSON holds ``{"__tensor__": NAME}``;
  dicts with integer keys (the optimiser's per-parameter state) are ``{"__int_keys__": {...}}`` and NumPy
  arrays (NumPy's RNG state) are ``{"__ndarray__": [...], "dtype": "uint32"}``;
* ``"tensors"``: ``{NAME: torch.Tensor}``, NAME being the dotted path of the tensor in the checkpoint
  (``model_state.backbone.conv1.weight``, ``optimizer.state.3.momentum_buffer``, ``rng.torch``; suffixed
  ``#N`` should two paths spell the same name).

Required keys: :data:`REQUIRED_KEYS`. Anything else (``fsad-checkpoint-v1``, a pickle holding other
objects) is refused by :func:`read_checkpoint` with one line; a v1 checkpoint is converted once with
``python -m fsad checkpoint convert OLD NEW`` (:func:`convert_checkpoint`), which reads it with
``weights_only=True`` too, allowing only the NumPy array types v1 stored its RNG state in.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fsad.errors import CheckpointError, OutputExistsError
from fsad.utils import atomic_torch_save

CHECKPOINT_FORMAT = "fsad-checkpoint-v2"
#: Older formats: pickled dicts that :func:`convert_checkpoint` turns into the current one.
LEGACY_FORMATS = ("fsad-checkpoint-v1",)
#: What every checkpoint must hold (training writes these and more).
REQUIRED_KEYS = ("model_config", "model_state", "target", "dataset", "epoch")

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "REQUIRED_KEYS",
    "check_compatible",
    "convert_checkpoint",
    "load_model",
    "read_checkpoint",
    "save_checkpoint",
]


def _unsafe_global(error: BaseException) -> str | None:
    """The Python object a pickle asked for that ``weights_only=True`` refused (None: not that kind of error)."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    if found:
        return found.group(1)
    return "a Python object" if "Weights only load failed" in str(error) else None


def _convert_hint(path: Path) -> str:
    return (
        f"if it is an older fsad checkpoint ({', '.join(LEGACY_FORMATS)}) that you trust, convert it once with "
        f"`python -m fsad checkpoint convert {path} NEW.pt` and pass NEW.pt"
    )


# --------------------------------------------------------------------------- encoding
def _encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of ``value`` with every tensor moved into ``tensors`` under its dotted path."""
    if isinstance(value, torch.Tensor):
        if name in tensors:  # a dotted key that spells another path: keep both, under distinct names
            name = f"{name}#{len(tensors)}"
        tensors[name] = value.detach().cpu()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        if value and all(isinstance(key, int) and not isinstance(key, bool) for key in value):
            return {"__int_keys__": {str(key): _encode(item, f"{name}.{key}", tensors) for key, item in value.items()}}
        if not all(isinstance(key, str) for key in value):
            raise TypeError(f"checkpoint field {name!r} has keys that are neither all str nor all int")
        return {key: _encode(item, f"{name}.{key}" if name else key, tensors) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(item, f"{name}.{i}", tensors) for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint field {name!r} holds a {type(value).__name__}, which the safe format cannot store")


def _decode(value: Any, tensors: dict[str, torch.Tensor], path: Path) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tensor__"}:
            name = value["__tensor__"]
            if name not in tensors:
                raise CheckpointError(
                    f"Checkpoint {path} is incomplete: tensor {name!r} is missing. Re-train it or copy the file again."
                )
            return tensors[name]
        if set(value) == {"__int_keys__"}:
            return {int(key): _decode(item, tensors, path) for key, item in value["__int_keys__"].items()}
        if set(value) == {"__ndarray__", "dtype"}:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {key: _decode(item, tensors, path) for key, item in value.items()}
    if isinstance(value, list):
        return [_decode(item, tensors, path) for item in value]
    return value


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` (a dict of tensors, numbers, strings, lists and dicts) atomically as ``fsad-checkpoint-v2``."""
    tensors: dict[str, torch.Tensor] = {}
    body = {key: item for key, item in state.items() if key != "format"}
    metadata = json.dumps(_encode(body, "", tensors))
    atomic_torch_save({"format": CHECKPOINT_FORMAT, "metadata": metadata, "tensors": tensors}, path)


# --------------------------------------------------------------------------- reading
def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a ``fsad-checkpoint-v2`` file with ``torch.load(weights_only=True)``; refuse anything else by name.

    Returns:
        The checkpoint as a dict (``format``, ``model_config``, ``model_state``, ``target``, ``dataset``,
        ``epoch`` and, from training, ``optimizer``, ``scheduler``, ``rng``, ``train_config``, ``history`` ...).

    Raises:
        CheckpointError: missing file; a file that needs unpickling (an older checkpoint, or a hostile
            pickle: nothing in it is run); unreadable or truncated; wrong format; missing keys or tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Train one with `python -m fsad train ... --out DIR` "
            "and pass DIR/last.pt, or evaluate without --checkpoint (the training-free 'A' row)."
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needed = _unsafe_global(error)
        if needed is None:
            raise CheckpointError(
                f"Checkpoint {path} cannot be read ({str(error).splitlines()[0] if str(error) else ''}); "
                "it may be truncated or not a fsad checkpoint."
            ) from None
        raise CheckpointError(
            f"Checkpoint {path} is not a {CHECKPOINT_FORMAT} file: loading it would unpickle "
            f"{needed}, and the kit never runs pickled code from a file; "
            f"{_convert_hint(path)}."
        ) from None
    except Exception as error:  # noqa: BLE001 - zip errors, truncation, EOF: all mean "unreadable"
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}); "
            "it may be truncated or not a fsad checkpoint."
        ) from None
    if isinstance(raw, dict) and raw.get("format") in LEGACY_FORMATS:
        raise CheckpointError(f"Checkpoint {path} is in the old {raw['format']} format; {_convert_hint(path)}.")
    if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint written by `python -m fsad train`.")
    if not isinstance(raw.get("metadata"), str) or not isinstance(raw.get("tensors"), dict):
        raise CheckpointError(
            f"Checkpoint {path} has the {CHECKPOINT_FORMAT} tag but lacks its 'metadata' (JSON "
            "string) or 'tensors' (dict) entry; re-train it or copy the file again."
        )
    try:
        metadata = json.loads(raw["metadata"])
    except json.JSONDecodeError as error:
        raise CheckpointError(f"Checkpoint {path}: its metadata is not valid JSON ({error}).") from None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"Checkpoint {path}: its metadata is not a JSON object.")
    payload = {"format": CHECKPOINT_FORMAT, **_decode(metadata, raw["tensors"], path)}
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(
            f"Checkpoint {path} lacks the key(s) {', '.join(missing)}; it was not written by "
            "`python -m fsad train` (or was edited). Re-train it."
        )
    if not isinstance(payload["model_config"], dict) or not isinstance(payload["model_state"], dict):
        raise CheckpointError(f"Checkpoint {path}: model_config and model_state must be dicts.")
    return payload


def check_compatible(payload: dict[str, Any], path: str | Path, **expected: Any) -> None:
    """Refuse a checkpoint whose model config or target differs from what the caller asks for.

    ``expected`` holds model-config keys (``backbone``, ``stn_mode``, ``attention``, ``dcn``,
    ``image_size``) and optionally ``target`` and ``dataset``. Every key given is checked, ``None``
    included (``stn_mode=None`` means "no STN", which an STN-trained checkpoint is not).
    """
    config = payload["model_config"]
    problems = []
    for key, want in expected.items():
        have = payload.get(key) if key in ("target", "dataset") else config.get(key)
        if have != want:
            problems.append(f"{key}: checkpoint has {have!r}, requested {want!r}")
    if problems:
        raise CheckpointError(
            f"Checkpoint {path} does not match the request: "
            + "; ".join(problems)
            + ". Pass matching options (e.g. --stn-mode / --backbone / --attention / --dcn), "
            "or train a checkpoint for this setting."
        )


def load_model(payload: dict[str, Any], path: str | Path | None = None) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights strictly.

    Raises:
        CheckpointError: the model config is invalid or the weights do not fit it (missing or unexpected
            tensors, wrong shapes); the message names ``path``.
    """
    from fsad.models.regad import RegADModel

    where = path if path is not None else "(checkpoint)"
    try:
        model = RegADModel(**payload["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"Checkpoint {where} has an invalid model_config ({error}).") from None
    try:
        model.load_state_dict(payload["model_state"])
    except RuntimeError as error:  # load_state_dict's report of missing/unexpected keys and shape mismatches
        detail = " ".join(str(error).split())
        raise CheckpointError(
            f"Checkpoint {where}: its weights do not fit its model_config ({detail[:300]}"
            f"{' ...' if len(detail) > 300 else ''}). Re-train it or copy the file again."
        ) from None
    return model


# --------------------------------------------------------------------------- conversion
def _legacy_safe_globals() -> list[Any]:
    """The only non-tensor types a v1 checkpoint holds: NumPy's RNG state array (uint32)."""
    from numpy._core.multiarray import _reconstruct

    return [_reconstruct, np.ndarray, np.dtype, np.dtypes.UInt32DType]


def convert_checkpoint(old: str | Path, new: str | Path, overwrite: bool = False) -> Path:
    """Convert a ``fsad-checkpoint-v1`` file into ``fsad-checkpoint-v2``.

    The old file is read with ``torch.load(weights_only=True)`` allowing only the NumPy array types that v1
    used for the RNG state: no other pickled object can be built, so a hostile file is refused, not run.

    Raises:
        CheckpointError: ``old`` missing, not a v1 checkpoint, or holding other objects.
        OutputExistsError: ``new`` exists and ``overwrite`` is False.
    """
    old, new = Path(old), Path(new)
    if not old.is_file():
        raise CheckpointError(f"Checkpoint {old} does not exist.")
    if new.exists() and not overwrite:
        raise OutputExistsError(f"{new} exists; choose another NEW path or pass --overwrite.")
    try:
        with torch.serialization.safe_globals(_legacy_safe_globals()):
            payload = torch.load(old, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        needed = _unsafe_global(error) or "unreadable pickle data"
        raise CheckpointError(
            f"{old} holds {needed}, which a {LEGACY_FORMATS[-1]} checkpoint does not; it is not "
            "converted (nothing in it was run)."
        ) from None
    except Exception as error:  # noqa: BLE001 - truncated / not a torch file
        raise CheckpointError(
            f"Checkpoint {old} cannot be read ({type(error).__name__}); it may be truncated or not a fsad checkpoint."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") not in LEGACY_FORMATS + (CHECKPOINT_FORMAT,):
        raise CheckpointError(f"{old} is not a fsad checkpoint ({', '.join(LEGACY_FORMATS)}).")
    if payload.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(f"{old} is already a {CHECKPOINT_FORMAT} checkpoint; nothing to convert.")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"Checkpoint {old} lacks the key(s) {', '.join(missing)}; it cannot be converted.")
    save_checkpoint(payload, new)
    read_checkpoint(new)  # the converted file must load
    return new
