"""The paper's ablation grids as one command each: Table 5 (A/F/S rows × k) and Table 6 (STN modes at k = 2).

Both grids are thin loops over :func:`fsad.train.train` and :func:`fsad.evaluate.run_evaluation`; they add
only the bookkeeping (which checkpoint each cell needs, where results live, the summary table with the
paper's numbers beside ours).

Rows (RegAD paper, Table 5): 'A' = support augmentation, 'F' = feature-registration aggregated training,
'S' = STNs. Rows without F use the untrained ImageNet model with no STN (an untrained STN is the identity);
rows with F use the checkpoint that was trained leaving the evaluated category out, with (S) or without
the STNs. Table 6 is 'A+F' with no STN and with each of the nine STN modes, at k = 2.

Leave-one-out and reuse: for each evaluated category and each *training setting* (``no_stn`` or an STN mode)
one model is trained, at ``<out>/checkpoints/<setting>/<target>/last.pt``, and reused by every row and k that
needs it; Table 5 and Table 6 run with the same ``--out`` share their checkpoints and cells (Table 6's 'no STN'
and 'rotation+scale' columns are Table 5's A+F and A+F+S at k = 2). Each (setting, augmentation, category)
evaluation is one results file ``<out>/cells/<setting>__<aug|noaug>/<target>.json``. A rerun with ``--resume``
skips finished checkpoints (no training at all), resumes unfinished ones, and evaluates only missing cells.

Example:
    >>> config = AblationConfig(data_root="data/synthetic", dataset="synthetic", out="runs/ablation",
    ...                         ks=[2], runs=1, epochs=1, image_size=64, weights="random")
    >>> document = table5(config)          # runs/ablation/table5.json, table5.csv
    >>> [row["row"] for row in document["rows"] if row["k"] == 2]
    ['none', 'A', 'F', 'F+S', 'A+F', 'A+F+S']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from data_tools.datasets import list_categories
from fsad.config import (
    DEFAULT_STN_MODE,
    DataOptions,
    ModelOptions,
    ProtocolOptions,
    RunOptions,
    TrainingOptions,
    derive,
)
from fsad.errors import ConfigError, OutputExistsError
from fsad.evaluate import EvaluationConfig, run_evaluation
from fsad.paper import PAPER_TABLE5, PAPER_TABLE6, RCM_TABLE7, RCM_TABLE7_VARIANTS
from fsad.results import PERCENT_KEYS, summarise
from fsad.train import TrainConfig, checkpoint_complete, train
from fsad.utils import atomic_write_json, atomic_write_text, check_output_dir, environment_info, resolve_device

ABLATION_FORMAT = "fsad-ablation-v1"
NO_STN = "no_stn"
UNTRAINED = "untrained"


@dataclass(frozen=True)
class AblationRow:
    """One row of Table 5: which of A (augmentation), F (training) and S (STN) are on."""

    name: str
    augment: bool
    trained: bool
    stn: bool


TABLE5_ROWS: tuple[AblationRow, ...] = (
    AblationRow("none", False, False, False),
    AblationRow("A", True, False, False),
    AblationRow("F", False, True, False),
    AblationRow("F+S", False, True, True),
    AblationRow("A+F", True, True, False),
    AblationRow("A+F+S", True, True, True),
)
TABLE5_KS = (2, 4, 8)
# Table 6 columns in the paper's order: no STN, T, R, scale, shear, R+scale, T+scale, T+R, T+R+scale, affine.
TABLE6_SETTINGS: tuple[str, ...] = (
    NO_STN,
    "translation",
    "rotation",
    "scale",
    "shear",
    "rotation_scale",
    "translation_scale",
    "rotation_translation",
    "rotation_translation_scale",
    "affine",
)
TABLE6_KS = (2,)

# The papers' numbers live in one place, fsad/paper.py.
_TABLE6_LABELS = {
    NO_STN: "no STN",
    "translation": "T",
    "rotation": "R",
    "scale": "scale",
    "shear": "shear",
    "rotation_scale": "R+scale",
    "translation_scale": "T+scale",
    "rotation_translation": "T+R",
    "rotation_translation_scale": "T+R+scale",
    "affine": "affine",
}


@dataclass(kw_only=True)
class AblationConfig(RunOptions, TrainingOptions, ModelOptions, ProtocolOptions, DataOptions):
    """Settings of an ablation grid: data, evaluation protocol, training and model options (the groups of
    :mod:`fsad.config`, shared with :class:`~fsad.train.TrainConfig` and :class:`~fsad.evaluate.EvaluationConfig`).

    ``stn_mode`` is the STN of Table 5's 'S' rows (paper: rotation_scale on MVTec; affine was best on MPDD).
    ``categories`` (default: every category under the root) are the evaluated targets; each is trained on all
    the *other* categories under the root. ``ks`` defaults to the table's own k.
    """

    categories: list[str] | None = None
    ks: list[int] | None = None
    stn_mode: str = DEFAULT_STN_MODE


# --------------------------------------------------------------------------- the two building blocks
def checkpoint_path(config: AblationConfig, setting: str, target: str) -> Path:
    return Path(config.out) / "checkpoints" / setting / target / "last.pt"


def train_config(config: AblationConfig, setting: str, target: str) -> TrainConfig:
    """The leave-``target``-out training of one setting (``no_stn`` or an STN mode)."""
    return derive(
        TrainConfig,
        config,
        target=target,
        out=str(checkpoint_path(config, setting, target).parent),
        stn_mode=None if setting == NO_STN else setting,
        resume=True,
    )


def ensure_checkpoint(config: AblationConfig, setting: str, target: str, progress: bool = True) -> Path:
    """Train (or finish training) the checkpoint of ``(setting, target)``; skip it when already complete."""
    training = train_config(config, setting, target)
    path = checkpoint_path(config, setting, target)
    if checkpoint_complete(path, training):
        return path
    return train(training, progress=progress)


def evaluate_cell(
    config: AblationConfig,
    setting: str,
    augment: bool,
    target: str,
    ks: Sequence[int],
    checkpoint: Path | None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate one (setting, augmentation) on one target over ``ks`` × runs (resumable)."""
    trained = setting != UNTRAINED
    evaluation = derive(
        EvaluationConfig,
        config,
        categories=[target],
        ks=list(ks),
        out=str(Path(config.out) / "cells" / f"{setting}__{'aug' if augment else 'noaug'}" / f"{target}.json"),
        method="regad",
        checkpoint=str(checkpoint) if trained else None,
        stn_mode=None if setting in (UNTRAINED, NO_STN) else setting,
        augment_families=list(config.augment_families) if augment else [],
        resume=True,
    )
    return run_evaluation(evaluation, progress=progress)


# --------------------------------------------------------------------------- grids
def _prepare(config: AblationConfig, table: str, default_ks: Sequence[int]) -> tuple[list[str], list[int]]:
    present = list_categories(config.data_root, config.dataset)
    categories = list(config.categories) if config.categories else present
    missing = [c for c in categories if c not in present]
    if missing:
        raise ConfigError(f"Categories {missing} are not under {config.data_root}; present: {', '.join(present)}.")
    if len(present) < 2:
        raise ConfigError(
            f"Leave-one-out training needs at least two categories under {config.data_root} (found {present})."
        )
    if config.runs < 1:
        raise ConfigError(f"runs must be at least 1 (got {config.runs}).")
    ks = sorted(set(config.ks or default_ks))
    out = check_output_dir(config.out, "--out")
    previous = [p.name for p in (out / f"{table}.json", out / "checkpoints", out / "cells") if p.exists()]
    if previous and not config.resume:
        raise OutputExistsError(
            f"{out} already holds {', '.join(previous)} from an earlier grid. Pass --resume to "
            "reuse its checkpoints and cells (computing only what is missing), or choose another "
            "--out."
        )
    return categories, ks


def _macro(cells: list[dict[str, Any]], k: int, runs: int) -> dict[str, Any]:
    """Macro average over categories of the mean over runs, via fsad.results.summarise."""
    chosen = [c for c in cells if c["k"] == k and c["run"] < runs]
    rows = [r for r in summarise(chosen) if r["category"] == "macro_average"]
    if not rows:
        return {"image_auroc": None, "pixel_auroc": None, "n_categories": 0, "n_cells": 0}
    row = rows[0]

    def clean(value: float) -> float | None:
        return None if value is None or math.isnan(value) else float(value)

    return {
        "image_auroc": clean(row["image_auroc_mean"]),
        "pixel_auroc": clean(row["pixel_auroc_mean"]),
        "aupro": clean(row["aupro_mean"]),
        "n_categories": len({c["category"] for c in chosen}),
        "n_cells": len(chosen),
    }


def _run_grid(
    config: AblationConfig,
    table: str,
    variants: list[tuple[str, str, bool]],
    ks: list[int],
    categories: list[str],
    progress: bool,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """variants: (row name, setting, augment). Returns the cells of each row and the checkpoints used."""
    checkpoints: dict[str, dict[str, Any]] = {}
    cells: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in variants}
    for target in categories:
        for name, setting, augment in variants:
            checkpoint = None
            if setting != UNTRAINED:
                checkpoint = ensure_checkpoint(config, setting, target, progress)
                checkpoints.setdefault(setting, {})[target] = str(checkpoint)
            document = evaluate_cell(config, setting, augment, target, ks, checkpoint, progress)
            cells[name].extend(c for c in document["cells"] if c["k"] in ks and c["run"] < config.runs)
    return cells, checkpoints


def _training_seconds(checkpoints: dict[str, dict[str, str]]) -> dict[str, dict[str, float]]:
    from fsad.checkpoint import read_checkpoint

    return {
        setting: {
            target: sum(h["seconds"] for h in read_checkpoint(path)["history"]) for target, path in targets.items()
        }
        for setting, targets in checkpoints.items()
    }


def _write(
    config: AblationConfig,
    table: str,
    rows: list[dict[str, Any]],
    checkpoints: dict[str, Any],
    categories: list[str],
    ks: list[int],
) -> dict[str, Any]:
    document = {
        "format": ABLATION_FORMAT,
        "table": table,
        "config": asdict(config),
        "categories": categories,
        "ks": ks,
        "rows": rows,
        "checkpoints": checkpoints,
        "training_seconds": _training_seconds(checkpoints),
        "paper": {"table5": PAPER_TABLE5, "table6": PAPER_TABLE6, "table7": RCM_TABLE7}.get(table),
        "environment": environment_info(resolve_device(config.device)),
        "note": "Model selection: last training epoch; no look at the evaluated category during training.",
    }
    out = Path(config.out)
    atomic_write_json(out / f"{table}.json", document)
    atomic_write_text(out / f"{table}.csv", rows_csv(rows))
    return document


def rows_csv(rows: list[dict[str, Any]]) -> str:
    """The table as CSV, every AUROC/AUPRO in % (ours and the paper's alike); the JSON keeps fractions."""
    import pandas as pd

    if not rows:
        return "\n"
    frame = pd.DataFrame.from_records(rows)
    ours = [c for c in frame.columns if c in PERCENT_KEYS]
    frame[ours] = frame[ours].astype(float) * 100.0
    return frame.to_csv(index=False, float_format="%.6g", lineterminator="\n")


def table5(config: AblationConfig, progress: bool = True) -> dict[str, Any]:
    """Table 5: rows none, A, F, F+S, A+F, A+F+S for each k (default 2, 4, 8).

    Returns:
        The document written to ``<out>/table5.json`` (and ``table5.csv``): one row per (row, k) with the
        macro-average image and pixel AUROC (fractions; ``None`` when no category has masks) and the paper's
        values (in %, ``None`` for datasets the paper does not report).
    """
    categories, ks = _prepare(config, "table5", TABLE5_KS)
    variants = [
        (row.name, (config.stn_mode if row.stn else NO_STN) if row.trained else UNTRAINED, row.augment)
        for row in TABLE5_ROWS
    ]
    cells, checkpoints = _run_grid(config, "table5", variants, ks, categories, progress)
    paper = PAPER_TABLE5.get(config.dataset)
    rows = []
    for row in TABLE5_ROWS:
        for k in ks:
            index = TABLE5_KS.index(k) if k in TABLE5_KS else None
            rows.append(
                {
                    "row": row.name,
                    "A": row.augment,
                    "F": row.trained,
                    "S": row.stn,
                    "k": k,
                    **_macro(cells[row.name], k, config.runs),
                    "paper_image_auroc": paper["image"][row.name][index] if paper and index is not None else None,
                    "paper_pixel_auroc": paper["pixel"][row.name][index] if paper and index is not None else None,
                }
            )
    return _write(config, "table5", rows, checkpoints, categories, ks)


def table6(config: AblationConfig, progress: bool = True, settings: Sequence[str] = TABLE6_SETTINGS) -> dict[str, Any]:
    """Table 6: A+F with no STN and with each STN mode, at k = 2 (default).

    Args:
        settings: the columns to run (default all ten; tests pass a subset).

    Returns:
        The document written to ``<out>/table6.json`` / ``table6.csv`` (one row per setting and k).
    """
    unknown = [s for s in settings if s not in TABLE6_SETTINGS]
    if unknown:
        raise ConfigError(f"Unknown Table 6 settings {unknown}; choose from {', '.join(TABLE6_SETTINGS)}.")
    categories, ks = _prepare(config, "table6", TABLE6_KS)
    variants = [(setting, setting, True) for setting in settings]
    cells, checkpoints = _run_grid(config, "table6", variants, ks, categories, progress)
    paper = PAPER_TABLE6.get(config.dataset)
    rows = [
        {
            "row": setting,
            "label": _TABLE6_LABELS[setting],
            "k": k,
            **_macro(cells[setting], k, config.runs),
            "paper_image_auroc": paper[setting] if paper and k == 2 else None,
        }
        for setting in settings
        for k in ks
    ]
    return _write(config, "table6", rows, checkpoints, categories, ks)


def table7(
    config: AblationConfig, progress: bool = True, variants: dict[str, tuple[str, bool]] | None = None
) -> dict[str, Any]:
    """RCM-FSAD Table 7: RegAD's A+F+S row with each attention/DCN variant, trained leave-one-out.

    Each variant gets its own folder ``<out>/table7/<variant>/`` (checkpoints and cells are reused
    on a rerun), trained with ``config.stn_mode`` and evaluated with support augmentation.

    Args:
        config: the grid settings; its ``attention``/``dcn`` are overridden per variant.
        variants: row name -> (attention, dcn); default :data:`fsad.paper.RCM_TABLE7_VARIANTS`
            (R18, +TAM, +MAM, +DCNv2, +MAM+DCNv2).

    Returns:
        The document written to ``<out>/table7.json`` (and ``table7.csv``).
    """
    from fsad.costs import variant_label

    variants = dict(variants or RCM_TABLE7_VARIANTS)
    unknown = [name for name, (attention, _) in variants.items() if attention not in ("none", "tam", "mam")]
    if unknown:
        raise ConfigError(f"Variants {unknown} name an unknown attention; valid: none, tam, mam.")
    categories, ks = _prepare(config, "table7", TABLE5_KS)
    rows: list[dict[str, Any]] = []
    checkpoints: dict[str, Any] = {}
    for name, (attention, dcn) in variants.items():
        variant = replace(
            config,
            attention=attention,
            dcn=dcn,
            resume=True,
            out=str(Path(config.out) / "table7" / name.replace("+", "_")),
        )
        cells, used = _run_grid(variant, "table7", [(name, variant.stn_mode, True)], ks, categories, progress)
        checkpoints[name] = used.get(variant.stn_mode, {})
        paper = RCM_TABLE7.get(name, {})
        for k in ks:
            # "row" keeps the paper's name (R18...) for look-ups; "label" names the backbone actually used.
            rows.append(
                {
                    "row": name,
                    "label": variant_label(name, config.backbone),
                    "attention": attention,
                    "dcn": dcn,
                    "k": k,
                    **_macro(cells[name], k, config.runs),
                    "paper_image_auroc": paper.get("image", {}).get(k),
                    "paper_pixel_auroc": paper.get("pixel", {}).get(k),
                }
            )
    return _write(config, "table7", rows, checkpoints, categories, ks)


def format_ablation(document: dict[str, Any]) -> str:
    """Printable table: our macro AUROC (%) beside the paper's, per row and k."""

    def pct(value: float | None) -> str:
        return "—" if value is None else f"{100 * value:5.1f}"

    def paper(value: float | None) -> str:
        return "—" if value is None else f"{value:.1f}"

    config = document["config"]
    title = (
        f"{document['table']} on {config['dataset']} ({len(document['categories'])} categories, "
        f"{config['runs']} runs, {config['epochs']} epochs, backbone {config['backbone']}); AUROC % ours (paper)"
    )
    pixel = document["table"] == "table5"
    header = f"{'row':<12} {'k':>3}  {'image':>7} {'(paper)':>8}" + (f"  {'pixel':>7} {'(paper)':>8}" if pixel else "")
    lines = [title, header, "-" * len(header)]
    for row in document["rows"]:
        name = row.get("label", row["row"])
        line = (
            f"{name:<12} {row['k']:>3}  {pct(row['image_auroc']):>7} {'(' + paper(row['paper_image_auroc']) + ')':>8}"
        )
        if pixel:
            line += f"  {pct(row['pixel_auroc']):>7} {'(' + paper(row['paper_pixel_auroc']) + ')':>8}"
        lines.append(line)
    return "\n".join(lines)
