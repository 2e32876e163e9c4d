"""Results files: one JSON per evaluation (config, provenance, one record per cell) and a CSV summary.

The JSON is rewritten atomically after every finished cell, so a crashed or interrupted run
resumes from the last cell it finished (``--resume``).

Units: the JSON cells hold metrics as measured (fractions in [0, 1], as scikit-learn returns them); every CSV
and table the kit writes gives AUROC, AUPRO and F1-max in % (as the papers do). :func:`load_results` turns
any number of results files into one pandas DataFrame (one row per cell, metrics in %, config columns).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from fsad.errors import FsadError, MissingFileError, OutputError
from fsad.files import atomic_write_json, atomic_write_text

RESULTS_FORMAT = "fsad-results-v1"
METRIC_KEYS = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
# Metrics stored as fractions in the JSON and written in % in every CSV/table.
PERCENT_KEYS = METRIC_KEYS
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
            previous = read_results_for_resume(self.path)
            check_resume(previous, header.get("resume_key") or {}, self.path)
            self.cells = list(previous.get("cells", []))

    def done(self) -> set[tuple]:
        return {cell_id(cell) for cell in self.cells}

    def add(self, cell: dict[str, Any]) -> None:
        self.cells = [c for c in self.cells if cell_id(c) != cell_id(cell)] + [cell]
        self.write()

    def document(self) -> dict[str, Any]:
        return {"format": RESULTS_FORMAT, **self.header, "cells": self.cells, "summary": summarise(self.cells)}

    def write(self) -> None:
        atomic_write_json(self.path, self.document())
        atomic_write_text(self.path.with_suffix(".csv"), summary_csv(summarise(self.cells)))


def read_results_for_resume(path: str | Path) -> dict[str, Any]:
    """The results document at ``path`` (the ``--out`` of a run being resumed).

    Raises:
        OutputError: not valid JSON, or not a results file; the message names the file and says it is ``--out``.
    """
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise OutputError(
            f"--resume: the --out results file {path} is corrupt (not valid JSON: {error}); "
            "move it away and run without --resume, or pass --overwrite to replace it."
        ) from None
    if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
        raise OutputError(
            f"--resume: the --out file {path} is not a {RESULTS_FORMAT} results file; choose another "
            "--out, or pass --overwrite to replace it."
        )
    return document


def check_resume(previous: dict[str, Any], key: dict[str, Any], path: str | Path) -> None:
    """Refuse to resume a results file written with other options; the message names each differing key.

    Files written before the method became part of the resume key carry it in their ``config`` only.
    """
    recorded = dict(previous.get("resume_key") or {})
    if "method" in key and "method" not in recorded:
        recorded["method"] = (previous.get("config") or {}).get("method")
    differing = [name for name in sorted(set(recorded) | set(key)) if recorded.get(name) != key.get(name)]
    if differing:
        details = "; ".join(
            f"{name}: file has {recorded.get(name)!r}, this run {key.get(name)!r}" for name in differing
        )
        raise OutputError(
            f"--resume: {path} was written with other options ({details}). Resume with the same "
            "options, choose another --out, or pass --overwrite instead of --resume to replace it."
        )


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and population std of the finite values (None/NaN skipped); NaN, NaN when none are left."""
    finite = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not finite:
        return float("nan"), float("nan")
    array = np.asarray(finite, dtype=float)
    return float(array.mean()), float(array.std(ddof=0))


def summarise(cells: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std over runs per (method, category, k), then the macro average over categories per (method, k).

    Means and (population) stds skip missing values (None/NaN, e.g. pixel metrics of a mask-less category);
    values keep the cells' unit (fractions). Rows are sorted by method, k, category; macro rows follow.
    """
    import pandas as pd

    keys = list(METRIC_KEYS + TIMING_KEYS)
    records = [
        {"method": c["method"], "category": c["category"], "k": c["k"], **{key: c.get(key) for key in keys}}
        for c in cells
    ]
    if not records:
        return []
    frame = pd.DataFrame.from_records(records)
    frame[keys] = frame[keys].apply(pd.to_numeric, errors="coerce")  # None -> NaN
    grouped = frame.groupby(["method", "category", "k"], sort=False)
    per_category = grouped[keys].agg(["mean", lambda v: v.std(ddof=0)])
    per_category.columns = [f"{key}_{'mean' if stat == 'mean' else 'std'}" for key, stat in per_category.columns]
    per_category.insert(0, "runs", grouped.size())
    per_category = per_category.reset_index().sort_values(["method", "k", "category"], kind="stable")
    macro = per_category.groupby(["method", "k"], sort=True).agg(
        runs=("runs", "sum"), **{f"{key}_mean": (f"{key}_mean", "mean") for key in keys}
    )
    macro = macro.reset_index()
    macro.insert(1, "category", "macro_average")
    for key in keys:
        macro[f"{key}_std"] = float("nan")
    columns = ["method", "category", "k", "runs"] + [f"{key}_{stat}" for key in keys for stat in ("mean", "std")]
    rows = pd.concat([per_category[columns], macro[columns]], ignore_index=True)
    return [
        {key: (value.item() if hasattr(value, "item") else value) for key, value in row.items()}
        for row in rows.to_dict("records")
    ]


def summary_csv(rows: list[dict[str, Any]]) -> str:
    """The summary as CSV, metrics in % (timings in their own units), empty cells for missing values."""
    if not rows:
        return ""
    import pandas as pd

    frame = pd.DataFrame.from_records(rows)
    percent = [c for c in frame.columns if c.rsplit("_", 1)[0] in PERCENT_KEYS]
    frame[percent] = frame[percent].astype(float) * 100.0
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


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


# Config keys copied into every row of load_results (those present in a file; others appear as NaN).
CONFIG_COLUMNS = (
    "image_size",
    "stn_mode",
    "augment_families",
    "checkpoint",
    "attention",
    "dcn",
    "channel_subset",
    "coreset_ratio",
    "patchcore_border",
    "patchcore_image_score",
    "seed",
    "manifest",
)


def load_results(sources: str | Path | Iterable[str | Path]):
    """Results files (or folders searched recursively) as one pandas DataFrame, one row per cell.

    Columns: ``dataset, category, method, backbone, weights, weights_sha256, k, run`` first, then the metrics in
    % (``image_auroc, pixel_auroc, aupro, f1_max``), the timings, the config columns of :data:`CONFIG_COLUMNS`
    (``augment_families`` joined with ``+``), ``fsad_kit`` and ``git_commit`` (None for files written before the
    kit recorded them) and ``source`` (the file). JSON files that are not ``fsad-results`` documents (manifests,
    contexts) are skipped when a folder is searched; a file given by name must be one.

    Example:
        >>> df = load_results("figures/results/mobilenet_v2")                        # doctest: +SKIP
        >>> df.groupby(["method", "category", "k"])["image_auroc"].agg(["mean", "std"])
    """
    import pandas as pd

    if isinstance(sources, (str, Path)):
        sources = [sources]
    files: list[Path] = []
    named: set[Path] = set()  # files asked for by name must be results files; in folders others are skipped
    for source in sources:
        path = Path(source)
        if not path.exists():
            raise MissingFileError(
                f"Results path {path} does not exist: pass results JSON files written by "
                "`python -m fsad evaluate --out ...` or folders holding them."
            )
        if path.is_dir():
            files.extend(sorted(path.rglob("*.json")))
        else:
            files.append(path)
            named.add(path)
    rows = []
    for file in files:
        try:
            document = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if file in named:
                raise FsadError(f"{file} is not a results JSON ({error}).") from error
            continue
        if not isinstance(document, dict) or document.get("format") != RESULTS_FORMAT:
            if file in named:
                raise FsadError(f"{file} is not a {RESULTS_FORMAT} results file written by `python -m fsad evaluate`.")
            continue
        config = document.get("config", {})
        weights = document.get("weights") or {}
        environment = document.get("environment") or {}
        common = {
            "dataset": config.get("dataset"),
            "backbone": weights.get("backbone", config.get("backbone")),
            "weights": weights.get("kind", config.get("weights")),
            "weights_sha256": weights.get("sha256"),
        }
        extra = {}
        for key in CONFIG_COLUMNS:
            value = config.get(key)
            extra[key] = "+".join(value) if isinstance(value, list) else value
        for cell in document.get("cells", []):
            row = {**common, "category": cell["category"], "method": cell["method"], "k": cell["k"], "run": cell["run"]}
            for key in METRIC_KEYS:
                value = cell.get(key)
                row[key] = None if value is None else 100.0 * value
            for key in TIMING_KEYS:
                row[key] = cell.get(key)
            row.update(extra)
            row.update(fsad_kit=environment.get("fsad_kit"), git_commit=environment.get("git_commit"), source=str(file))
            rows.append(row)
    columns = [
        "dataset",
        "category",
        "method",
        "backbone",
        "weights",
        "weights_sha256",
        "k",
        "run",
        *METRIC_KEYS,
        *TIMING_KEYS,
        *CONFIG_COLUMNS,
        "fsad_kit",
        "git_commit",
        "source",
    ]
    frame = pd.DataFrame.from_records(rows, columns=columns)
    return frame.astype({key: float for key in METRIC_KEYS})
