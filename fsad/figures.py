"""Regenerated tables and figures: our results beside the papers' numbers (:mod:`fsad.paper`).

Everything here reads results files (``run_evaluation`` JSON, the ablation grids' ``table5/6/7.json``)
or calls the library to produce the few things results files do not hold (anomaly maps for the
localisation panels; the t-SNE figure is :mod:`fsad.embedding`). The notebooks 05–08 and ``make figures`` only
call these functions, so a table is built one way whichever door it is reached through.

Units: results files hold AUROCs as fractions; every table made here is in % (as the papers are),
rounded only when printed. ``ours`` is the mean over runs of a (method, category, k) cell group, and a
``macro_average`` row is the mean over categories of those means (as :func:`fsad.results.summarise`).

Example:
    >>> cells = load_cells(["runs/eval/evaluation.json"])                       # doctest: +SKIP
    >>> rows = per_category_table(cells, dataset="mvtec")
    >>> rows[0]   # {'method': 'regad', 'category': 'bottle', 'k': 2, 'runs': 10, 'ours': 99.1, 'paper': 99.4, ...}
    >>> write_rows_csv(rows, "figures/tables/table1_mvtec.csv")
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from fsad import paper
from fsad.errors import ConfigError, FsadError, MissingFileError
from fsad.results import RESULTS_FORMAT, mean_std
from fsad.utils import atomic_write_text

ABLATION_FORMAT = "fsad-ablation-v1"
# The real-data subsets live beside the checkout (as in tests/conftest.py); FSAD_SHARED_DATA overrides.
SHARED_DATA_ENV = "FSAD_SHARED_DATA"
# Suffix of a method that does not augment by default run with augmentation (PatchCore-k whose bank also holds
# the augmented views): the column name method_config accepts and the label method_label gives such results, so
# the two cannot drift apart.
AUGMENTED_SUFFIX = "_aug"
AUGMENTED_PATCHCORE = f"patchcore{AUGMENTED_SUFFIX}"


# --------------------------------------------------------------------------- loading results
def _results_documents(source: str | Path) -> list[dict[str, Any]]:
    path = Path(source)
    if not path.exists():
        raise MissingFileError(
            f"Results path {path} does not exist. Pass a results JSON written by "
            "`python -m fsad evaluate --out ...` or a folder holding such files (e.g. runs/<grid>)."
        )
    files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
    documents = []
    for file in files:
        try:
            document = json.loads(file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            if path.is_dir():
                continue  # a folder may hold other JSON (context.json, manifests); skip what is not ours
            raise FsadError(f"{file} is not valid JSON ({error}).") from error
        if isinstance(document, dict) and document.get("format") == RESULTS_FORMAT:
            document["_path"] = str(file)
            documents.append(document)
        elif not path.is_dir():
            raise FsadError(f"{file} is not a {RESULTS_FORMAT} results file (written by run_evaluation).")
    return documents


def _is_ablation_cell_file(file: Path) -> bool:
    # fsad.ablation / table7 keep one results file per (setting, target) under <out>/cells/<setting>/;
    # their cells belong to the ablation tables, not to the per-category evaluation tables.
    return file.parent.parent.name == "cells" and (file.parent.parent.parent / "checkpoints").is_dir()


def load_cells(
    sources: str | Path | Iterable[str | Path], dataset: str | None = None, include_ablation_cells: bool = False
) -> list[dict[str, Any]]:
    """Every evaluation cell (one method, category, k, run) of the given results files/folders.

    Args:
        sources: results JSON file(s) and/or folders (searched recursively for ``fsad-results-v1`` JSON).
        dataset: keep only cells of runs on this dataset (None: all).
        include_ablation_cells: also read the per-setting files of ablation grids (``<out>/cells/...`` beside
            ``<out>/checkpoints``), skipped by default when a folder is searched.

    Returns:
        list of cell dicts (``method``, ``category``, ``k``, ``run``, ``image_auroc`` ... as fractions), each
        with ``dataset`` and ``backbone`` copied from its file's config and ``method`` replaced by
        :func:`method_label` (so RegAD with and without a checkpoint or augmentation stay apart). A cell present
        in several files (e.g. a resumed copy) is kept once, the last one read.

    Raises:
        FileNotFoundError: a source does not exist. ValueError: a named file is not a results file.
    """
    if isinstance(sources, (str, Path)):
        sources = [sources]
    cells: dict[tuple, dict[str, Any]] = {}
    for source in sources:
        for document in _results_documents(source):
            if Path(source).is_dir() and not include_ablation_cells and _is_ablation_cell_file(Path(document["_path"])):
                continue
            config = document.get("config", {})
            if dataset is not None and config.get("dataset") != dataset:
                continue
            for cell in document.get("cells", []):
                record = {
                    **cell,
                    "dataset": config.get("dataset"),
                    "backbone": config.get("backbone"),
                    "checkpoint": config.get("checkpoint"),
                    "method": method_label(config, cell["method"]),
                }
                # Same cell of the same experiment (e.g. a resumed copy) -> kept once; other settings stay apart.
                setting = tuple(str(config.get(key)) for key in ("stn_mode", "image_size", "weights", "checkpoint"))
                cells[
                    (
                        record["dataset"],
                        record["backbone"],
                        record["method"],
                        cell["category"],
                        cell["k"],
                        cell["run"],
                        setting,
                    )
                ] = record
    return list(cells.values())


def method_label(config: dict[str, Any], method: str) -> str:
    """Table label of a method as configured, from its :class:`fsad.methods.MethodSpec`: its ``label``, then
    ``_trained`` with a checkpoint (``regad_trained``); ``_noaug`` for a method that augments by default run
    without augmentation (``padim_noaug``), ``_aug`` for one that does not run with it (``patchcore_aug``).
    A method this installation does not register is labelled as one that augments by default.

    Example:
        >>> method_label({"augment_families": [], "checkpoint": None}, "padim")
        'padim_noaug'
    """
    from fsad.methods import find_method_spec

    spec = find_method_spec(method)
    augmented = bool(config.get("augment_families"))
    label = spec.label if spec is not None else method
    if spec is not None and spec.accepts_checkpoint and config.get("checkpoint"):
        label = f"{label}_trained"
    if spec is not None and not spec.augments_by_default:
        return f"{label}{AUGMENTED_SUFFIX}" if augmented else label
    return label if augmented else f"{label}_noaug"


def method_columns() -> tuple[str, ...]:
    """Figure columns :func:`method_config` accepts: every registered method, then ``<name>_aug`` for each
    that does not augment by default (``patchcore_aug``)."""
    from fsad.methods import method_names, method_spec

    names = method_names()
    return (*names, *(f"{n}{AUGMENTED_SUFFIX}" for n in names if not method_spec(n).augments_by_default))


def load_ablation(source: str | Path, table: str | None = None) -> dict[str, Any]:
    """An ablation document (``table5.json``, ``table6.json``, ``table7.json``), or the one in a folder.

    Raises:
        FileNotFoundError: nothing matching under ``source``.
    """
    path = Path(source)
    if path.is_dir():
        names = [f"{table}.json"] if table else ["table5.json", "table6.json", "table7.json"]
        found = [p for name in names for p in sorted(path.rglob(name))]
        if not found:
            raise FileNotFoundError(
                f"No {' or '.join(names)} under {path}. Run `python -m fsad ablation ...` "
                "(or the 07/08 notebooks) first."
            )
        path = found[0]
    if not path.is_file():
        raise FileNotFoundError(f"Ablation results {path} do not exist.")
    document = json.loads(path.read_text())
    if document.get("format") != ABLATION_FORMAT:
        raise ValueError(f"{path} is not an ablation document ({ABLATION_FORMAT}).")
    return document


def method_config(
    base: Any,
    column: str,
    category: str,
    out_dir: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
) -> Any:
    """The :class:`fsad.evaluate.EvaluationConfig` of one table column for one category.

    ``regad``/``padim`` use ``base.augment_families``; ``patchcore`` has no augmentation (the CLI's default);
    ``patchcore_aug`` is PatchCore-k with ``base.augment_families`` in its bank. With ``checkpoint_dir``,
    ``regad`` uses ``<checkpoint_dir>/<category>/last.pt``. Results go to ``<out_dir>/<column>/<category>.json``.

    Raises:
        ValueError: unknown column (names the valid ones).
        FileNotFoundError: a category's checkpoint is missing (names the path and the command to make it).
    """
    from fsad.methods import method_names, method_spec

    columns = method_columns()
    if column not in columns:
        raise ConfigError(f"Unknown method {column!r}; choose from {', '.join(columns)}.")
    method = column if column in method_names() else column.removesuffix(AUGMENTED_SUFFIX)
    spec = method_spec(method)
    augmented_column = column != method
    families = list(base.augment_families) if spec.augments_by_default or augmented_column else []
    if augmented_column and not families:
        raise ConfigError(
            f"{column} needs augmentation families (augment_families is empty); "
            f"use '{method}' for the {method} of the k supports alone."
        )
    checkpoint = None
    if checkpoint_dir is not None and spec.accepts_checkpoint:
        checkpoint = Path(checkpoint_dir) / category / "last.pt"
        if not checkpoint.is_file():
            raise MissingFileError(
                f"No checkpoint {checkpoint} for {category}. Train it with `python -m fsad "
                f"train --data-root ... --target {category} --out {checkpoint.parent}`, "
                "or set checkpoint_dir = None for the training-free RegAD."
            )
    out = str(Path(out_dir) / column / f"{category}.json") if out_dir is not None else base.out
    from fsad.evaluate import options_for_method  # options of the base's method that do not apply here are reset

    return replace(
        options_for_method(base, method),
        categories=[category],
        checkpoint=str(checkpoint) if checkpoint else None,
        augment_families=families,
        out=out,
        resume=resume,
        overwrite=base.overwrite and not resume,
    )


def evaluate_methods(
    base: Any,
    methods: Sequence[str],
    out_dir: str | Path,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Run :func:`fsad.evaluate.run_evaluation` for each method (and category) on the same supports.

    One results file per (method, category): ``<out_dir>/<method>/<category>.json`` (resumed when present).
    Each column's options are :func:`method_config`'s: with ``checkpoint_dir``, RegAD uses
    ``<checkpoint_dir>/<category>/last.pt`` (the model trained leaving that category out, e.g.
    ``python -m fsad train --target <category> --out DIR/<category>``); ``patchcore`` is not augmented (as the
    CLI's default), ``patchcore_aug`` and RegAD/PaDiM use ``base.augment_families``.

    Args:
        base: an :class:`fsad.evaluate.EvaluationConfig` with data, categories, ks, runs and model options.
        methods: columns, each in :func:`method_columns` (the registered methods and ``"patchcore_aug"``).
        out_dir: folder for the results files.
        checkpoint_dir: folder of per-category checkpoints, or None for the training-free RegAD ('A' row).
        resume: keep the finished cells of existing results files (same options) and compute only the rest.

    Returns:
        every cell, as :func:`load_cells` gives them.

    Raises:
        ValueError: an unknown method.
        FileNotFoundError: a category's checkpoint is missing (names the path and the command to make it).
    """
    from fsad.evaluate import run_evaluation

    configs = [
        method_config(base, method, category, out_dir, checkpoint_dir, resume)
        for method in methods
        for category in base.categories
    ]  # all checked before any runs
    for config in configs:
        run_evaluation(config, progress=progress)
    return load_cells([config.out for config in configs])


# --------------------------------------------------------------------------- per-category tables
def _pct(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return 100.0 * float(value)


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """:func:`fsad.results.mean_std` with None (not NaN) for "no value", as the tables print it."""
    mean, std = mean_std(values)
    return _none_nan(mean), _none_nan(std)


def _paper_dataset(dataset: str | None, paper_dataset: str | None) -> str | None:
    if paper_dataset is not None:
        if paper_dataset not in ("mvtec", "mpdd"):
            raise ValueError(f"paper_dataset must be 'mvtec', 'mpdd' or None; got {paper_dataset!r}")
        return paper_dataset
    return dataset if dataset in ("mvtec", "mpdd") else None


def per_category_table(
    cells: Sequence[dict[str, Any]],
    dataset: str | None = None,
    metric: str = "image_auroc",
    methods: Sequence[str] | None = None,
    paper_dataset: str | None = None,
) -> list[dict[str, Any]]:
    """Tables 1/2 layout in long form: one row per (method, category, k) plus a macro row per (method, k).

    Args:
        cells: from :func:`load_cells`.
        dataset: the dataset the cells are from (default: taken from the cells when they agree).
        metric: ``image_auroc``, ``pixel_auroc``, ``aupro`` or ``f1_max``.
        methods: keep only these methods (default all, in first-seen order).
        paper_dataset: whose paper numbers to show (default: ``dataset`` when it is mvtec/mpdd, else none).

    Returns:
        rows ``{"method", "category", "k", "runs", "ours", "ours_std", "paper", "delta", "paper_all"}``:
        ``ours`` = 100 × mean over runs, ``ours_std`` its population std (%), ``paper`` = RegAD's reported
        image AUROC for that category (Tables 1–2; None for other metrics, which the paper does not report per
        category), ``delta`` = ours − paper. Macro rows (``category = "macro_average"``): ``ours`` = mean over
        categories, ``paper`` = mean of the paper's values over the *same* categories (None if one is
        missing), ``paper_all`` = the paper's average over all its categories (image: Tables 1–2 / 4; pixel:
        Table 5 A+F+S / Table 4) so a partial run is never compared with a full-dataset average unawares.

    Example:
        >>> cells = [{"method": "regad", "category": "bottle", "k": 2, "run": r, "image_auroc": v}
        ...          for r, v in enumerate([0.98, 1.0])]
        >>> row = per_category_table(cells, "mvtec")[0]
        >>> round(row["ours"], 6), row["paper"], round(row["delta"], 6)
        (99.0, 99.4, -0.4)
    """
    valid = ("image_auroc", "pixel_auroc", "aupro", "f1_max")
    if metric not in valid:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {', '.join(valid)}.")
    if dataset is None:
        seen = {c.get("dataset") for c in cells}
        dataset = seen.pop() if len(seen) == 1 else None
    source = _paper_dataset(dataset, paper_dataset)
    order = list(dict.fromkeys(c["method"] for c in cells))
    chosen_methods = [m for m in (methods or order)]
    groups: dict[tuple, list[float | None]] = {}
    for cell in cells:
        if cell["method"] in chosen_methods:
            groups.setdefault((cell["method"], cell["category"], int(cell["k"])), []).append(cell.get(metric))

    def paper_value(category: str, k: int) -> float | None:
        if source is None or metric != "image_auroc":
            return None
        return paper.regad_image_auroc(source, category, k)

    def paper_all(k: int) -> float | None:
        if source is None:
            return None
        if metric == "image_auroc":
            return paper.regad_image_auroc(source, "average", k)
        if metric == "pixel_auroc":
            return paper.regad_pixel_auroc(source, k)
        return None

    rows: list[dict[str, Any]] = []
    for method in chosen_methods:
        keys = sorted((key for key in groups if key[0] == method), key=lambda key: (key[2], key[1]))
        for k in sorted({key[2] for key in keys}):
            members = []
            for _, category, _ in (key for key in keys if key[2] == k):
                mean, std = _mean_std(groups[(method, category, k)])
                ours, ours_std = _pct(mean), _pct(std)
                value = paper_value(category, k)
                members.append(
                    {
                        "method": method,
                        "category": category,
                        "k": k,
                        "runs": len(groups[(method, category, k)]),
                        "ours": ours,
                        "ours_std": ours_std,
                        "paper": value,
                        "delta": None if ours is None or value is None else ours - value,
                        "paper_all": None,
                    }
                )
            rows.extend(members)
            macro, _ = _mean_std([m["ours"] for m in members])
            papers = [m["paper"] for m in members]
            macro_paper = float(np.mean(papers)) if papers and all(p is not None for p in papers) else None
            rows.append(
                {
                    "method": method,
                    "category": "macro_average",
                    "k": k,
                    "runs": sum(m["runs"] for m in members),
                    "ours": macro,
                    "ours_std": None,
                    "paper": macro_paper,
                    "delta": None if macro is None or macro_paper is None else macro - macro_paper,
                    "paper_all": paper_all(k),
                }
            )
    return rows


def method_comparison_table(
    cells: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("image_auroc", "pixel_auroc", "aupro"),
    dataset: str | None = None,
    paper_dataset: str | None = None,
) -> list[dict[str, Any]]:
    """One row per (category, k), one column per method × metric (mean over runs, %), plus RegAD's paper value.

    The issue-11 table: RegAD, PaDiM-k, PatchCore-k on the same supports, side by side.
    """
    rows: dict[tuple, dict[str, Any]] = {}
    for metric in metrics:
        for row in per_category_table(cells, dataset=dataset, metric=metric, paper_dataset=paper_dataset):
            target = rows.setdefault((row["category"], row["k"]), {"category": row["category"], "k": row["k"]})
            target[f"{row['method']}_{metric}"] = row["ours"]
            if metric == "image_auroc":
                target["paper_regad_image_auroc"] = (
                    row["paper"]
                    if row["category"] != "macro_average"
                    else (row["paper"] if row["paper"] is not None else row["paper_all"])
                )
    return sorted(rows.values(), key=lambda r: (r["k"], r["category"] == "macro_average", r["category"]))


def write_rows_csv(rows: Sequence[dict[str, Any]], path: str | Path, digits: int = 2) -> Path:
    """Write table rows to CSV atomically (floats rounded to ``digits``; None -> empty)."""
    path = Path(path)
    fields = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: ("" if v is None else round(v, digits) if isinstance(v, float) else v) for k, v in row.items()}
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, buffer.getvalue())
    return path


def format_rows(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """Plain-text table (what the notebooks print)."""
    if not rows:
        return "(no rows)"
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))

    def text(value: Any) -> str:
        if value is None:
            return "—"
        if isinstance(value, float):
            return "—" if math.isnan(value) else f"{value:.1f}"
        return str(value)

    cells = [[text(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths)), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def comparison_figure(rows: Sequence[dict[str, Any]], title: str = "", ylabel: str = "image AUROC (%)") -> plt.Figure:
    """Bars of ours (± std over runs) beside the paper, per category, one panel per (method, k)."""
    panels = sorted({(r["method"], r["k"]) for r in rows}, key=lambda p: (p[0], p[1]))
    fig, axes = plt.subplots(
        1,
        max(1, len(panels)),
        figsize=(max(4.0, 0.9 * _max_categories(rows)) * len(panels) ** 0.5 + 1.5 * len(panels), 3.4),
        squeeze=False,
    )
    for ax, (method, k) in zip(axes[0], panels):
        members = [r for r in rows if r["method"] == method and r["k"] == k]
        names = [r["category"].replace("macro_average", "macro") for r in members]
        x = np.arange(len(members))
        ours = [np.nan if r["ours"] is None else r["ours"] for r in members]
        err = [0.0 if r["ours_std"] is None else r["ours_std"] for r in members]
        reference = [np.nan if r["paper"] is None else r["paper"] for r in members]
        # Macro rows of a partial run show the paper's full-dataset average as a hollow bar.
        full = [np.nan if r.get("paper_all") is None or r["paper"] is not None else r["paper_all"] for r in members]
        ax.bar(x - 0.2, ours, 0.4, yerr=err, capsize=2, label="ours", color="tab:blue")
        ax.bar(x + 0.2, reference, 0.4, label="paper (RegAD)", color="tab:orange")
        if not all(np.isnan(full)):
            ax.bar(x + 0.2, full, 0.4, fill=False, hatch="//", edgecolor="tab:orange", label="paper, all categories")
        ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.axhline(50, color="grey", lw=0.6, ls=":")
        ax.set_title(f"{method}, k={k}", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("category", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _max_categories(rows: Sequence[dict[str, Any]]) -> int:
    counts: dict[tuple, int] = {}
    for r in rows:
        counts[(r["method"], r["k"])] = counts.get((r["method"], r["k"]), 0) + 1
    return max(counts.values(), default=1)


# --------------------------------------------------------------------------- ablation tables (5, 6, 7)
def ablation_table(document: dict[str, Any], paper_dataset: str | None = None) -> list[dict[str, Any]]:
    """Rows of an ablation document in %, with the paper's values from :mod:`fsad.paper`.

    Args:
        document: from :func:`load_ablation` / ``fsad.ablation.table5/6`` / :func:`table7`.
        paper_dataset: whose numbers to show (default: the document's dataset if mvtec/mpdd; pass "mvtec" to
            put the paper's MVTec numbers beside a synthetic run as a reference).

    Returns:
        rows ``{"table", "row", "k", "ours_image", "paper_image", "ours_pixel", "paper_pixel", "n_categories"}``
        (Table 6 has no pixel columns in the paper: ``paper_pixel`` None). For Table 7, ``paper_*`` are the
        RCM-FSAD values (None: missing from our copy of the text) and ``regad_reference_*`` gives, for the R18
        row, RegAD's own A+F+S numbers (Table 5), which is what R18 is.
    """
    table = document["table"]
    source = _paper_dataset(document.get("config", {}).get("dataset"), paper_dataset)
    rows = []
    for row in document["rows"]:
        k = int(row["k"])
        name = row["row"]
        record: dict[str, Any] = {
            "table": table,
            "row": row.get("label", name),
            "k": k,
            "ours_image": _pct(row.get("image_auroc")),
            "ours_pixel": _pct(row.get("pixel_auroc")),
            "paper_image": None,
            "paper_pixel": None,
            "n_categories": row.get("n_categories"),
        }
        if table == "table5" and source:
            record["paper_image"] = paper.table5_value(source, "image", name, k)
            record["paper_pixel"] = paper.table5_value(source, "pixel", name, k)
        elif table == "table6" and source and k == 2:
            record["paper_image"] = paper.PAPER_TABLE6[source].get(name)
        elif table == "table7":
            values = paper.RCM_TABLE7.get(name, {})
            record["paper_image"] = values.get("image", {}).get(k)
            record["paper_pixel"] = values.get("pixel", {}).get(k)
            reference = source or "mvtec"  # RCM-FSAD reports MVTec only
            is_r18 = name == "R18"
            record["regad_reference_image"] = paper.table5_value(reference, "image", "A+F+S", k) if is_r18 else None
            record["regad_reference_pixel"] = paper.table5_value(reference, "pixel", "A+F+S", k) if is_r18 else None
        rows.append(record)
    return rows


def ablation_figure(rows: Sequence[dict[str, Any]], title: str = "") -> plt.Figure:
    """Grouped bars per ablation row: ours vs the paper, image AUROC (and pixel when present), one panel per k."""
    ks = sorted({r["k"] for r in rows})
    has_pixel = any(r.get("ours_pixel") is not None for r in rows)
    metrics = ["image", "pixel"] if has_pixel else ["image"]
    fig, axes = plt.subplots(len(metrics), len(ks), figsize=(3.2 * len(ks) + 1, 2.8 * len(metrics)), squeeze=False)
    for j, k in enumerate(ks):
        members = [r for r in rows if r["k"] == k]
        x = np.arange(len(members))
        for i, metric in enumerate(metrics):
            ax = axes[i, j]
            ours = [np.nan if r[f"ours_{metric}"] is None else r[f"ours_{metric}"] for r in members]
            ref = [np.nan if r[f"paper_{metric}"] is None else r[f"paper_{metric}"] for r in members]
            if all(np.isnan(ref)):  # Table 7: the RegAD reference of the R18 row, if any
                ref = [
                    np.nan if r.get(f"regad_reference_{metric}") is None else r[f"regad_reference_{metric}"]
                    for r in members
                ]
            ax.bar(x - 0.2, ours, 0.4, label="ours", color="tab:blue")
            ax.bar(x + 0.2, ref, 0.4, label="paper", color="tab:orange")
            ax.set_xticks(x, [r["row"] for r in members], rotation=45, ha="right", fontsize=7)
            ax.set_ylim(0, 105)
            ax.set_title(f"{metric} AUROC, k={k}", fontsize=9)
            ax.set_ylabel(f"{metric} AUROC (%)", fontsize=8)
            ax.set_xlabel("ablation row", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _none_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


# --------------------------------------------------------------------------- localisation panels
def localisation_examples(config: Any, category: str, k: int, run: int = 0, n: int = 2) -> dict[str, Any]:
    """Fit one support set and score a category's test set, keeping the maps (results files do not).

    Args:
        config: a :class:`fsad.evaluate.EvaluationConfig` (method, backbone, checkpoint, image size...).
        category, k, run: which support set of the manifest (as in ``run_evaluation``).
        n: how many images per group in the returned selection.

    Returns:
        dict with ``images`` ``[N,3,S,S]``, ``masks`` ``[N,S,S]`` bool, ``maps`` ``[N,S,S]``, ``scores`` ``[N]``,
        ``labels`` ``[N]``, ``paths``, ``supports`` (files), ``has_masks``, and ``selection``: indices and
        titles of the ``n`` best-detected defects (highest scores), the ``n`` worst (lowest-scored defects)
        and the ``n`` highest-scored good images (false alarms).
    """
    from data_tools.datasets import AnomalyDataset, load_supports
    from data_tools.manifests import support_files
    from fsad.evaluate import build_method, resolve_manifest
    from fsad.methods import maps_and_image_scores
    from fsad.utils import resolve_device, seed_everything

    device = resolve_device(config.device)
    # Same ks/runs as the evaluation when k is among them, so a manifest generated from the root (datasets with
    # no committed manifest) draws the same support sets as run_evaluation did.
    config = replace(
        config, categories=[category], ks=list(config.ks) if k in config.ks else [k], runs=max(config.runs, run + 1)
    )
    manifest, _ = resolve_manifest(config)
    seed_everything(config.seed)
    method, _ = build_method(config, device)
    files = support_files(manifest, category, k, run)
    supports = load_supports(config.data_root, category, files, config.image_size).to(device)
    seed_everything(config.seed + run)
    method.fit(supports)
    test_set = AnomalyDataset(
        config.data_root, category, split="test", image_size=config.image_size, dataset=config.dataset
    )
    items = [test_set[i] for i in range(len(test_set))]
    images = torch.stack([item["image"] for item in items])
    with torch.no_grad():
        maps, scores = maps_and_image_scores(method, method.embed(images.to(device)), config.image_size)
    scores = scores.cpu().numpy()
    labels = np.asarray(test_set.labels)
    selection = select_examples(scores, labels, n)
    names = [Path(p).parent.name + "/" + Path(p).name for p in test_set.paths]
    short = {"best defect": "best", "worst defect": "worst", "false alarm": "false alarm"}
    titles = {i: f"{short[group]}: {names[i]} ({scores[i]:.1f})" for group, idx in selection.items() for i in idx}
    return {
        "images": images,
        "masks": torch.stack([item["mask"] for item in items])[:, 0].numpy().astype(bool),
        "maps": maps.cpu().numpy(),
        "scores": scores,
        "labels": labels,
        "paths": list(test_set.paths),
        "supports": files,
        "has_masks": test_set.has_masks,
        "selection": selection,
        "titles": titles,
        "category": category,
        "k": k,
        "run": run,
        "method": config.method,
    }


def select_examples(scores: np.ndarray, labels: np.ndarray, n: int = 2) -> dict[str, list[int]]:
    """Indices of the best-detected defects, the worst (lowest-scored) defects and the top-scored good images.

    Example:
        >>> select_examples(np.array([0.1, 0.9, 0.5, 0.7]), np.array([0, 1, 1, 0]), n=1)
        {'best defect': [1], 'worst defect': [2], 'false alarm': [3]}
    """
    scores = np.asarray(scores, dtype=float)
    labels = np.asarray(labels)
    defects = np.flatnonzero(labels == 1)
    goods = np.flatnonzero(labels == 0)
    by_score_defects = defects[np.argsort(-scores[defects], kind="stable")]
    by_score_goods = goods[np.argsort(-scores[goods], kind="stable")]
    best = by_score_defects[:n].tolist()
    worst = [i for i in by_score_defects[::-1][:n].tolist() if i not in best]
    return {"best defect": best, "worst defect": worst, "false alarm": by_score_goods[:n].tolist()}


def localisation_figure(examples: dict[str, Any]) -> plt.Figure:
    """The paper's Fig. 3 layout (image, ground truth, map, overlay) for the selected examples."""
    from fsad.viz import localisation_panel

    order = [i for group in ("best defect", "worst defect", "false alarm") for i in examples["selection"][group]]
    masks = examples["masks"][order] if examples["has_masks"] else None
    fig = localisation_panel(
        examples["images"][order], masks, examples["maps"][order], titles=[examples["titles"][i] for i in order]
    )
    fig.suptitle(
        f"{examples['method']} on {examples['category']}, k={examples['k']} (run {examples['run']})",
        fontsize=10,
        y=1.01,
    )
    return fig


# --------------------------------------------------------------------------- real sample images
def shared_data_root() -> Path:
    """``$FSAD_SHARED_DATA``, else ``<checkout>/../shared/data`` in a source checkout (may not exist), else ``./data``."""
    import os

    from fsad.paths import source_checkout

    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV])
    root = source_checkout()
    return root.parent / "shared" / "data" if root is not None else Path.cwd() / "data"


def sample_image(
    image_size: int,
    prefer: Sequence[str] = ("mvtec_ad_subset/bottle/test/broken_large/000.png", "mpdd_subset/metal_plate/test"),
) -> tuple[torch.Tensor, str]:
    """A real defective image from the shared subsets when present, else one from the synthetic set.

    Returns:
        (ImageNet-normalised ``[3,S,S]`` tensor, its path).
    """
    from data_tools.datasets import image_files, load_image
    from data_tools.synthetic import ensure_synthetic_dataset

    root = shared_data_root()
    for relative in prefer:
        candidate = root / relative
        if candidate.is_file():
            return load_image(candidate, image_size), str(candidate)
        if candidate.is_dir():
            files = [
                f
                for sub in sorted(candidate.iterdir())
                if sub.is_dir() and sub.name != "good"
                for f in image_files(sub)
            ]
            if files:
                return load_image(files[0], image_size), str(files[0])
    synthetic = Path(ensure_synthetic_dataset(seed=0)) / "washer" / "test" / "scratch"
    first = image_files(synthetic)[0]
    return load_image(first, image_size), str(first)


def save_table(rows: Sequence[dict[str, Any]], name: str, figures_dir: str | Path) -> Path:
    """``<figures_dir>/tables/<name>.csv``."""
    return write_rows_csv(rows, Path(figures_dir) / "tables" / f"{name}.csv")


def save_figure(fig: plt.Figure, name: str, figures_dir: str | Path, dpi: int = 120) -> Path:
    """``<figures_dir>/<name>.png`` — :func:`fsad.viz.savefig`'s counterpart for the regenerated-figures folder
    (``make figures`` writes ``figures/*.png`` at the top of the repository, not under a run's output)."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _cell_text(values: Sequence[float | None], digits: int = 1) -> str:
    return " / ".join(
        "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}" for v in values
    )


def markdown_report(
    cells: Sequence[dict[str, Any]],
    metrics: Sequence[str] = ("image_auroc", "pixel_auroc", "aupro"),
    methods: Sequence[str] | None = None,
    macro: bool = False,
) -> str:
    """Markdown tables of the method comparison, one per (dataset, backbone): rows (category, k), a column per
    method holding ``metric1 / metric2 / ...`` (mean over runs, %), and RegAD's paper image AUROC.

    This is what ``python -m fsad report`` prints and what README's results tables are pasted from.
    ``macro=True`` adds the macro-average rows (meaningful only over a whole dataset).
    """
    blocks = []
    for dataset, backbone in sorted({(c.get("dataset"), c.get("backbone")) for c in cells}, key=str):
        chosen = [c for c in cells if c.get("dataset") == dataset and c.get("backbone") == backbone]
        table = method_comparison_table(chosen, metrics=metrics, dataset=dataset)
        present = list(dict.fromkeys(c["method"] for c in chosen))
        order = [m for m in (methods or present) if m in present]
        runs: dict[tuple, dict[str, set]] = {}
        for c in chosen:
            runs.setdefault((c["category"], int(c["k"])), {}).setdefault(c["method"], set()).add(c["run"])
        header = ["category", "k", "runs"] + order + ["paper RegAD (image)"]
        lines = [
            f"**{dataset} · {backbone}** — cells: {' / '.join(m.replace('_auroc', ' AUROC') for m in metrics)} (%)",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
        ]
        for row in table:
            if row["category"] == "macro_average" and not macro:
                continue  # a macro average over a few available categories invites a false comparison
            counts = sorted({len(r) for r in runs.get((row["category"], row["k"]), {}).values()})
            n_runs = "" if not counts else (str(counts[0]) if len(counts) == 1 else f"{counts[0]}–{counts[-1]}")
            values = [_cell_text([row.get(f"{m}_{metric}") for metric in metrics]) for m in order]
            lines.append(
                f"| {row['category']} | {row['k']} | {n_runs} | "
                + " | ".join(values)
                + f" | {_cell_text([row.get('paper_regad_image_auroc')])} |"
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
