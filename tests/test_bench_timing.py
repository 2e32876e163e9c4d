"""benchmarks/timing.py: interleaving order, min/median statistics, thread setting (no timed assertions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_timing", REPO_ROOT / "benchmarks" / "timing.py")
timing = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = timing
_spec.loader.exec_module(timing)


def test_sides_are_interleaved_in_rotating_order():
    calls = []
    sides = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    stats = timing.interleaved(sides, repeats=4)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert set(stats) == {"a", "b", "c"} and all(s.repeats == 4 for s in stats.values())
    with pytest.raises(ValueError, match="repeats"):
        timing.interleaved(sides, repeats=0)


def test_stats_min_and_median_of_both_clocks():
    samples = [timing.Sample(wall=w, cpu=c) for w, c in ((3.0, 1.0), (1.0, 2.0), (2.0, 4.0), (10.0, 3.0))]
    stats = timing.Stats.of(samples)
    assert (stats.wall_min, stats.wall_median, stats.cpu_min, stats.cpu_median) == (1.0, 2.5, 1.0, 2.5)
    assert stats.seconds("cpu") == stats.cpu_median and stats.seconds("wall") == stats.wall_median
    assert timing.ratio_clock("cpu") == "cpu" and timing.ratio_clock("cuda") == "wall"


def test_measure_counts_process_cpu_time_not_sleep():
    import time

    sample = timing.measure(lambda: time.sleep(0.05))
    assert sample.wall >= 0.05 and sample.cpu < sample.wall


def test_configure_threads_and_load_line():
    previous = torch.get_num_threads()
    try:
        assert timing.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
    line = timing.load_line("start")
    assert line.startswith("# load average at start:") and "CPUs" in line
