"""Load-robust timing shared by the benchmarks: CPU time beside wall time, interleaved sides, min and median.

On a shared machine a neighbour's load stretches wall time (and by different amounts for the two sides of a
ratio, since it comes and goes), so a ratio of wall times can move by 2x between runs. The process's CPU time
(``time.process_time``: user + system time of all threads of this process) counts only the work this process
did; with one intra-op thread (the default here: :func:`configure_threads`) there is no spinning or
oversubscription to inflate it either. So the benchmarks:

* run the sides of every ratio interleaved repeat by repeat (:func:`interleaved`), in rotating order, so slow
  phases of the machine hit every side alike;
* record wall and CPU seconds of each call (:func:`measure`; on CUDA only wall time is meaningful, the CPU time
  of a process that waits for the GPU is not the GPU's work);
* report the minimum and the median of each (:class:`Stats`), and quote ratios of CPU time on CPU;
* print the load average at the start and the end (:func:`load_line`), so a reader sees what the run shared
  the machine with.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch

# Default intra-op threads of the benchmarks: one, so CPU time is the work done and nothing oversubscribes a
# shared machine (the per-position linear algebra of fsad.gaussian runs single-threaded anyway).
DEFAULT_THREADS = 1


def configure_threads(threads: int | None = DEFAULT_THREADS) -> int:
    """Set torch's intra-op threads and cap BLAS/OpenMP pools to the same number (no oversubscription)."""
    threads = int(threads or DEFAULT_THREADS)
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # NumPy/SciPy BLAS too (the authors' loop in gaussian_fit.py)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass
    return threads


def load_line(label: str) -> str:
    """``'# load average at <label>: 1.2 0.8 0.5 (1/5/15 min), 2 CPUs'``."""
    try:
        one, five, fifteen = os.getloadavg()
        load = f"{one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"
    except OSError:  # pragma: no cover - not on Linux/macOS
        load = "unavailable"
    return f"# load average at {label}: {load}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"


@dataclass
class Sample:
    wall: float
    cpu: float


def measure(fn: Callable[[], Any], device: torch.device | str = "cpu") -> Sample:
    """Wall and process-CPU seconds of one call of ``fn`` (synchronising CUDA before and after)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return Sample(time.perf_counter() - wall, time.process_time() - cpu)


@dataclass
class Stats:
    """Min and median of wall and CPU seconds over the repeats of one side."""

    wall_min: float
    wall_median: float
    cpu_min: float
    cpu_median: float
    repeats: int

    @classmethod
    def of(cls, samples: list[Sample]) -> "Stats":
        walls, cpus = [s.wall for s in samples], [s.cpu for s in samples]
        return cls(min(walls), statistics.median(walls), min(cpus), statistics.median(cpus), len(samples))

    def seconds(self, clock: str) -> float:
        """The figure ratios use: median CPU seconds (``clock="cpu"``) or median wall seconds (``"wall"``)."""
        return self.cpu_median if clock == "cpu" else self.wall_median


def interleaved(
    sides: dict[str, Callable[[], Any]], repeats: int, device: torch.device | str = "cpu"
) -> dict[str, Stats]:
    """Run every side once per repeat, rotating the order each repeat; return each side's :class:`Stats`."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    names = list(sides)
    samples: dict[str, list[Sample]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(measure(sides[name], device))
    return {name: Stats.of(values) for name, values in samples.items()}


def ratio_clock(device: torch.device | str) -> str:
    """``"cpu"`` on CPU (load-robust), ``"wall"`` on CUDA (the GPU's work is not this process's CPU time)."""
    return "wall" if torch.device(device).type == "cuda" else "cpu"


def fmt(stats: Stats) -> str:
    """``'cpu 1.23/1.25 wall 1.30/1.41'`` (min/median seconds)."""
    return f"cpu {stats.cpu_min:6.2f}/{stats.cpu_median:6.2f}  wall {stats.wall_min:6.2f}/{stats.wall_median:6.2f}"
