"""Matplotlib figures of the tables (:mod:`fsad.figures.tables`) and localisation examples
(:mod:`fsad.figures.localisation`), and :func:`save_figure`. The only module of :mod:`fsad.figures` that
imports matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np


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


def save_figure(fig: plt.Figure, name: str, figures_dir: str | Path, dpi: int = 120) -> Path:
    """``<figures_dir>/<name>.png`` — :func:`fsad.viz.savefig`'s counterpart for the regenerated-figures folder
    (``make figures`` writes ``figures/*.png`` at the top of the repository, not under a run's output)."""
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
