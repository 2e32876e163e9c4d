"""Regenerated tables and figures: our results beside the papers' numbers (:mod:`fsad.paper`).

Everything here reads results files (``run_evaluation`` JSON, the ablation grids' ``table5/6/7.json``)
or calls the library to produce the few things results files do not hold (anomaly maps for the
localisation panels; the t-SNE figure is :mod:`fsad.embedding`). The notebooks 05–08 and ``make figures`` only
call these functions, so a table is built one way whichever door it is reached through.

One module per job, every public name re-exported here (``from fsad import figures; figures.load_cells(...)``):

* :mod:`fsad.figures.results` — reading results files: :func:`load_cells`, :func:`load_ablation`,
  :func:`method_label`, :func:`method_columns`;
* :mod:`fsad.figures.columns` — running the evaluations behind a table's columns: :func:`method_config`,
  :func:`evaluate_methods`;
* :mod:`fsad.figures.tables` — tables in % and their text forms: :func:`per_category_table`,
  :func:`method_comparison_table`, :func:`ablation_table`, :func:`write_rows_csv`, :func:`save_table`,
  :func:`format_rows`, :func:`markdown_report`;
* :mod:`fsad.figures.plots` — matplotlib figures: :func:`comparison_figure`, :func:`ablation_figure`,
  :func:`localisation_figure`, :func:`save_figure`;
* :mod:`fsad.figures.localisation` — fitting a model to keep its maps: :func:`localisation_examples`,
  :func:`select_examples`;
* :mod:`fsad.figures.samples` — real sample images: :func:`shared_data_root`, :func:`sample_image`.

The last three are imported on first use (PEP 562 ``__getattr__``), so reading results and printing tables
(``python -m fsad report``) does not load matplotlib.

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

import importlib
from typing import Any

from fsad.figures.columns import evaluate_methods, method_config
from fsad.figures.results import (
    ABLATION_FORMAT,
    AUGMENTED_PATCHCORE,
    AUGMENTED_SUFFIX,
    load_ablation,
    load_cells,
    method_columns,
    method_label,
)
from fsad.figures.tables import (
    ablation_table,
    format_rows,
    markdown_report,
    method_comparison_table,
    per_category_table,
    save_table,
    write_rows_csv,
)

# Names from the modules that plot (matplotlib) or fit models, imported when one of them is first used.
_LAZY = {
    "comparison_figure": "plots",
    "ablation_figure": "plots",
    "localisation_figure": "plots",
    "save_figure": "plots",
    "localisation_examples": "localisation",
    "select_examples": "localisation",
    "SHARED_DATA_ENV": "samples",
    "shared_data_root": "samples",
    "sample_image": "samples",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ABLATION_FORMAT",
    "AUGMENTED_PATCHCORE",
    "AUGMENTED_SUFFIX",
    "SHARED_DATA_ENV",
    "ablation_figure",
    "ablation_table",
    "comparison_figure",
    "evaluate_methods",
    "format_rows",
    "load_ablation",
    "load_cells",
    "localisation_examples",
    "localisation_figure",
    "markdown_report",
    "method_columns",
    "method_comparison_table",
    "method_config",
    "method_label",
    "per_category_table",
    "sample_image",
    "save_figure",
    "save_table",
    "select_examples",
    "shared_data_root",
    "write_rows_csv",
]
