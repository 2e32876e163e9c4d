"""Forward time and parameter count of the RCM-FSAD ablation variants relative to plain RegAD.

The five rows of the RCM-FSAD paper's Table 7 (R18, +TAM, +MAM, +DCNv2, +MAM+DCNv2) are
built by :func:`fsad.costs.rcm_variant_costs` (the function notebook 07 uses) as
``RegADModel(backbone=--backbone, image_size=224, attention=..., dcn=...)`` with
random weights (speed and size do not depend on the weights), in one process, and timed
on the same random batch. Variants are timed round-robin (one forward of each per round)
so that drift in a shared machine's load hits every variant alike; the median over rounds
is reported.

Usage:
    python benchmarks/rcm_variants.py --device cpu --batch 8 --reps 5
    python benchmarks/rcm_variants.py --device cuda --reps 20 --json runs/rcm_variants.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsad.costs import rcm_variant_costs  # noqa: E402  (the same function notebook 07 uses)
from fsad.utils import atomic_write_json, environment_info, resolve_device  # noqa: E402


def run(
    device_name: str = "auto",
    batch: int = 8,
    image_size: int = 224,
    reps: int = 5,
    warmup: int = 1,
    seed: int = 0,
    backbone: str = "resnet18",
) -> dict:
    """Build every Table 7 variant, time ``forward`` (eval mode, no grad) and count parameters
    (:func:`fsad.costs.rcm_variant_costs`).

    Returns:
        dict with ``config``, ``rows`` (one per variant: label, attention, dcn, params, trainable_params,
        median_s, min_s, times_s and ratios to the first row) and ``environment``.
    """
    result = rcm_variant_costs(
        backbone=backbone, image_size=image_size, batch=batch, reps=reps, warmup=warmup, device=device_name, seed=seed
    )
    result["environment"] = environment_info(resolve_device(device_name))
    return result


def format_table(result: dict) -> str:
    cfg = result["config"]
    lines = [
        f"RCM-FSAD variants: {cfg['backbone']}, {cfg['image_size']} px, batch {cfg['batch']}, {cfg['device']}, "
        f"median/min of {cfg['reps']} forward passes (eval, no grad), random weights",
        f"{'variant':<15} {'median ms':>10} {'×1st':>6} {'min ms':>9} {'×1st':>6} {'params':>12} {'+params':>10} "
        f"{'params ×1st':>12} {'trainable':>11} {'train ×1st':>11}",
        "(trainable = with the backbone frozen, as the kit trains by default)",
    ]
    for row in result["rows"]:
        tr = f"{row['trainable_ratio']:.4f}" if row["trainable_ratio"] is not None else "n/a"
        lines.append(
            f"{row['label']:<15} {1e3 * row['median_s']:>10.1f} {row['time_ratio']:>6.3f} "
            f"{1e3 * row['min_s']:>9.1f} {row['min_time_ratio']:>6.3f} "
            f"{row['params']:>12,} {row['extra_params']:>10,} {row['params_ratio']:>12.5f} "
            f"{row['trainable_params']:>11,} {tr:>11}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="resnet18", help="resnet18 (the paper's R18) or mobilenet_v2")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here (atomically)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.device, args.batch, args.image_size, args.reps, args.warmup, args.seed, args.backbone)
    print(format_table(result))
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
