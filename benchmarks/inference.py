"""Inference throughput (test images -> anomaly maps and image scores) as a ratio to the backbone forward alone.

For each backbone and method the script fits the method once on k augmented supports (not timed), then runs,
interleaved repeat by repeat in rotating order, with process CPU time beside wall time and the median and
minimum of ``--repeats`` reported (``benchmarks/timing.py``; one intra-op thread by default):

* **embed**: ``method.embed(test)`` for ``--test-images`` images (83 = a typical MVTec category's test split);
* **score**: ``fsad.methods.maps_and_image_scores`` on those features (the method's distances, bilinear
  upsampling + Gaussian blur σ=4, image scores): what ``fsad.evaluate`` times beside ``embed`` for
  ``inference_images_per_s``;
* **backbone forward**: the three backbone stages on the same images, in the faster of NCHW and channels_last
  layout — the cost any feature-based method pays.

inference = embed + score (sum of the medians); ratio = forward seconds / inference seconds (= images/s of
inference over images/s of the forward alone; goal >= 0.85), quoted on CPU time (on CUDA: wall time). The
embed and score columns say where the time goes. Methods as in ``benchmarks/adaptation.py``: ``regad``
(untrained rotation_scale STNs, exact identity), ``regad-trainedSTN`` (non-zero STN weights: localisation nets
and warps run), ``padim`` (no STN), ``patchcore`` (bank of the k plain supports, no coreset: ``fsad.evaluate``'s
default) and, on request, ``patchcore-A`` (bank of the k*22 views: its nearest-neighbour search is 22x larger).

Usage:
    python benchmarks/inference.py                          # 83 images, 224 px, both backbones
    python benchmarks/inference.py --image-size 96 --test-images 16
    python benchmarks/inference.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adaptation import METHOD_ROWS, best_forward, build_methods  # noqa: E402
from timing import configure_threads, interleaved, load_line, ratio_clock  # noqa: E402

from fsad.methods import maps_and_image_scores  # noqa: E402
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
    features = {}
    with torch.no_grad():
        for row, method in methods.items():
            method.fit(supports)
            maps_and_image_scores(method, method.embed(test[:2]), size)  # warm-up
            features[row] = method.embed(test)

    def embed(method) -> None:
        with torch.no_grad():
            method.embed(test)

    def score(row) -> None:
        with torch.no_grad():
            maps_and_image_scores(methods[row], features[row], size)

    sides = {"forward": forward}
    for row, method in methods.items():
        sides[f"{row}:embed"] = lambda m=method: embed(m)
        sides[f"{row}:score"] = lambda r=row: score(r)
    stats = interleaved(sides, args.repeats, device)
    rows = []
    for row in methods:
        out = dict(backbone=backbone, method=row, layout=layout)
        for clock in ("cpu", "wall"):
            fwd = stats["forward"].seconds(clock)
            emb, sc = stats[f"{row}:embed"].seconds(clock), stats[f"{row}:score"].seconds(clock)
            low = getattr(stats[f"{row}:embed"], f"{clock}_min") + getattr(stats[f"{row}:score"], f"{clock}_min")
            out[clock] = dict(
                forward=fwd,
                embed=emb,
                score=sc,
                inference=emb + sc,
                inference_min=low,
                ratio=fwd / (emb + sc),
                ips=args.test_images / (emb + sc),
            )
        rows.append(out)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--k", type=int, default=8, help="support images the methods are fitted on")
    parser.add_argument("--test-images", type=int, default=83)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument(
        "--methods", nargs="+", default=[r for r in METHOD_ROWS if r != "patchcore-A"], choices=METHOD_ROWS
    )
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS intra-op threads (default 1)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    clock = ratio_clock(device)
    print(
        f"# Inference (embed + score + anomaly maps) vs backbone forward alone: {args.test_images} images, "
        f"{args.image_size} px, fitted on k={args.k} (x22 views), device={device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, {args.repeats} interleaved repeats; seconds are medians (min in "
        "brackets)"
    )
    print(load_line("start"))
    header = (
        f"{'backbone':<14}{'method':<18}{'fwd cpu s':>10}{'embed cpu':>10}{'score cpu':>10}"
        f"{'infer cpu s':>17}{'ratio cpu':>10}{'infer wall s':>18}{'ratio wall':>11}"
    )
    print(header)
    print("-" * len(header))
    for backbone in args.backbones:
        for r in run_backbone(backbone, args, device):
            c, w = r["cpu"], r["wall"]
            print(
                f"{r['backbone']:<14}{r['method']:<18}{c['forward']:>10.2f}{c['embed']:>10.2f}{c['score']:>10.2f}"
                f"{c['inference']:>9.2f} ({c['inference_min']:5.2f}){c['ratio']:>10.2f}"
                f"{w['inference']:>10.2f} ({w['inference_min']:5.2f}){w['ratio']:>11.2f}",
                flush=True,
            )
        print(f"  ({backbone}: forward layout {r['layout']})")
    print(load_line("end"))
    print(f"\nratio = backbone-forward seconds / inference seconds (goal >= 0.85), quoted on {clock} time.")


if __name__ == "__main__":
    main()
