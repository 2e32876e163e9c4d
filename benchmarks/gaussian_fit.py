"""Benchmark: per-position Gaussian fit + Mahalanobis scoring, ours vs the authors' loop.

Same random inputs for every contender, shapes of the real setting by default: C = 448 channels,
56x56 = 3136 positions, N = k*22 = 176 augmented supports (k=8), 83 test images.

Contenders
* authors: the per-position NumPy loop of PaDiM/RegAD — ``np.cov`` + ``np.linalg.inv`` per position
  (fit) and ``scipy.spatial.distance.mahalanobis`` per position and test sample (scoring). If the
  whole loop would take longer than ``--authors-budget`` seconds it is run on evenly spaced
  positions only and extrapolated linearly to all positions (the table says so).
* ours lowrank: fsad.gaussian.PositionalGaussian(method="lowrank") (float32 residual form).
* ours full: the chunked C x C form (method="full", float32 QR of [A; sqrt(eps) I]).

Timing (``benchmarks/timing.py``): the contenders run interleaved repeat by repeat in rotating order, with
process CPU time beside wall time, one BLAS/torch thread each (no oversubscription; the authors' NumPy loop
gets the same single BLAS thread), and the median and minimum of ``--repeats`` are reported; speed-ups are
ratios of median CPU seconds (wall-time ratios beside them).

Peak memory of our fit + scoring: on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated
before the fit; on CPU the growth of the RSS of a fresh subprocess that makes the support and test features
and then fits and scores (peak RSS after resetting the high-water mark via /proc/self/clear_refs, minus the
RSS before the fit, i.e. the inputs excluded; RSS includes allocator slack, so it bounds tensor memory from
above).

Usage:
    python benchmarks/gaussian_fit.py                      # full size (slow on CPU)
    python benchmarks/gaussian_fit.py --positions 784      # 28x28 positions
    python benchmarks/gaussian_fit.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.spatial.distance import mahalanobis

sys.path.insert(0, str(Path(__file__).resolve().parents[0]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import Stats, configure_threads, interleaved, load_line, ratio_clock  # noqa: E402

from fsad.gaussian import GAUSSIAN_EPS, PositionalGaussian  # noqa: E402
from fsad.utils import resolve_device, synchronize  # noqa: E402

VIEWS_PER_IMAGE = 22  # RegAD support augmentation (fsad.augment.views_per_image())


def spatial_shape(positions: int) -> tuple[int, int]:
    side = math.isqrt(positions)
    return (side, side) if side * side == positions else (positions, 1)


def make_features(args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = spatial_shape(args.positions)
    gen = torch.Generator().manual_seed(args.seed)
    n = args.k * VIEWS_PER_IMAGE
    # Generated straight into their final shape so no temporary inflates the RSS baseline.
    support = torch.randn(n, args.channels, h, w, generator=gen).to(device)
    test = torch.randn(args.test_images, args.channels, h, w, generator=gen).to(device)
    return support, test


def authors_loop(support: np.ndarray, test: np.ndarray, positions: np.ndarray, eps: float):
    """PaDiM/RegAD reference loop on the given positions; returns (fit_s, score_s, distances[M, len])."""
    n, c, _ = support.shape
    eye = np.identity(c)
    t0 = time.perf_counter()
    params = []
    for p in positions:
        x = support[:, :, p]
        params.append((x.mean(0), np.linalg.inv(np.cov(x, rowvar=False) + eps * eye)))
    t1 = time.perf_counter()
    dist = np.empty((test.shape[0], positions.size))
    for j, p in enumerate(positions):
        mean, inv = params[j]
        dist[:, j] = [mahalanobis(sample[:, p], mean, inv) for sample in test]
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, dist


def time_ours(method: str, support: torch.Tensor, test: torch.Tensor, device: torch.device, memory_budget: int):
    synchronize(device)
    t0 = time.perf_counter()
    g = PositionalGaussian().fit(support, eps=GAUSSIAN_EPS, method=method, memory_budget=memory_budget)
    synchronize(device)
    t1 = time.perf_counter()
    d = g.mahalanobis(test)
    synchronize(device)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, d, g


def state_bytes(g: PositionalGaussian) -> int:
    return sum(v.numel() * v.element_size() for v in g.state_dict().values() if isinstance(v, torch.Tensor))


def measure_fit_memory_cpu(args: argparse.Namespace, method: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--positions",
        str(args.positions),
        "--channels",
        str(args.channels),
        "--k",
        str(args.k),
        "--test-images",
        str(args.test_images),
        "--seed",
        str(args.seed),
        "--device",
        "cpu",
        "--memory-budget",
        str(args.memory_budget),
        "--_memory-child",
        method,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def memory_child(args: argparse.Namespace) -> None:
    support, test = make_features(args, torch.device("cpu"))
    PositionalGaussian().fit(support[..., :1, :1], method=args._memory_child).mahalanobis(test[..., :1, :1])
    # Reset the kernel's high-water mark (Linux >= 4.0) so the peak is the fit's, not the imports'.
    try:
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    rss0 = _proc_status_kib("VmRSS") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = PositionalGaussian().fit(support, method=args._memory_child, memory_budget=args.memory_budget)
    g.mahalanobis(test)
    peak = _proc_status_kib("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "peak_extra_bytes": (peak - rss0) * 1024,
                "state_bytes": state_bytes(g),
                "method": "VmHWM after clear_refs" if reset else "ru_maxrss delta",
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--positions", type=int, default=56 * 56, help="spatial positions (square -> HxW)")
    parser.add_argument("--channels", type=int, default=448)
    parser.add_argument("--k", type=int, default=8, help="support images; N = k*22 augmented views")
    parser.add_argument("--test-images", type=int, default=83)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--authors-budget",
        type=float,
        default=20.0,
        help="seconds per repeat allowed for the authors' loop before it is subsampled and extrapolated",
    )
    parser.add_argument("--memory-budget", type=int, default=1 << 30, help="bytes of working memory per chunk")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median and min reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (default 1)")
    parser.add_argument("--_memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    configure_threads(args.threads)
    if args._memory_child:
        memory_child(args)
        return

    device = resolve_device(args.device)
    clock = ratio_clock(device)
    support, test = make_features(args, device)
    n, c, h, w = support.shape
    p = h * w
    print(
        f"# Gaussian fit + scoring: N={n} supports (k={args.k} x {VIEWS_PER_IMAGE} views), C={c}, "
        f"positions={p} ({h}x{w}), M={test.shape[0]} test images, device={device}, "
        f"torch {torch.__version__}, threads={torch.get_num_threads()}, {args.repeats} interleaved repeats"
    )
    print(load_line("start"))

    # --- ours (warm-up once on a few positions so lazy init is not timed)
    PositionalGaussian().fit(support[..., :1, :1]).mahalanobis(test[..., :1, :1])
    methods = ("lowrank", "full")
    last: dict[str, tuple] = {}

    def ours(method: str) -> None:
        last[method] = time_ours(method, support, test, device, args.memory_budget)

    # --- authors' loop: calibrate on a few positions, subsample if the whole loop exceeds the budget
    s_np = support.reshape(n, c, p).double().cpu().numpy()
    t_np = test.reshape(test.shape[0], c, p).double().cpu().numpy()
    calib = np.linspace(0, p - 1, min(p, 8)).round().astype(int)
    cf, cs, _ = authors_loop(s_np, t_np, calib, GAUSSIAN_EPS)
    per_pos = (cf + cs) / calib.size
    if per_pos * p <= args.authors_budget:
        chosen = np.arange(p)
    else:
        chosen = np.unique(
            np.linspace(0, p - 1, max(calib.size, int(args.authors_budget / per_pos))).round().astype(int)
        )
    scale = p / chosen.size
    authors: dict[str, Any] = {}

    def authors_side() -> None:
        authors["fit"], authors["score"], authors["dist"] = authors_loop(s_np, t_np, chosen, GAUSSIAN_EPS)

    sides = {"authors": authors_side, **{m: (lambda m=m: ours(m)) for m in methods}}
    stats = interleaved(sides, args.repeats, device)
    note = (
        "measured on all positions"
        if chosen.size == p
        else (f"measured on {chosen.size} of {p} evenly spaced positions, extrapolated x{scale:.1f}")
    )

    results = {}
    for method in methods:
        fit_s, score_s, d, g = last[method]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            del g
            fit_s, score_s, d, g = time_ours(method, support, test, device, args.memory_budget)
            peak = torch.cuda.max_memory_allocated() - base
            how = "cuda max_memory_allocated during fit+score, minus inputs"
        else:
            mem = measure_fit_memory_cpu(args, method)
            peak = mem["peak_extra_bytes"]
            how = f"RSS peak growth of a subprocess during fit + scoring, inputs excluded ({mem['method']})"
        dist = d.reshape(d.shape[0], -1).double().cpu().numpy()
        results[method] = dict(
            stats=stats[method],
            fit=fit_s,
            score=score_s,
            peak=peak,
            how=how,
            state=state_bytes(g),
            chunk=g.chunk_size,
            maxrel=float(np.max(np.abs(dist[:, chosen] - authors["dist"]) / authors["dist"])),
        )
        del g

    a_stats: Stats = stats["authors"]
    a_tot = {k: a_stats.seconds(k) * scale for k in ("cpu", "wall")}
    a_min = {k: getattr(a_stats, f"{k}_min") * scale for k in ("cpu", "wall")}
    print(
        f"\nauthors' loop: {note}; 1 BLAS thread; fit/score split of the last repeat: "
        f"{authors['fit'] * scale:.1f} / {authors['score'] * scale:.1f} wall s"
    )
    header = (
        f"{'method':<22}{'cpu s':>9}{'(min)':>9}{'wall s':>9}{'(min)':>9}{'x cpu':>8}{'x wall':>8}"
        f"{'fit/score wall s':>18}{'peak MiB':>10}{'stored MiB':>12}{'max rel diff':>14}"
    )
    print(header)
    print("-" * len(header))
    print(
        f"{'authors (NumPy loop)':<22}{a_tot['cpu']:9.2f}{a_min['cpu']:9.2f}{a_tot['wall']:9.2f}{a_min['wall']:9.2f}"
        f"{1.0:8.1f}{1.0:8.1f}{'':>18}{'-':>10}{'-':>12}{'ref':>14}"
    )
    for method, r in results.items():
        st: Stats = r["stats"]
        split = f"{r['fit']:.2f} / {r['score']:.2f}"
        print(
            f"{'ours ' + method:<22}{st.cpu_median:9.2f}{st.cpu_min:9.2f}{st.wall_median:9.2f}{st.wall_min:9.2f}"
            f"{a_tot['cpu'] / st.cpu_median:8.1f}{a_tot['wall'] / st.wall_median:8.1f}{split:>18}"
            f"{r['peak'] / 2**20:10.0f}{r['state'] / 2**20:12.0f}{r['maxrel']:14.1e}"
        )
    print(load_line("end"))
    print(
        f"\n'x' = authors' seconds / ours (higher is faster; goal >= 10 on CPU), quoted on {clock} time. "
        f"Peak memory (goal <= 2048 MiB at k=8, 224 px, ResNet-18): {results['lowrank']['how']}. "
        f"Stored = tensors kept by the fitted model. Chunk sizes: lowrank {results['lowrank']['chunk']}, "
        f"full {results['full']['chunk']} positions (memory budget {args.memory_budget / 2**20:.0f} MiB)."
    )


if __name__ == "__main__":
    main()
