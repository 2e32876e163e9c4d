"""Running the evaluations behind a table's columns: one :class:`fsad.evaluate.EvaluationConfig` per
(column, category) (:func:`method_config`) and :func:`evaluate_methods`, which runs them and reads the cells back.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from fsad.errors import ConfigError, MissingFileError
from fsad.figures.results import AUGMENTED_SUFFIX, load_cells, method_columns


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
        methods: columns, each in :func:`fsad.figures.results.method_columns` (the registered methods and
            ``"patchcore_aug"``).
        out_dir: folder for the results files.
        checkpoint_dir: folder of per-category checkpoints, or None for the training-free RegAD ('A' row).
        resume: keep the finished cells of existing results files (same options) and compute only the rest.

    Returns:
        every cell, as :func:`fsad.figures.results.load_cells` gives them.

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
