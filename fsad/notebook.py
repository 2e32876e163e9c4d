"""What every notebook does first: resolve its parameters into data, device, backbone and an output folder.

Kept in the library so the notebooks stay narrative and all of them resolve defaults the same way
(d2l style: a function a later notebook needs is promoted here, never copy-pasted).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from fsad.errors import ConfigError, MissingFileError
from fsad.paths import runs_dir
from fsad.utils import environment_info, resolve_device, seed_everything


@dataclass
class NotebookContext:
    """Resolved notebook parameters.

    Attributes:
        data_root: dataset root (the synthetic set, generated if missing, when none was given).
        dataset: "synthetic", "mvtec" or "mpdd".
        device: torch device ("auto" resolved: CUDA when present).
        backbone: "resnet18" or "mobilenet_v2" ("auto": ResNet-18 if its ImageNet file is cached, else MobileNetV2).
        weights: "imagenet", "random" or a state-dict path.
        output_dir: where figures (``<output_dir>/figures``) and results files go.
        smoke: tiny sizes so the notebook runs in seconds (tests, CI).
        seed: seed of every stochastic step.
    """

    data_root: Path
    dataset: str
    device: torch.device
    backbone: str
    weights: str
    output_dir: Path
    smoke: bool
    seed: int

    def describe(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(data_root=str(self.data_root), output_dir=str(self.output_dir), device=str(self.device))
        return record


def setup(
    *,
    data_root: str | None,
    dataset: str,
    device: str = "auto",
    backbone: str = "auto",
    weights: str = "imagenet",
    output_dir: str | None = None,
    smoke: bool = False,
    seed: int = 0,
    notebook: str = "notebook",
) -> NotebookContext:
    """Resolve a notebook's parameters, seed everything and write ``<output_dir>/context.json``.

    Args:
        data_root: dataset root; None or "" means the embedded synthetic set (generated on first use).
        dataset: dataset kind of ``data_root``.
        device: "auto", "cpu", "cuda" or "cuda:N".
        backbone: "auto", "resnet18" or "mobilenet_v2".
        weights: "imagenet", "random" or a path.
        output_dir: output folder; None means ``<runs>/notebooks/<notebook>`` (:func:`fsad.paths.runs_dir`).
        smoke: tiny run for tests.
        seed: global seed.
        notebook: the notebook's name, for the default output folder.
    """
    from fsad.weights import default_backbone

    if not data_root:
        from data_tools.synthetic import ensure_synthetic_dataset

        if dataset != "synthetic":
            raise ConfigError(f"dataset={dataset!r} needs a data_root (the synthetic set is the only embedded one).")
        root = Path(ensure_synthetic_dataset(seed=0))
    else:
        root = Path(data_root).expanduser()
        if not root.is_dir():
            raise MissingFileError(
                f"data_root {root} does not exist. Use data_root=None for the synthetic set, or "
                "see README 'Getting MVTec AD and MPDD' (python -m data_tools download ...)."
            )
    resolved_backbone = default_backbone() if backbone == "auto" else backbone
    out = Path(output_dir) if output_dir else runs_dir() / "notebooks" / notebook
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(seed)
    context = NotebookContext(
        data_root=root,
        dataset=dataset,
        device=resolve_device(device),
        backbone=resolved_backbone,
        weights=weights,
        output_dir=out,
        smoke=smoke,
        seed=seed,
    )
    weights_note = "random init (explicit)" if weights == "random" else f"{weights} weights"
    print(
        f"{notebook}: dataset {dataset} at {root}; backbone {resolved_backbone} ({weights_note}); "
        f"device {context.device}; outputs in {out}{'; SMOKE mode' if smoke else ''}"
    )
    (out / "context.json").write_text(
        json.dumps(
            {"notebook": notebook, **context.describe(), "environment": environment_info(context.device)}, indent=2
        )
    )
    return context
