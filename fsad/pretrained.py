"""The shipped tutorial checkpoint: a small registration-trained RegAD the notebooks load by default.

``fsad/assets/tutorial_regad_mobilenet_v2.pt`` is a RegAD model (MobileNetV2 ImageNet backbone, frozen; the STNs and
Siamese heads trained) at 128 px, trained leave-one-category-out with target ``capsule`` on the real MVTec AD
``bottle`` and ``screw`` images of ``../shared/data`` by ``make tutorial-checkpoint`` (the exact command is in the
sidecar). It exists so that a student's first run shows what registration training does (maps, t-SNE, MPDD
``metal_plate`` scores) without waiting for a training run; ``train_from_scratch=True`` in notebooks 02–04 trains
instead.

Everything format-specific lives in two places only, so that a change of checkpoint format touches nothing else:

* the JSON sidecar ``tutorial_regad_mobilenet_v2.json`` beside the file: its SHA-256, size in bytes, checkpoint
  format tag, the command that made it and the training log (epoch mean losses);
* :func:`tutorial_checkpoint_path` / :func:`load_tutorial_checkpoint`: check the bytes against the sidecar, then read
  the file with the kit's own reader (:func:`fsad.checkpoint.read_checkpoint`).

The file is the kit's checkpoint payload without the resume state (optimiser, scheduler, RNG): the model's constructor
arguments and full state dict (the frozen backbone included, so ``python -m fsad evaluate --checkpoint`` and
:func:`fsad.checkpoint.load_model` use it unchanged), target, training categories, backbone-weights provenance and
history.

Example:
    >>> from fsad.checkpoint import load_model
    >>> payload = load_tutorial_checkpoint()
    >>> payload["target"], payload["model_config"]["image_size"]
    ('capsule', 128)
    >>> model = load_model(payload).eval()
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

from fsad.checkpoint import CHECKPOINT_FORMAT, CheckpointError, read_checkpoint, save_checkpoint
from fsad.utils import atomic_write_json, sha256_file

ASSETS = Path(__file__).resolve().parent / "assets"
TUTORIAL_CHECKPOINT = ASSETS / "tutorial_regad_mobilenet_v2.pt"
# The command that writes it (Makefile target `tutorial-checkpoint`; kept in the sidecar for provenance).
TUTORIAL_COMMAND = (
    "python -m data_tools combine ../shared/data/mvtec_ad_subset ../shared/data/mvtec_ad_256 --out runs/mvtec_real "
    "--dataset mvtec && OMP_NUM_THREADS=1 nice python -m fsad train --data-root runs/mvtec_real --dataset mvtec "
    "--target capsule --backbone mobilenet_v2 --weights imagenet --image-size 128 --epochs 20 --seed 0 "
    "--out runs/tutorial_checkpoint --resume --quiet && python -m fsad.pretrained export runs/tutorial_checkpoint/last.pt"
)
# Training-only state that a shipped, inference-only checkpoint does not need.
_RESUME_STATE = ("optimizer", "scheduler", "rng")


def sidecar_path(path: str | Path) -> Path:
    """The JSON sidecar of a checkpoint file (same name, ``.json``)."""
    return Path(path).with_suffix(".json")


def read_sidecar(path: str | Path = TUTORIAL_CHECKPOINT) -> dict[str, Any]:
    """The sidecar of ``path`` (SHA-256, size, format, command, training log)."""
    side = sidecar_path(path)
    if not side.is_file():
        raise CheckpointError(
            f"{side} is missing: the tutorial checkpoint ships with a JSON sidecar holding its SHA-256. "
            "Rebuild both with `make tutorial-checkpoint`."
        )
    return json.loads(side.read_text())


def tutorial_checkpoint_path(path: str | Path = TUTORIAL_CHECKPOINT) -> Path:
    """The tutorial checkpoint's path, after checking its size and SHA-256 against the sidecar.

    Raises:
        CheckpointError: file or sidecar missing, or bytes that differ from the ones the sidecar records.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"Tutorial checkpoint {path} is missing. Rebuild it with `make tutorial-checkpoint` "
            "(about 20 minutes on one CPU core, needs ../shared/data), or set "
            "train_from_scratch=True in the notebook."
        )
    side = read_sidecar(path)
    size = path.stat().st_size
    if size != side["size"]:
        raise CheckpointError(
            f"Tutorial checkpoint {path} has {size} bytes, its sidecar says {side['size']}: the "
            "file is truncated or replaced. Restore it (git checkout) or run `make tutorial-checkpoint`."
        )
    digest = sha256_file(path)
    if digest != side["sha256"]:
        raise CheckpointError(
            f"Tutorial checkpoint {path} has SHA-256 {digest}, its sidecar says {side['sha256']}. "
            "Restore it (git checkout) or run `make tutorial-checkpoint`."
        )
    return path


def load_tutorial_checkpoint(path: str | Path = TUTORIAL_CHECKPOINT) -> dict[str, Any]:
    """The verified tutorial checkpoint's payload (pass it to :func:`fsad.checkpoint.load_model`)."""
    path = tutorial_checkpoint_path(path)
    payload = read_checkpoint(path)
    expected = read_sidecar(path)["format"]
    if payload.get("format") != expected:
        raise CheckpointError(f"{path} holds format {payload.get('format')!r}, its sidecar says {expected!r}.")
    return payload


def export_tutorial_checkpoint(
    last: str | Path, out: str | Path = TUTORIAL_CHECKPOINT, command: str = TUTORIAL_COMMAND
) -> Path:
    """Write a training run's ``last.pt`` as a shippable checkpoint plus its sidecar.

    Drops the resume state (optimiser, scheduler, RNG), keeps everything inference and provenance need, and
    writes ``out`` and ``out.json`` atomically (``sha256``, ``size``, ``format``, ``command``, ``training_log``, ...).

    Args:
        last: a finished ``python -m fsad train`` checkpoint.
        out: where to write (default: the shipped asset).
        command: the command that produced ``last`` (recorded in the sidecar).
    """
    payload = read_checkpoint(last)
    train_config = payload.get("train_config", {})
    if int(payload.get("epoch", 0)) < int(train_config.get("epochs", 0)):
        raise CheckpointError(
            f"{last} stopped at epoch {payload.get('epoch')} of {train_config.get('epochs')}: "
            "finish the run (--resume) before exporting it."
        )
    slim = {key: value for key, value in payload.items() if key not in _RESUME_STATE}
    if isinstance(slim.get("weights"), dict) and slim["weights"].get("path"):
        # The training machine's absolute path means nothing elsewhere; the file name and SHA-256 identify it.
        slim["weights"] = {**slim["weights"], "path": Path(slim["weights"]["path"]).name}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(slim, out)  # the safe format: tensors + JSON metadata, read with weights_only=True
    history = payload.get("history", [])
    atomic_write_json(
        sidecar_path(out),
        {
            "file": out.name,
            "sha256": sha256_file(out),
            "size": out.stat().st_size,
            "format": CHECKPOINT_FORMAT,
            "command": command,
            "model_config": payload["model_config"],
            "target": payload["target"],
            "dataset": payload["dataset"],
            "train_categories": payload.get("train_categories"),
            "n_train_images": payload.get("n_train_images"),
            "backbone_weights": slim.get("weights"),
            "epochs": payload.get("epoch"),
            "train_config": {
                k: v for k, v in train_config.items() if k not in ("device", "num_workers", "cache_images")
            },
            "training_log": [
                {
                    "epoch": h["epoch"],
                    "mean_loss": round(float(h["mean_loss"]), 6),
                    "lr": float(h["lr"]),
                    "steps": h["steps"],
                    "seconds": round(float(h["seconds"]), 1),
                }
                for h in history
            ],
            "model_selection": payload.get("model_selection"),
        },
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fsad.pretrained", description="Export a training run as the shipped tutorial checkpoint."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    export = commands.add_parser("export", help="last.pt -> fsad/assets/tutorial_regad_mobilenet_v2.pt + .json")
    export.add_argument("last", help="a finished `python -m fsad train` checkpoint (OUT/last.pt)")
    export.add_argument("--out", default=str(TUTORIAL_CHECKPOINT), help="checkpoint to write (sidecar beside it)")
    args = parser.parse_args(argv)
    out = export_tutorial_checkpoint(args.last, args.out)
    side = read_sidecar(out)
    print(
        f"wrote {out} ({side['size']:,} bytes, SHA-256 {side['sha256']}) and {sidecar_path(out).name}; "
        f"final mean loss {side['training_log'][-1]['mean_loss']:+.4f} after {side['epochs']} epochs"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
