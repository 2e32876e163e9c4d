"""Adaptation time (k support images -> ready normal model) as a ratio to its compute bound.

For each backbone the script times, in the same process, interleaved repeat by repeat in rotating order (so
load from other processes on a shared machine hits every row alike), ``--repeats`` runs of the rows below,
recording process CPU time beside wall time (``benchmarks/timing.py``; one intra-op thread by default) and
reporting the median and the minimum:

* **adaptation**: ``method.fit(supports)`` of :class:`fsad.methods.GaussianMethod` (``regad``: RegADModel with
  rotation_scale STNs; ``padim``: no STN) and :class:`fsad.patchcore.PatchCoreMethod` (``patchcore``, bank of
  the same augmented views, no coreset): augmentation (k -> k*22 views) + forward + fit.
  ``regad-trainedSTN`` gives the STNs non-zero last-layer weights, so their localisation nets and warps run
  as they would for a trained checkpoint (an untrained STN is the exact identity and is skipped).
  ``patchcore`` banks the k plain supports (``fsad.evaluate``'s default), ``patchcore-A`` the k*22 views.
* **bound**: the work no implementation can avoid on the same shapes: the backbone forward of the same
  k*22 augmented images (the faster of NCHW and channels_last input) + one batched Gram GEMM and Cholesky
  (float32, as ``fsad.gaussian``) over all positions: B x B Gram of the centred supports when B = k*22 < C
  (the exact low-rank form of DESIGN.md), else the C x C covariance.
  PatchCore's bound is the forward alone of the images it embeds (its fit is a reshape).

ratio = adaptation / bound (goal <= 1.3), quoted on CPU time (on CUDA: wall time). Weights: ResNet-18 random (timing does not depend on the values;
the ImageNet file may be absent), MobileNetV2 the shipped ImageNet weights (``fsad.weights``).

Usage:
    python benchmarks/adaptation.py                         # k=8, 224 px, both backbones, 3 repeats
    python benchmarks/adaptation.py --image-size 96 --k 2   # quick
    python benchmarks/adaptation.py --device cuda
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import configure_threads, interleaved, load_line, measure, ratio_clock  # noqa: E402

from fsad.augment import AUGMENT_FAMILIES, augment_supports, views_per_image  # noqa: E402
from fsad.gaussian import GAUSSIAN_EPS  # noqa: E402
from fsad.methods import DEFAULT_FEATURE_BATCH, GaussianMethod  # noqa: E402
from fsad.models.backbone import STAGE_CHANNELS  # noqa: E402
from fsad.models.regad import RegADModel  # noqa: E402
from fsad.patchcore import PatchCoreMethod  # noqa: E402
from fsad.utils import resolve_device  # noqa: E402

METHOD_ROWS = ("regad", "regad-trainedSTN", "padim", "patchcore", "patchcore-A")
# PatchCore's bank is the plain k supports by default (fsad.evaluate: 22 views multiply its
# nearest-neighbour search by 22); "patchcore-A" banks the 22 augmented views like RegAD.
AUGMENTED = {"regad": True, "regad-trainedSTN": True, "padim": True, "patchcore": False, "patchcore-A": True}
# Positions per chunk of the bound's batched GEMM/Cholesky (same order as fsad.gaussian's CPU chunks).
BOUND_CHUNK = 32


def backbone_weights(backbone: str) -> tuple[dict | None, str]:
    """ResNet-18: random init (timing-neutral); MobileNetV2: the shipped ImageNet weights."""
    if backbone == "resnet18":
        return None, "random"
    from fsad.weights import load_backbone_weights

    state, info = load_backbone_weights(backbone, "imagenet")
    return state, info.kind


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of one call (used only to pick layouts/thread settings; tables use timing.interleaved)."""
    return measure(fn, device).wall


def forward_fn(
    extractor: torch.nn.Module, images: torch.Tensor, channels_last: bool, batch: int = DEFAULT_FEATURE_BATCH
) -> Callable[[], None]:
    """Backbone forward (three stages) of ``images`` in batches, nothing else."""
    fmt = torch.channels_last if channels_last else torch.contiguous_format

    @torch.no_grad()
    def run() -> None:
        for i in range(0, len(images), batch):
            extractor(images[i : i + batch].contiguous(memory_format=fmt))

    return run


def best_forward(extractor: torch.nn.Module, images: torch.Tensor, device: torch.device) -> tuple[Callable, str]:
    """The faster input layout for this backbone (one timed call each, after a warm-up batch)."""
    forward_fn(extractor, images[:2], False)()
    forward_fn(extractor, images[:2], True)()
    times = {
        name: timed(forward_fn(extractor, images, name == "channels_last"), device)
        for name in ("NCHW", "channels_last")
    }
    name = min(times, key=times.get)
    return forward_fn(extractor, images, name == "channels_last"), name


def gram_cholesky_fn(n: int, c: int, positions: int, device: torch.device, threads: int | None) -> Callable:
    """One batched Gram/covariance GEMM + Cholesky per position, float32 (as fsad.gaussian), chunked."""
    gen = torch.Generator().manual_seed(0)
    chunk = min(BOUND_CHUNK, positions) if device.type == "cpu" else positions
    a = torch.randn(chunk, n, c, generator=gen).to(device) / (max(n - 1, 1) ** 0.5)
    lowrank = n < c
    eye = torch.eye(n if lowrank else c, device=device)

    def run() -> None:
        old = torch.get_num_threads()
        if threads is not None:
            torch.set_num_threads(threads)
        try:
            for start in range(0, positions, chunk):
                m = min(chunk, positions - start)
                g = a[:m] @ a[:m].mT if lowrank else a[:m].mT @ a[:m]
                torch.linalg.cholesky(g + GAUSSIAN_EPS * eye)
        finally:
            torch.set_num_threads(old)

    return run


def best_linalg(n: int, c: int, positions: int, device: torch.device) -> tuple[Callable, str]:
    options = (
        {f"{t} thr": gram_cholesky_fn(n, c, positions, device, t) for t in sorted({1, torch.get_num_threads()})}
        if device.type == "cpu"
        else {"gpu": gram_cholesky_fn(n, c, positions, device, None)}
    )
    times = {name: timed(fn, device) for name, fn in options.items()}
    name = min(times, key=times.get)
    return options[name], name


def build_methods(backbone: str, image_size: int, device: torch.device, rows: list[str]) -> dict[str, Any]:
    state, _ = backbone_weights(backbone)
    methods: dict[str, Any] = {}
    for row in rows:
        stn = None if row.startswith(("padim", "patchcore")) else "rotation_scale"
        model = (
            RegADModel(backbone, image_size=image_size, stn_mode=stn, backbone_state_dict=state, seed=0)
            .to(device)
            .eval()
        )
        if row == "regad-trainedSTN":
            gen = torch.Generator().manual_seed(1)
            with torch.no_grad():  # small non-zero last layer: the STNs run as for a trained checkpoint
                for stn_module in model.stns:
                    w = stn_module.fc[-1].weight
                    w.copy_(1e-4 * torch.randn(w.shape, generator=gen))
        if row.startswith("patchcore"):
            methods[row] = PatchCoreMethod(model.backbone, augment_families=AUGMENT_FAMILIES if AUGMENTED[row] else ())
        else:
            methods[row] = GaussianMethod(
                model, augment_families=AUGMENT_FAMILIES, name="padim" if row == "padim" else "regad"
            )
    return methods


def run_backbone(backbone: str, args: argparse.Namespace, device: torch.device) -> list[dict]:
    size = args.image_size
    gen = torch.Generator().manual_seed(0)
    supports = torch.randn(args.k, 3, size, size, generator=gen).to(device)
    views = augment_supports(supports)
    n = len(views)
    c = sum(STAGE_CHANNELS[backbone])
    positions = (size // 4) ** 2
    methods = build_methods(backbone, size, device, args.methods)
    extractor = next(iter(methods.values()))
    extractor = extractor.model.backbone if hasattr(extractor, "model") else extractor.extractor
    forward, layout = best_forward(extractor, views, device)
    plain_forward = forward_fn(extractor, supports, layout == "channels_last")
    linalg, linalg_threads = best_linalg(n, c, positions, device)
    for method in methods.values():  # warm-up on one support (lazy init, kernel selection)
        method.fit(supports[:1])

    sides = {
        "forward": forward,
        "forward_k": plain_forward,
        "linalg": linalg,
        **{row: (lambda m=method: m.fit(supports)) for row, method in methods.items()},
    }
    stats = interleaved(sides, args.repeats, device)
    rows = []
    for row in methods:
        gaussian = not row.startswith("patchcore")
        fwd = stats["forward"] if AUGMENTED[row] else stats["forward_k"]
        out = dict(
            backbone=backbone,
            method=row,
            n=n if AUGMENTED[row] else args.k,
            c=c,
            layout=layout,
            linalg_threads=linalg_threads,
            form=("BxB" if n < c else "CxC") if gaussian else "-",
        )
        for clock in ("cpu", "wall"):
            linalg_s = stats["linalg"].seconds(clock) if gaussian else 0.0
            bound = fwd.seconds(clock) + linalg_s
            out[clock] = dict(
                adaptation=stats[row].seconds(clock),
                forward=fwd.seconds(clock),
                linalg=linalg_s,
                bound=bound,
                ratio=stats[row].seconds(clock) / bound,
                adaptation_min=getattr(stats[row], f"{clock}_min"),
            )
        rows.append(out)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--k", type=int, default=8, help="support images (x22 augmented views)")
    parser.add_argument("--repeats", type=int, default=3, help="median of this many interleaved runs")
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--methods", nargs="+", default=list(METHOD_ROWS), choices=METHOD_ROWS)
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS intra-op threads (default 1)")
    args = parser.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    clock = ratio_clock(device)
    n = args.k * views_per_image()
    print(
        f"# Adaptation (augment + forward + fit) vs bound (forward of the same {n} views + Gram GEMM + "
        f"Cholesky), k={args.k}, {args.image_size} px, device={device}, torch {torch.__version__}, "
        f"threads={torch.get_num_threads()}, {args.repeats} interleaved repeats; seconds are medians "
        f"(min in brackets), ratios of median {clock} seconds and of median wall seconds"
    )
    print(load_line("start"))
    header = (
        f"{'backbone':<14}{'method':<18}{'N':>5}{'C':>5}{'form':>6}{'adapt cpu s':>17}{'fwd cpu':>9}"
        f"{'gram+chol':>10}{'bound cpu':>10}{'ratio cpu':>10}{'adapt wall s':>18}{'ratio wall':>11}"
    )
    print(header)
    print("-" * len(header))
    for backbone in args.backbones:
        for r in run_backbone(backbone, args, device):
            c, w = r["cpu"], r["wall"]
            print(
                f"{r['backbone']:<14}{r['method']:<18}{r['n']:>5}{r['c']:>5}{r['form']:>6}"
                f"{c['adaptation']:>9.2f} ({c['adaptation_min']:5.2f}){c['forward']:>9.2f}{c['linalg']:>10.2f}"
                f"{c['bound']:>10.2f}{c['ratio']:>10.2f}{w['adaptation']:>10.2f} ({w['adaptation_min']:5.2f})"
                f"{w['ratio']:>11.2f}",
                flush=True,
            )
        print(f"  ({backbone}: bound forward layout {r['layout']}, Gram+Cholesky at {r['linalg_threads']})")
    print(load_line("end"))
    print(
        f"\nratio = adaptation / bound (goal <= 1.3), quoted on {clock} time. 'form' = the Gaussian's exact form "
        "(BxB low-rank when N < C, else CxC). PatchCore's bound is the forward alone of the N images it banks."
    )


if __name__ == "__main__":
    main()
