"""Figures: every plot the notebooks show is made and saved here (pyprobml-style ``savefig``).

Functions take tensors/arrays and return a matplotlib Figure; :func:`savefig` writes it under the
run's output folder with a stable name, so "regenerate every figure" is one command.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

# matplotlib picks Agg by itself on a headless machine and the inline backend inside Jupyter.
import matplotlib.pyplot as plt
import numpy as np
import torch

from data_tools.constants import IMAGENET_MEAN, IMAGENET_STD


def savefig(fig: plt.Figure, name: str, output_dir: str | Path, dpi: int = 120) -> Path:
    """Save ``fig`` as ``<output_dir>/figures/<name>.png`` and return the path."""
    path = Path(output_dir) / "figures" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def to_display(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """ImageNet-normalised ``[3,H,W]`` tensor -> ``[H,W,3]`` array in [0,1] for imshow."""
    array = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array.transpose(1, 2, 0)
    if array.shape[-1] == 3:
        array = array * np.asarray(IMAGENET_STD) + np.asarray(IMAGENET_MEAN)
    return np.clip(array.squeeze(), 0.0, 1.0)


def feature_to_display(feature: torch.Tensor) -> np.ndarray:
    """``[C,h,w]`` feature map -> ``[h,w]`` channel-mean, min-max scaled (what a feature 'looks like')."""
    mean = feature.detach().float().mean(0).cpu().numpy()
    return (mean - mean.min()) / (np.ptp(mean) + 1e-12)


def image_grid(images: Sequence[Any], titles: Sequence[str] | None = None, ncols: int = 6,
               cmap: str | None = None, size: float = 2.0) -> plt.Figure:
    """A grid of images (normalised tensors, arrays, or feature maps already reduced to 2-D)."""
    n = len(images)
    ncols = min(ncols, n)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, image in enumerate(images):
        ax = axes.flat[i]
        array = to_display(image) if (isinstance(image, torch.Tensor) and image.dim() == 3) else np.asarray(image)
        ax.imshow(array, cmap=cmap if array.ndim == 2 else None)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.tight_layout()
    return fig


def localisation_panel(images: torch.Tensor, masks: np.ndarray | None, maps: np.ndarray,
                       titles: Sequence[str] | None = None, vmax: float | None = None) -> plt.Figure:
    """Rows of (image, ground truth, anomaly map, overlay) as in the paper's Fig. 3.

    Args:
        images: ``[N,3,H,W]`` ImageNet-normalised.
        masks: ``[N,H,W]`` binary or None (image-level datasets).
        maps: ``[N,H,W]`` anomaly maps (one colour scale for all rows, so rows compare).
    """
    n = len(images)
    vmax = float(np.max(maps)) if vmax is None else vmax
    vmin = float(np.min(maps))
    fig, axes = plt.subplots(n, 4, figsize=(8, 2 * n), squeeze=False)
    for i in range(n):
        rgb = to_display(images[i])
        panels = [(rgb, None, "image"), (masks[i] if masks is not None else np.zeros(maps[i].shape), "gray", "ground truth"),
                  (maps[i], "jet", "anomaly map")]
        for j, (array, cmap, name) in enumerate(panels):
            axes[i, j].imshow(array, cmap=cmap, vmin=vmin if j == 2 else None, vmax=vmax if j == 2 else None)
        axes[i, 3].imshow(rgb)
        axes[i, 3].imshow(maps[i], cmap="jet", alpha=0.45, vmin=vmin, vmax=vmax)
        for j, name in enumerate(("image", "ground truth", "anomaly map", "overlay")):
            axes[i, j].axis("off")
            if i == 0:
                axes[i, j].set_title(name, fontsize=9)
        if titles is not None:
            axes[i, 0].set_ylabel(titles[i], fontsize=8)
            axes[i, 0].text(2, 12, titles[i], color="white", fontsize=7, backgroundcolor="black")
    fig.tight_layout()
    return fig


def score_histogram(scores: np.ndarray, labels: np.ndarray, title: str = "") -> plt.Figure:
    """Image scores of good vs defective test images: where the threshold would have to go."""
    fig, ax = plt.subplots(figsize=(5, 3))
    bins = np.linspace(float(np.min(scores)), float(np.max(scores)), 30)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="good")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="defective")
    ax.set_xlabel("image score (max of the anomaly map)")
    ax.set_ylabel("test images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def line_plot(x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str,
              title: str = "") -> plt.Figure:
    """Simple curves (loss per step, AUROC per k...)."""
    fig, ax = plt.subplots(figsize=(5, 3))
    for label, y in ys.items():
        ax.plot(x, y, marker="o" if len(x) < 20 else None, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(ys) > 1:
        ax.legend()
    fig.tight_layout()
    return fig


def embedding_scatter(points: np.ndarray, groups: Sequence[str], title: str = "") -> plt.Figure:
    """2-D embedding (t-SNE) coloured by group, as in the paper's Fig. 4."""
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5, 4.5))
    sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=list(groups), s=14, ax=ax, palette="tab20")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(fontsize=7, markerscale=0.8, loc="best")
    fig.tight_layout()
    return fig


def table_figure(rows: list[dict[str, Any]], columns: Sequence[str], title: str = "") -> plt.Figure:
    """Render a small results table as a figure (for README images and the regeneration notebook)."""
    fig, ax = plt.subplots(figsize=(1.6 * len(columns), 0.35 * (len(rows) + 2)))
    ax.axis("off")
    cells = [[("—" if r.get(c) is None else (f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r[c])))
              for c in columns] for r in rows]
    table = ax.table(cellText=cells, colLabels=list(columns), loc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig
