"""Batch scaling: the same grid of CPU-bound notebook cells on the local executor and on Ray with 1 and 2 workers.

Measured in one run (same grid, same machine, one after another): wall time of each executor, the speed-up of
2 Ray workers over the local executor, and Ray's per-task overhead = (wall with 1 Ray worker - local wall) / cells
(Ray's start-up is timed apart and not counted: it is paid once per run, not per task). Goal (issue 18): speed-up
>= 1.7 with 2 workers on 2 cores for cells of >= 10 s; overhead <= 1 s per task.

Ray must stay on loopback: run it inside a private network namespace that holds only lo, as the tests do:

    unshare -n sh -c 'ip link set lo up && RAY_USAGE_STATS_ENABLED=0 RAY_enable_metrics_collection=0 \
        .venv/bin/python benchmarks/batch_scaling.py --cells 6 --seconds 10'
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=6, help="grid cells (notebook executions)")
    parser.add_argument("--seconds", type=float, default=10.0, help="CPU seconds of work per cell")
    args = parser.parse_args()

    import ray

    from fsad.runner import run_batch

    with tempfile.TemporaryDirectory(prefix="scaling-") as tmp:
        folder = Path(tmp)
        grid = write_grid(folder, args.cells, args.seconds)
        rows = []
        start = time.perf_counter()
        statuses, _ = run_batch(grid, folder / "local", progress=False)
        local = time.perf_counter() - start
        assert all(s["status"] == "done" for s in statuses)
        rows.append(("local", 1, local, None))
        for workers in (1, 2):
            started = time.perf_counter()
            ray.init(
                address="local",
                num_cpus=workers,
                _node_ip_address="127.0.0.1",
                include_dashboard=False,
                log_to_driver=False,
                _temp_dir=str(folder / "ray"),
            )
            startup = time.perf_counter() - started
            start = time.perf_counter()
            statuses, _ = run_batch(grid, folder / f"ray{workers}", executor="ray", progress=False)
            wall = time.perf_counter() - start
            ray.shutdown()
            assert all(s["status"] == "done" for s in statuses)
            rows.append((f"ray, {workers} worker{'s' if workers > 1 else ''}", workers, wall, startup))
    print(f"{args.cells} cells of {args.seconds:g} CPU-s each (plus a kernel start per cell)")
    print("| executor | wall s | speed-up vs local | Ray start-up s |\n|---|---|---|---|")
    for name, _, wall, startup in rows:
        print(f"| {name} | {wall:.1f} | {local / wall:.2f} | {'' if startup is None else f'{startup:.1f}'} |")
    overhead = (rows[1][2] - local) / args.cells
    print(f"per-task overhead of Ray (1 worker vs local): {overhead:+.2f} s")


if __name__ == "__main__":
    main()
