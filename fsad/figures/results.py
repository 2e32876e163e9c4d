"""Reading results files: evaluation cells (``fsad-results-v1`` JSON) and ablation documents, and the table
label of a configured method.

No plotting here (no matplotlib), so ``python -m fsad report`` reads results without it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

from fsad.errors import FsadError, MissingFileError
from fsad.results import RESULTS_FORMAT

ABLATION_FORMAT = "fsad-ablation-v1"
# Suffix of a method that does not augment by default run with augmentation (PatchCore-k whose bank also holds
# the augmented views): the column name method_config accepts and the label method_label gives such results, so
# the two cannot drift apart.
AUGMENTED_SUFFIX = "_aug"
AUGMENTED_PATCHCORE = f"patchcore{AUGMENTED_SUFFIX}"


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
    """Figure columns :func:`fsad.figures.columns.method_config` accepts: every registered method, then
    ``<name>_aug`` for each that does not augment by default (``patchcore_aug``)."""
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
