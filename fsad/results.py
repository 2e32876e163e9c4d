"""Results files: one JSON per evaluation (config, provenance, one record per cell) and a CSV summary.

The JSON is rewritten atomically after every finished cell, so a crashed or interrupted run
resumes from the last cell it finished (``--resume``).
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fsad.utils import atomic_write_json, atomic_write_text

RESULTS_FORMAT = "fsad-results-v1"
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
TIMING_KEYS = ("adaptation_s", "inference_images_per_s")
CELL_KEY = ("method", "category", "k", "run")


def cell_id(cell: dict[str, Any]) -> tuple:
    return tuple(cell[key] for key in CELL_KEY)


class ResultsFile:
    """A results JSON that grows one cell at a time.

    Args:
        path: where the JSON lives; the CSV summary is written beside it (same stem, ``.csv``).
        header: config/provenance stored at the top of the file.
        resume: keep the cells of an existing file whose ``resume_key`` matches ``header``'s.
    """

    def __init__(self, path: str | Path, header: dict[str, Any], resume: bool = False) -> None:
        self.path = Path(path)
        self.header = header
        self.cells: list[dict[str, Any]] = []
        if resume and self.path.exists():
            previous = json.loads(self.path.read_text())
            if previous.get("resume_key") != header.get("resume_key"):
                raise ValueError(
                    f"--resume: {self.path} was written with a different configuration "
                    f"({previous.get('resume_key')} != {header.get('resume_key')}). "
                    "Use another --out, or drop --resume to overwrite it."
                )
            self.cells = list(previous.get("cells", []))

    def done(self) -> set[tuple]:
        return {cell_id(cell) for cell in self.cells}

    def add(self, cell: dict[str, Any]) -> None:
        self.cells = [c for c in self.cells if cell_id(c) != cell_id(cell)] + [cell]
        self.write()

    def document(self) -> dict[str, Any]:
        return {"format": RESULTS_FORMAT, **self.header, "cells": self.cells,
                "summary": summarise(self.cells)}

    def write(self) -> None:
        atomic_write_json(self.path, self.document())
        atomic_write_text(self.path.with_suffix(".csv"), summary_csv(summarise(self.cells)))


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and population std of the finite values (None/NaN skipped); NaN, NaN when none are left."""
    finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not finite:
        return float("nan"), float("nan")
    array = np.asarray(finite, dtype=float)
    return float(array.mean()), float(array.std(ddof=0))


def summarise(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over runs per (method, category, k), then the macro average over categories per (method, k)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["method"], cell["category"], cell["k"]), []).append(cell)
    rows = []
    for (method, category, k), members in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        row: dict[str, Any] = {"method": method, "category": category, "k": k, "runs": len(members)}
        for key in METRIC_KEYS + TIMING_KEYS:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([m.get(key) for m in members])
        rows.append(row)
    macro = []
    for method, k in sorted({(r["method"], r["k"]) for r in rows}):
        members = [r for r in rows if r["method"] == method and r["k"] == k]
        row = {"method": method, "category": "macro_average", "k": k, "runs": sum(r["runs"] for r in members)}
        for key in METRIC_KEYS + TIMING_KEYS:
            row[f"{key}_mean"], _ = mean_std([r[f"{key}_mean"] for r in members])
            row[f"{key}_std"] = float("nan")
        macro.append(row)
    return rows + macro


def summary_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0].keys()))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def format_table(rows: list[dict[str, Any]]) -> str:
    """Human-readable table of the summary (AUROCs in %, mean ± std)."""
    def pct(row: dict[str, Any], key: str) -> str:
        mean, std = row[f"{key}_mean"], row[f"{key}_std"]
        if mean is None or math.isnan(mean):
            return "—"
        return f"{100 * mean:5.1f}" + ("" if math.isnan(std) else f" ± {100 * std:4.1f}")

    header = f"{'method':<10} {'category':<16} {'k':>3} {'runs':>4}  {'image AUROC':>13}  {'pixel AUROC':>13}  {'AUPRO':>13}  {'adapt s':>8}  {'img/s':>7}"
    lines = [header, "-" * len(header)]
    for row in rows:
        adapt = row["adaptation_s_mean"]
        speed = row["inference_images_per_s_mean"]
        lines.append(
            f"{row['method']:<10} {row['category']:<16} {row['k']:>3} {row['runs']:>4}  {pct(row, 'image_auroc'):>13}  "
            f"{pct(row, 'pixel_auroc'):>13}  {pct(row, 'aupro'):>13}  "
            f"{'—' if math.isnan(adapt) else f'{adapt:8.2f}':>8}  {'—' if math.isnan(speed) else f'{speed:7.1f}':>7}"
        )
    return "\n".join(lines)
