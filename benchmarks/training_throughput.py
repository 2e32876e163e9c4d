"""Training throughput of registration training, as a ratio to the backbone's forward+backward alone.

For each configuration the script times, in the same process and on the same input tensors:

* **train step**: the full step of ``fsad.train`` (``registration_step_loss`` → ``zero_grad`` → ``backward`` →
  SGD ``step``) on a batch of B queries and their partners (B·(1+m) images: m = 1 for ``pair``, k for
  ``mean-of-k``), backbone frozen as in training (or fine-tuned with ``--train-backbone``);
* **backbone fwd+bwd**: the same backbone (all parameters trainable) on the same B·(1+m) images, forward
  through the three stages and backward from the sum of their means — the cost every registration
  trainer has to pay, whatever else it does.

ratio = (pairs/s of the train step) / (pairs/s of the backbone fwd+bwd); the project's goal is ≥ 0.8.
Data loading is excluded from both (images are decoded once and cached in memory by ``fsad.train``).

Usage (CPU, small):  python benchmarks/training_throughput.py --image-size 64 --batch-size 8
GPU, paper size:     python benchmarks/training_throughput.py --device cuda --image-size 224 --batch-size 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsad.models.regad import RegADModel  # noqa: E402
from fsad.train import DEFAULT_LR, DEFAULT_MOMENTUM, registration_step_loss  # noqa: E402
from fsad.utils import environment_info, resolve_device, synchronize  # noqa: E402


def _time_pair(fn_a, fn_b, device: torch.device, iters: int, warmup: int, repeats: int) -> tuple[float, float]:
    """Median seconds per call of two functions, timed in alternating blocks of ``iters`` calls so that load
    from other processes on a shared machine hits both alike."""
    for _ in range(warmup):
        fn_a()
        fn_b()
    samples: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for fn, store in ((fn_a, samples[0]), (fn_b, samples[1])):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            synchronize(device)
            store.append((time.perf_counter() - start) / iters)
    return statistics.median(samples[0]), statistics.median(samples[1])


def measure(
    backbone: str,
    image_size: int,
    batch_size: int,
    stn_mode: str | None,
    pairing: str,
    k: int,
    train_backbone: bool,
    device: torch.device,
    iters: int,
    warmup: int,
    repeats: int,
) -> dict:
    partners = 1 if pairing == "pair" else k
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    others = torch.randn(batch_size, partners, 3, image_size, image_size, generator=generator).to(device)

    model = RegADModel(backbone=backbone, image_size=image_size, stn_mode=stn_mode, seed=0).to(device)
    model.freeze_backbone(not train_backbone)
    model.train()
    optimizer = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=DEFAULT_LR, momentum=DEFAULT_MOMENTUM
    )

    def train_step() -> None:
        loss = registration_step_loss(model, query, others, pairing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    reference = RegADModel(backbone=backbone, image_size=image_size, stn_mode=None, seed=0).backbone.to(device)
    reference.train()
    images = torch.cat([query, others.flatten(0, 1)])

    def backbone_step() -> None:
        reference.zero_grad(set_to_none=True)
        outputs = reference(images)
        sum(o.mean() for o in outputs).backward()

    step_s, backbone_s = _time_pair(train_step, backbone_step, device, iters, warmup, repeats)
    return {
        "backbone": backbone,
        "image_size": image_size,
        "batch": batch_size,
        "stn": stn_mode or "none",
        "pairing": pairing if pairing == "pair" else f"mean-of-{k}",
        "backbone_trained": train_backbone,
        "images_per_step": len(images),
        "step_ms": 1e3 * step_s,
        "backbone_ms": 1e3 * backbone_s,
        "pairs_per_s": batch_size / step_s,
        "backbone_pairs_per_s": batch_size / backbone_s,
        "ratio": backbone_s / step_s,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", choices=("resnet18", "mobilenet_v2"))
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--k", type=int, default=2, help="k of the mean-of-k configuration")
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    info = environment_info(device)
    print(f"device {info.get('cuda_device_name', device)}, torch {info['torch']}, threads {torch.get_num_threads()}")

    configs = [
        ("rotation_scale", "pair", False),
        (None, "pair", False),
        ("rotation_scale", "mean-of-k", False),
        ("rotation_scale", "pair", True),
    ]
    rows = [
        measure(
            args.backbone,
            args.image_size,
            args.batch_size,
            stn,
            pairing,
            args.k,
            trained,
            device,
            args.iters,
            args.warmup,
            args.repeats,
        )
        for stn, pairing, trained in configs
    ]
    header = (
        f"{'stn':<15} {'pairing':<10} {'backbone':<9} {'img/step':>8} {'step ms':>9} {'pairs/s':>9} "
        f"{'bb fwd+bwd ms':>13} {'bb pairs/s':>10} {'ratio':>6}"
    )
    print(
        f"{args.backbone} {args.image_size}px, batch {args.batch_size} pairs; ratio = train-step pairs/s ÷ "
        "backbone fwd+bwd pairs/s on the same images (goal ≥ 0.8)"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['stn']:<15} {r['pairing']:<10} {'trained' if r['backbone_trained'] else 'frozen':<9} "
            f"{r['images_per_step']:>8} {r['step_ms']:>9.1f} {r['pairs_per_s']:>9.1f} {r['backbone_ms']:>13.1f} "
            f"{r['backbone_pairs_per_s']:>10.1f} {r['ratio']:>6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
