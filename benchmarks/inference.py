"""Inference throughput (test images -> anomaly maps) as a ratio to the backbone forward alone.

For each backbone and method the script fits the method once on k augmented supports (not timed), then
times, interleaved repeat by repeat with the baseline (median of ``--repeats``):

* **inference**: ``method.embed(test)`` + ``method.score_features(...)`` + ``fsad.anomaly_map.anomaly_maps``
  (bilinear upsampling + Gaussian blur σ=4) for ``--test-images`` images (83 = a typical MVTec category's test
  split), i.e. what ``fsad.evaluate`` times as ``inference_images_per_s``;
* **backbone forward**: the three backbone stages on the same images, in the faster of NCHW and channels_last
  layout — the cost any feature-based method pays.

ratio = (images/s of inference) / (images/s of the forward alone) (goal >= 0.85). Methods as in
``benchmarks/adaptation.py``: ``regad`` (untrained rotation_scale STNs, exact identity), ``regad-trainedSTN``
(non-zero STN weights: localisation nets and warps run), ``padim`` (no STN), ``patchcore`` (bank of the k plain
supports, no coreset: ``fsad.evaluate``'s default) and, on request, ``patchcore-A`` (bank of the k*22 views: its
nearest-neighbour search is 22x larger, ~145 s for 83 images with ResNet-18 on 2 CPU cores).

Usage:
    python benchmarks/inference.py                          # 83 images, 224 px, both backbones
    python benchmarks/inference.py --image-size 96 --test-images 16
    python benchmarks/inference.py --device cuda
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptation import METHOD_ROWS, best_forward, build_methods, timed  # noqa: E402
from fsad.anomaly_map import anomaly_maps  # noqa: E402
from fsad.utils import resolve_device  # noqa: E402


def run_backbone(backbone: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    size = args.image_size
    gen = torch.Generator().manual_seed(0)
    supports = torch.randn(args.k, 3, size, size, generator=gen).to(device)
    test = torch.randn(args.test_images, 3, size, size, generator=gen).to(device)
    methods = build_methods(backbone, size, device, args.methods)
    first = next(iter(methods.values()))
    extractor = first.model.backbone if hasattr(first, "model") else first.extractor
    forward, layout = best_forward(extractor, test, device)
    for method in methods.values():
        method.fit(supports)
        anomaly_maps(method.score_features(method.embed(test[:2])), size)  # warm-up

    def infer(method) -> None:
        with torch.no_grad():
            anomaly_maps(method.score_features(method.embed(test)), size)

    samples: dict[str, list[float]] = {"forward": [], **{row: [] for row in methods}}
    for _ in range(args.repeats):
        samples["forward"].append(timed(forward, device))
        for row, method in methods.items():
            samples[row].append(timed(lambda: infer(method), device))
    med = {key: statistics.median(values) for key, values in samples.items()}
    m = args.test_images
    return [dict(backbone=backbone, method=row, seconds=med[row], ips=m / med[row], fwd_ips=m / med["forward"],
                 ratio=med["forward"] / med[row], layout=layout) for row in methods]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--k", type=int, default=8, help="support images the methods are fitted on")
    parser.add_argument("--test-images", type=int, default=83)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--methods", nargs="+", default=[r for r in METHOD_ROWS if r != "patchcore-A"],
                        choices=METHOD_ROWS)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    print(f"# Inference (embed + score + anomaly maps) vs backbone forward alone: {args.test_images} images, "
          f"{args.image_size} px, fitted on k={args.k} (x22 views), device={device}, torch {torch.__version__}, "
          f"threads={torch.get_num_threads()}, median of {args.repeats}")
    header = f"{'backbone':<14}{'method':<18}{'infer s':>9}{'img/s':>8}{'fwd img/s':>11}{'ratio':>7}"
    print(header)
    print("-" * len(header))
    for backbone in args.backbones:
        for r in run_backbone(backbone, args, device):
            print(f"{r['backbone']:<14}{r['method']:<18}{r['seconds']:>9.2f}{r['ips']:>8.2f}{r['fwd_ips']:>11.2f}"
                  f"{r['ratio']:>7.2f}", flush=True)
        print(f"  ({backbone}: forward layout {r['layout']})")
    print("\nratio = inference images/s / backbone-forward images/s (goal >= 0.85).")


if __name__ == "__main__":
    main()
