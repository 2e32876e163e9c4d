"""Forward time and parameter count of the RCM-FSAD ablation variants relative to plain RegAD.

The five rows of the RCM-FSAD paper's Table 7 (R18, +TAM, +MAM, +DCNv2, +MAM+DCNv2) are
built as ``RegADModel(backbone="resnet18", image_size=224, attention=..., dcn=...)`` with
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
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsad.utils import atomic_write_json, environment_info, resolve_device, seed_everything, synchronize  # noqa: E402

# Table 7 of the RCM-FSAD paper: (row label, attention kind, DCNv2 in the Siamese encoder).
VARIANTS: tuple[tuple[str, str, bool], ...] = (
    ("R18", "none", False),
    ("R18+TAM", "tam", False),
    ("R18+MAM", "mam", False),
    ("R18+DCNv2", "none", True),
    ("R18+MAM+DCNv2", "mam", True),
)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(all parameters, trainable parameters)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def run(device_name: str = "auto", batch: int = 8, image_size: int = 224, reps: int = 5, warmup: int = 1,
        seed: int = 0) -> dict:
    """Build every variant, time ``forward`` (eval mode, no grad) and count parameters.

    Returns:
        dict with ``rows`` (one per variant: label, attention, dcn, params, trainable_params,
        median_s, times_s and ratios to the R18 row) and ``environment``.
    """
    try:
        from fsad.models.regad import RegADModel
    except ImportError as exc:  # the model module is written separately; say what is missing
        raise RuntimeError(f"benchmarks/rcm_variants.py needs fsad.models.regad.RegADModel: {exc}") from exc
    if batch < 1 or reps < 1 or warmup < 0:
        raise ValueError(f"need batch >= 1, reps >= 1, warmup >= 0; got batch={batch}, reps={reps}, warmup={warmup}")
    device = resolve_device(device_name)
    seed_everything(seed)
    models = {}
    for label, attention, dcn in VARIANTS:
        models[label] = RegADModel(backbone="resnet18", image_size=image_size, attention=attention,
                                   dcn=dcn).to(device).eval()
        # The kit trains with the ImageNet backbone frozen (RegADModel.freeze_backbone); count trainable
        # parameters that way, which is what the added modules change in relative terms.
        models[label].freeze_backbone()
    x = torch.randn(batch, 3, image_size, image_size, generator=torch.Generator().manual_seed(seed)).to(device)
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
    for label, attention, dcn in VARIANTS:
        total, trainable = count_parameters(models[label])
        rows.append({"label": label, "attention": attention, "dcn": dcn, "params": total,
                     "trainable_params": trainable, "median_s": statistics.median(times[label]),
                     "min_s": min(times[label]),
                     "times_s": times[label]})
    base = rows[0]
    for row in rows:
        row["time_ratio"] = row["median_s"] / base["median_s"]
        # On a loaded shared CPU the minimum is the less noisy estimate; both are reported.
        row["min_time_ratio"] = row["min_s"] / base["min_s"]
        row["params_ratio"] = row["params"] / base["params"]
        row["extra_params"] = row["params"] - base["params"]
        row["trainable_ratio"] = row["trainable_params"] / base["trainable_params"] if base["trainable_params"] else None
    config = {"device": str(device), "batch": batch, "image_size": image_size, "reps": reps, "warmup": warmup,
              "seed": seed, "backbone": "resnet18", "weights": "random"}
    return {"config": config, "rows": rows, "environment": environment_info(device)}


def format_table(result: dict) -> str:
    cfg = result["config"]
    lines = [f"RCM-FSAD variants: resnet18, {cfg['image_size']} px, batch {cfg['batch']}, {cfg['device']}, "
             f"median/min of {cfg['reps']} forward passes (eval, no grad), random weights",
             f"{'variant':<15} {'median ms':>10} {'×R18':>6} {'min ms':>9} {'×R18':>6} {'params':>12} {'+params':>10} "
             f"{'params ×R18':>12} {'trainable':>11} {'train ×R18':>11}",
             "(trainable = with the backbone frozen, as the kit trains by default)"]
    for row in result["rows"]:
        tr = f"{row['trainable_ratio']:.4f}" if row["trainable_ratio"] is not None else "n/a"
        lines.append(f"{row['label']:<15} {1e3 * row['median_s']:>10.1f} {row['time_ratio']:>6.3f} "
                     f"{1e3 * row['min_s']:>9.1f} {row['min_time_ratio']:>6.3f} "
                     f"{row['params']:>12,} {row['extra_params']:>10,} {row['params_ratio']:>12.5f} "
                     f"{row['trainable_params']:>11,} {tr:>11}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu | cuda | cuda:N | auto (default)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--reps", type=int, default=5, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here (atomically)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = run(args.device, args.batch, args.image_size, args.reps, args.warmup, args.seed)
    print(format_table(result))
    if args.json is not None:
        atomic_write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
