"""Tables in % beside the papers' numbers (:mod:`fsad.paper`): per category, methods side by side, the
ablation tables 5/6/7, and their CSV, plain-text and markdown forms.

No plotting here (no matplotlib): ``python -m fsad report`` prints :func:`markdown_report`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fsad import paper
from fsad.results import mean_std
from fsad.utils import atomic_write_text


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
        cells: from :func:`fsad.figures.results.load_cells`.
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


def ablation_table(document: dict[str, Any], paper_dataset: str | None = None) -> list[dict[str, Any]]:
    """Rows of an ablation document in %, with the paper's values from :mod:`fsad.paper`.

    Args:
        document: from :func:`fsad.figures.results.load_ablation` / ``fsad.ablation.table5/6/7``.
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


def _none_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)


def save_table(rows: Sequence[dict[str, Any]], name: str, figures_dir: str | Path) -> Path:
    """``<figures_dir>/tables/<name>.csv``."""
    return write_rows_csv(rows, Path(figures_dir) / "tables" / f"{name}.csv")


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
