"""PatchCore-k (Roth et al., CVPR 2022) on k supports; the method itself is :class:`fsad.patchcore.PatchCoreMethod`.

Its bank is plain unless augmentation is asked for: 22 views multiply its nearest-neighbour search by 22.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from fsad.config import option
from fsad.methods.registry import MethodSpec, register_method
from fsad.patchcore import BORDERS, IMAGE_SCORES, PatchCoreMethod


@dataclass(kw_only=True)
class PatchCoreOptions:
    """PatchCore's options (defaults: the authors' definitions)."""

    coreset_ratio: float | None = option(
        "--coreset-ratio",
        "PatchCore greedy coreset ratio (default: full bank)",
        default=None,
        type=float,
        valid=lambda ratio: ratio is None or 0 < ratio <= 1,
        requirement="must be in (0, 1], e.g. 0.1 keeps 10% of the bank",
    )
    patchcore_border: str = option(
        "--patchcore-border",
        "PatchCore 3x3 average at the border: zero padding counted (the authors') or only the existing neighbours",
        default=BORDERS[0],
        choices=BORDERS,
    )
    patchcore_image_score: str = option(
        "--patchcore-image-score",
        "PatchCore image score: max of the raw patch scores (the paper's), max of the blurred map, or Eq. 7 "
        "reweighting",
        default=IMAGE_SCORES[0],
        choices=IMAGE_SCORES,
    )


def build_patchcore(config: Any, model: torch.nn.Module) -> PatchCoreMethod:
    """PatchCore-k on the model's feature extractor (stages 2 and 3)."""
    return PatchCoreMethod(
        model.backbone,
        augment_families=config.augment_families,
        coreset_ratio=config.coreset_ratio,
        seed=config.seed,
        image_score=config.patchcore_image_score,
        border=config.patchcore_border,
    )


register_method(
    MethodSpec(
        name="patchcore",
        label="patchcore",
        description="nearest-neighbour memory bank",
        options_class=PatchCoreOptions,
        uses_stn=False,
        accepts_checkpoint=False,
        augments_by_default=False,
        build=build_patchcore,
    )
)
