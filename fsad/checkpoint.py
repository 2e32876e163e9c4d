"""Model checkpoints: what training writes and evaluation reads, with the checks that keep them honest.

A checkpoint records the model's constructor arguments (backbone, image size, STN mode, attention,
DCN), the category it must never have seen (``target``), the weights it started from and, when
written by training, the optimiser/scheduler/RNG state needed to resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FORMAT = "fsad-checkpoint-v1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for what was asked."""


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} does not exist. Train one with `python -m fsad train ... --out DIR` "
                              "and pass DIR/last.pt, or evaluate without --checkpoint (the training-free 'A' row).")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise CheckpointError(f"Checkpoint {path} cannot be read ({type(error).__name__}: {error}); "
                              "it may be truncated or not a fsad checkpoint.") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint written by `python -m fsad train`.")
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
        raise CheckpointError(f"Checkpoint {path} does not match the request: " + "; ".join(problems) +
                              ". Pass matching options (e.g. --stn-mode / --backbone / --attention / --dcn), "
                              "or train a checkpoint for this setting.")


def load_model(payload: dict[str, Any]) -> torch.nn.Module:
    """Rebuild the model a checkpoint describes and load its weights strictly."""
    from fsad.models.regad import RegADModel

    model = RegADModel(**payload["model_config"])
    model.load_state_dict(payload["model_state"])
    return model
