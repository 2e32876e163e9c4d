"""PatchCore-k (Roth et al., CVPR 2022) on k supports; the method itself is :class:`fsad.patchcore.PatchCoreMethod`.

Its bank is plain unless augmentation is asked for: 22 views multiply its nearest-neighbour search by 22.
"""

from __future__ import annotations

from typing import Any

import torch

from fsad.methods.registry import MethodSpec, register_method


def build_patchcore(config: Any, model: torch.nn.Module) -> Any:
    """PatchCore-k on the model's feature extractor (stages 2 and 3)."""
    from fsad.patchcore import PatchCoreMethod  # fsad.patchcore imports fsad.methods: imported when built

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
        options=(
            ("coreset_ratio", "--coreset-ratio"),
            ("patchcore_border", "--patchcore-border"),
            ("patchcore_image_score", "--patchcore-image-score"),
        ),
        uses_stn=False,
        accepts_checkpoint=False,
        augments_by_default=False,
        build=build_patchcore,
    )
)
