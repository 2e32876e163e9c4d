"""Batch scaling: the same grid of CPU-bound notebook cells on the local executor and on Ray with 1 and 2 workers.

Measured in one run (same grid, same machine): ``--repeats`` rounds of local, Ray with 1 worker, Ray with 2
workers, interleaved so that a change in the machine's load hits all three alike; the minimum and the median of
each executor's wall time, the speed-up of 2 Ray workers over the local executor, and Ray's per-task overhead =
(wall with 1 Ray worker - local wall) / cells, per round and their median (Ray's start-up is timed apart and not
counted: it is paid once per run, not per task). The load average is printed at the start and the end. Goal (issue 18): speed-up
>= 1.7 with 2 workers on 2 cores for cells of >= 10 s; overhead <= 1 s per task.

Ray must stay on loopback: run it inside a private network namespace that holds only lo, as the tests do:

    unshare -n sh -c 'ip link set lo up && RAY_USAGE_STATS_ENABLED=0 RAY_enable_metrics_collection=0 \
        .venv/bin/python benchmarks/batch_scaling.py --cells 6 --seconds 10'
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import nbformat

# Busy for `seconds` of this process's CPU time: a fixed amount of work whatever the machine's load.
CELL = """
import json, pathlib, time
start, x = time.process_time(), 0
while time.process_time() - start < seconds:
    for i in range(10000):
        x = (x * 31 + i) % 1000003
cell = {"method": "regad", "category": "busy", "k": k, "run": 0, "image_auroc": x / 1000003}
(pathlib.Path(output_dir) / "r.json").write_text(json.dumps({"format": "fsad-results-v1", "cells": [cell]}))
"""


def write_grid(folder: Path, cells: int, seconds: float) -> Path:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("k = 0\nseconds = 1.0\noutput_dir = '.'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(CELL)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, folder / "busy.ipynb")
    grid = folder / "scaling.yaml"
    grid.write_text(
        json.dumps(
            {
                "name": "scaling",
                "parameters": {"seconds": seconds},
                "jobs": [{"notebook": str(folder / "busy.ipynb"), "grid": {"k": list(range(cells))}}],
            }
        )
    )
    return grid


def _ray_run(grid: Path, out: Path, workers: int, temp_dir: Path) -> tuple[float, float, list]:
    """(Ray start-up s, wall s of the batch, statuses) on a fresh local Ray instance with ``workers`` CPUs."""
    import ray

    from fsad.runner import run_batch

    started = time.perf_counter()
    ray.init(
        address="local",
        num_cpus=workers,
        _node_ip_address="127.0.0.1",
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(temp_dir),
    )
    startup = time.perf_counter() - started
    try:
        start = time.perf_counter()
        statuses, _ = run_batch(grid, out, executor="ray", progress=False)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    return startup, wall, statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=6, help="grid cells (notebook executions)")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU seconds of work per cell")
    parser.add_argument(
        "--repeats", type=int, default=3, help="rounds of local, Ray 1 worker, Ray 2 workers, interleaved"
    )
    args = parser.parse_args()

    from fsad.runner import run_batch

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    walls: dict[str, list[float]] = {"local": [], "ray, 1 worker": [], "ray, 2 workers": []}
    startups: dict[str, list[float]] = {"ray, 1 worker": [], "ray, 2 workers": []}
    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        folder = Path(tmp)
        grid = write_grid(folder, args.cells, args.seconds)
        # Interleaved, so that a change in the machine's load hits every executor alike.
        for repeat in range(args.repeats):
            start = time.perf_counter()
            statuses, _ = run_batch(grid, folder / f"local{repeat}", progress=False)
            walls["local"].append(time.perf_counter() - start)
            assert all(s["status"] == "done" for s in statuses)
            for workers in (1, 2):
                name = f"ray, {workers} worker{'s' if workers > 1 else ''}"
                startup, wall, statuses = _ray_run(grid, folder / f"ray{workers}_{repeat}", workers, folder / "ray")
                assert all(s["status"] == "done" for s in statuses)
                walls[name].append(wall)
                startups[name].append(startup)
            local = walls["local"][-1]
            print(
                f"repeat {repeat + 1}: local {local:.1f} s, ray 1 worker {walls['ray, 1 worker'][-1]:.1f} s, "
                f"ray 2 workers {walls['ray, 2 workers'][-1]:.1f} s (speed-up {local / walls['ray, 2 workers'][-1]:.2f})",
                flush=True,
            )
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.cells} cells of {args.seconds:g} CPU-s each (plus a kernel start per cell), {args.repeats} repeats")
    print("| executor | wall s, min | wall s, median | speed-up vs local (min / median) | Ray start-up s (median) |")
    print("|---|---|---|---|---|")
    local_min, local_median = min(walls["local"]), statistics.median(walls["local"])
    for name, values in walls.items():
        startup = f"{statistics.median(startups[name]):.1f}" if name in startups else ""
        print(
            f"| {name} | {min(values):.1f} | {statistics.median(values):.1f} | "
            f"{local_min / min(values):.2f} / {local_median / statistics.median(values):.2f} | {startup} |"
        )
    # Speed-up and overhead per repeat (each from one interleaved round), then their median.
    speedups = [a / b for a, b in zip(walls["local"], walls["ray, 2 workers"])]
    overheads = [(b - a) / args.cells for a, b in zip(walls["local"], walls["ray, 1 worker"])]
    print(
        f"speed-up with 2 workers per repeat: {', '.join(f'{x:.2f}' for x in speedups)} "
        f"(median {statistics.median(speedups):.2f})"
    )
    print(
        f"per-task overhead of Ray (1 worker vs local) per repeat: {', '.join(f'{x:+.2f}' for x in overheads)} s "
        f"(median {statistics.median(overheads):+.2f} s)"
    )


if __name__ == "__main__":
    main()
