"""Forward time and parameter count of model variants, measured one way for benchmarks/ and the notebooks.

Variants are timed round-robin (one forward of each per round) in one process on the same batch, so drift in a
shared machine's load hits every variant alike; the median and the minimum over rounds are reported, with ratios
to the first variant. Used by ``benchmarks/rcm_variants.py`` and notebook 07 (the RCM-FSAD Table 7 variants).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from fsad.utils import resolve_device, seed_everything, synchronize

# Short names of the backbones in row labels: the papers' "R18" rows become e.g. "MNv2" when MobileNetV2 is used.
BACKBONE_SHORT = {"resnet18": "R18", "mobilenet_v2": "MNv2"}


def variant_label(name: str, backbone: str) -> str:
    """The RCM-FSAD Table 7 row name with the backbone actually used.

    Example:
        >>> variant_label("R18+MAM", "mobilenet_v2"), variant_label("R18", "resnet18")
        ('MNv2+MAM', 'R18')
    """
    short = BACKBONE_SHORT.get(backbone, backbone)
    return short + name[3:] if name.startswith("R18") else name


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    return (sum(p.numel() for p in model.parameters()), sum(p.numel() for p in model.parameters() if p.requires_grad))


def time_models(
    models: dict[str, torch.nn.Module], x: torch.Tensor, reps: int = 5, warmup: int = 1
) -> list[dict[str, Any]]:
    """Round-robin forward timing (eval mode, inference mode) and parameter counts.

    Returns:
        one row per model, in order: ``label``, ``params``, ``trainable_params``, ``median_s``, ``min_s``,
        ``times_s`` and the ratios ``time_ratio`` (median), ``min_time_ratio``, ``params_ratio``, ``extra_params``,
        ``trainable_ratio`` to the first row.

    Raises:
        ValueError: no model, ``reps < 1`` or ``warmup < 0``.
    """
    if not models or reps < 1 or warmup < 0:
        raise ValueError(
            f"need at least one model, reps >= 1, warmup >= 0; got {len(models)} models, reps={reps}, warmup={warmup}"
        )
    device = x.device
    times: dict[str, list[float]] = {label: [] for label in models}
    with torch.inference_mode():
        for round_index in range(warmup + reps):
            for label, model in models.items():
                synchronize(device)
                start = time.perf_counter()
                model(x)
                synchronize(device)
                if round_index >= warmup:
                    times[label].append(time.perf_counter() - start)
    rows = []
    for label, model in models.items():
        total, trainable = count_parameters(model)
        rows.append(
            {
                "label": label,
                "params": total,
                "trainable_params": trainable,
                "median_s": statistics.median(times[label]),
                "min_s": min(times[label]),
                "times_s": times[label],
            }
        )
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["median_s"] / base["median_s"]
        row["min_time_ratio"] = row["min_s"] / base["min_s"]  # less noisy on a loaded shared CPU
        row["params_ratio"] = row["params"] / base["params"]
        row["extra_params"] = row["params"] - base["params"]
        row["trainable_ratio"] = (
            row["trainable_params"] / base["trainable_params"] if base["trainable_params"] else None
        )
    return rows


def rcm_variant_costs(
    variants: dict[str, tuple[str, bool]] | None = None,
    backbone: str = "resnet18",
    image_size: int = 224,
    batch: int = 8,
    reps: int = 5,
    warmup: int = 1,
    device: str = "auto",
    seed: int = 0,
) -> dict[str, Any]:
    """Cost of the RCM-FSAD Table 7 variants: ``RegADModel(backbone, image_size, attention=..., dcn=...)`` each,
    random weights (speed and size do not depend on them), backbone frozen as the kit trains it.

    Args:
        variants: row name -> (attention, dcn); default :data:`fsad.paper.RCM_TABLE7_VARIANTS`.

    Returns:
        ``{"config": ..., "rows": [...]}``: :func:`time_models` rows with ``attention``, ``dcn`` and ``label``
        (:func:`variant_label`, the backbone actually used) added.
    """
    from fsad.models.regad import RegADModel
    from fsad.paper import RCM_TABLE7_VARIANTS

    variants = dict(variants or RCM_TABLE7_VARIANTS)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    resolved = resolve_device(device)
    seed_everything(seed)
    models = {}
    for name, (attention, dcn) in variants.items():
        model = RegADModel(backbone=backbone, image_size=image_size, attention=attention, dcn=dcn, seed=seed)
        model.freeze_backbone()
        models[variant_label(name, backbone)] = model.to(resolved).eval()
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)).to(resolved)
    rows = time_models(models, x, reps=reps, warmup=warmup)
    for row, (name, (attention, dcn)) in zip(rows, variants.items()):
        row.update(variant=name, attention=attention, dcn=dcn)
    config = {
        "device": str(resolved),
        "batch": batch,
        "image_size": image_size,
        "reps": reps,
        "warmup": warmup,
        "seed": seed,
        "backbone": backbone,
        "weights": "random",
    }
    return {"config": config, "rows": rows}
