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


def image_grid(
    images: Sequence[Any],
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    cmap: str | None = None,
    size: float = 2.0,
) -> plt.Figure:
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


def localisation_panel(
    images: torch.Tensor,
    masks: np.ndarray | None,
    maps: np.ndarray,
    titles: Sequence[str] | None = None,
    vmax: float | None = None,
) -> plt.Figure:
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
        panels = [
            (rgb, None, "image"),
            (masks[i] if masks is not None else np.zeros(maps[i].shape), "gray", "ground truth"),
            (maps[i], "jet", "anomaly map"),
        ]
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
    # One colour scale for every map and overlay (vmin/vmax above), so one colour bar says what the colours mean.
    bar = fig.colorbar(
        plt.cm.ScalarMappable(norm=plt.Normalize(vmin, vmax), cmap="jet"),
        ax=list(axes[:, 2:].flat),
        fraction=0.03,
        pad=0.02,
    )
    bar.set_label("anomaly score (Mahalanobis or nearest-neighbour distance)", fontsize=8)
    return fig


def threshold_figure(
    curve: dict[str, np.ndarray],
    scores: np.ndarray,
    labels: np.ndarray,
    marks: dict[str, float] | None = None,
    title: str = "",
) -> plt.Figure:
    """Left: F1, precision, recall and false-alarm rate against the threshold (``fsad.metrics.threshold_curve``);
    right: the good/defective score histograms on the same threshold axis. ``marks``: named thresholds drawn as
    vertical lines on both panels (the operating points)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4), sharex=True)
    styles = {
        "F1": ("tab:purple", "-"),
        "precision": ("tab:green", "--"),
        "recall (defects caught)": ("tab:red", "-"),
        "false-alarm rate": ("tab:blue", "-"),
    }
    keys = {
        "F1": "f1",
        "precision": "precision",
        "recall (defects caught)": "recall",
        "false-alarm rate": "false_alarm_rate",
    }
    for name, (color, style) in styles.items():
        left.step(curve["threshold"], curve[keys[name]], where="post", color=color, linestyle=style, label=name)
    left.set_xlabel("threshold t (flag the image if its score ≥ t)")
    left.set_ylabel("rate")
    left.set_ylim(-0.02, 1.02)
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    bins = np.linspace(float(scores.min()), float(scores.max()), 25)
    right.hist(scores[labels == 0], bins=bins, alpha=0.6, color="tab:blue", label=f"good ({int((labels == 0).sum())})")
    right.hist(
        scores[labels == 1], bins=bins, alpha=0.6, color="tab:red", label=f"defective ({int((labels == 1).sum())})"
    )
    right.set_xlabel("image score (max of the anomaly map)")
    right.set_ylabel("test images")
    for (name, value), color in zip((marks or {}).items(), ("black", "tab:orange", "tab:gray", "tab:olive")):
        for ax in (left, right):
            ax.axvline(value, color=color, linestyle=":", linewidth=1.5, label=f"{name}: t = {value:.2f}")
    left.legend(fontsize=7, loc="best")
    right.legend(fontsize=7, loc="best")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def decision_overlay(map_: np.ndarray, mask: np.ndarray | None, threshold: float) -> np.ndarray:
    """RGB picture of the pixel decision ``map >= threshold`` against the ground truth: green = hit (flagged
    defect pixel), red = false alarm (flagged normal pixel), blue = missed defect pixel, black = correct normal."""
    flagged = np.asarray(map_) >= threshold
    truth = np.zeros_like(flagged) if mask is None else np.asarray(mask).astype(bool)
    return np.stack([flagged & ~truth, flagged & truth, ~flagged & truth], axis=-1).astype(float)


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


def line_plot(
    x: Sequence[float], ys: dict[str, Sequence[float]], xlabel: str, ylabel: str, title: str = ""
) -> plt.Figure:
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
    cells = [
        [("—" if r.get(c) is None else (f"{r[c]:.1f}" if isinstance(r.get(c), float) else str(r[c]))) for c in columns]
        for r in rows
    ]
    # bbox fills the axes, so the figure height set above is the table's height (no blank margins).
    table = ax.table(cellText=cells, colLabels=list(columns), loc="center", bbox=[0, 0, 1, 1])
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------
# Helpers of the tutorial notebooks 00–04 (each returns a Figure, or the small arrays a figure is drawn from).
# ----------------------------------------------------------------------------------------------------------
def augment_view_titles(families: Sequence[str] | None = None) -> list[str]:
    """Titles of the views :func:`fsad.augment.augment_supports` makes of one image, in its output order.

    Example:
        >>> augment_view_titles(["flip", "gray"])
        ['original', 'hflip', 'gray']
    """
    from fsad.augment import AUGMENT_FAMILIES, ROT90_TURNS, ROTATION_ANGLES, TRANSLATION_OFFSETS

    chosen = set(AUGMENT_FAMILIES if families is None else families)
    titles = ["original"]
    if "rotation" in chosen:
        titles += [f"rot {np.degrees(a):+.2f}°".replace(".00", "").replace(".50", ".5") for a in ROTATION_ANGLES]
    if "translation" in chosen:
        titles += [f"shift ({a:+.1f}, {b:+.1f})" for a, b in TRANSLATION_OFFSETS]
    if "flip" in chosen:
        titles.append("hflip")
    if "gray" in chosen:
        titles.append("gray")
    if "rot90" in chosen:
        titles += [f"rot90 ×{t}" for t in ROT90_TURNS]
    return titles


def sampled_outside(theta: torch.Tensor, size: int | tuple[int, int]) -> np.ndarray:
    """Where ``fsad.models.stn.warp(x, theta)`` samples outside ``x`` (so its padding mode fills the pixel).

    ``warp`` reads ``x`` at ``θ·p``; a position whose ``θ·p`` leaves [-1, 1]² gets reflected (or zero, or
    border) content instead of the true image. Drawing this region explains where a warp-and-invert round trip
    cannot give the original back.

    Args:
        theta: ``[N,2,3]``.
        size: output side ``S`` (or ``(H, W)``).

    Returns:
        ``[N,H,W]`` bool.
    """
    import torch.nn.functional as F

    h, w = (size, size) if isinstance(size, int) else size
    grid = F.affine_grid(theta.detach().float().cpu(), [theta.shape[0], 1, h, w], align_corners=False)
    return (grid.abs() > 1.0).any(dim=-1).numpy()


def feature_pca_rgb(features: Sequence[torch.Tensor], reference: int = 0) -> list[np.ndarray]:
    """Feature maps ``[C,h,w]`` -> ``[h,w,3]`` RGB images by their top-3 principal components.

    The components (and the colour scaling: 1st–99th percentile) come from ``features[reference]`` and are
    applied to all maps, so equal colours mean similar feature vectors across the panels — far more readable
    than a channel mean. Maps may differ in size but must share ``C``.
    """
    flat = [f.detach().float().cpu().reshape(f.shape[0], -1).T for f in features]  # [hw, C] each
    ref = flat[reference]
    mean = ref.mean(0, keepdim=True)
    # torch.linalg.svd of the centred reference: its right singular vectors are the principal axes.
    _, _, vh = torch.linalg.svd(ref - mean, full_matrices=False)
    basis = vh[:3].T
    projected = [((x - mean) @ basis).numpy() for x in flat]
    lo, hi = np.percentile(projected[reference], [1, 99], axis=0)
    out = []
    for f, p in zip(features, projected):
        rgb = np.clip((p - lo) / (hi - lo + 1e-12), 0.0, 1.0)
        out.append(rgb.reshape(f.shape[1], f.shape[2], -1))
    return out


def heatmap_grid(
    rows: Sequence[Sequence[Any]],
    titles: Sequence[Sequence[str]],
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    contours: Sequence[Sequence[np.ndarray | None]] | None = None,
    colorbar_label: str = "",
    size: float = 2.6,
) -> plt.Figure:
    """Rows of panels: RGB images (normalised ``[3,H,W]`` tensors or ``[H,W,3]`` arrays in [0,1]) and 2-D heat
    maps on one shared colour scale (with one colour bar), optionally with white contours (a mask, an
    out-of-frame region...)."""
    nrows, ncols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows), squeeze=False)

    def is_rgb(a: Any) -> bool:
        return (isinstance(a, torch.Tensor) and a.dim() == 3) or np.asarray(a).ndim == 3

    heat = [np.asarray(a, float) for row in rows for a in row if not is_rgb(a)]
    lo = vmin if vmin is not None else (min(float(np.nanmin(h)) for h in heat) if heat else 0.0)
    hi = vmax if vmax is not None else (max(float(np.nanmax(h)) for h in heat) if heat else 1.0)
    mappable = None
    for ax in axes.flat:
        ax.axis("off")
    for r, row in enumerate(rows):
        for c, array in enumerate(row):
            ax = axes[r, c]
            if isinstance(array, torch.Tensor) and array.dim() == 3:
                ax.imshow(to_display(array))
            elif np.asarray(array).ndim == 3:
                ax.imshow(np.asarray(array))
            else:
                mappable = ax.imshow(np.asarray(array, float), cmap=cmap, vmin=lo, vmax=hi)
            if contours is not None and contours[r][c] is not None and np.any(contours[r][c]):
                ax.contour(np.asarray(contours[r][c], float), levels=[0.5], colors="white", linewidths=1.0)
            ax.set_title(titles[r][c], fontsize=8)
    if mappable is not None:
        bar = fig.colorbar(mappable, ax=list(axes.flat), fraction=0.025, pad=0.02)
        bar.set_label(colorbar_label, fontsize=8)
    return fig


def heatmap_row(
    arrays: Sequence[Any],
    titles: Sequence[str],
    cmap: str = "magma",
    vmin: float | None = None,
    vmax: float | None = None,
    contours: Sequence[np.ndarray | None] | None = None,
    colorbar_label: str = "",
    size: float = 2.6,
) -> plt.Figure:
    """One row of :func:`heatmap_grid`."""
    return heatmap_grid(
        [arrays],
        [titles],
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        contours=None if contours is None else [contours],
        colorbar_label=colorbar_label,
        size=size,
    )


def score_histograms(
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
    xlabel: str = "image score (max of the map)",
    size: tuple[float, float] = (4.2, 3.0),
) -> plt.Figure:
    """Side-by-side :func:`score_histogram` panels, one per setting: ``{title: (scores, labels)}``."""
    fig, axes = plt.subplots(1, len(panels), figsize=(size[0] * len(panels), size[1]), squeeze=False)
    for ax, (title, (scores, labels)) in zip(axes[0], panels.items()):
        scores, labels = np.asarray(scores, float), np.asarray(labels)
        bins = np.linspace(float(scores.min()), float(scores.max()), 25)
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label=f"good ({int((labels == 0).sum())})")
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label=f"defective ({int((labels == 1).sum())})")
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("test images", fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def max_locations(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of each map's maximum (the pixel that decides the image score): ``([N], [N])``."""
    maps = np.asarray(maps)
    return np.unravel_index(maps.reshape(len(maps), -1).argmax(axis=1), maps.shape[1:])


def max_inside_outside(maps: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image, the map's maximum inside the ground-truth mask and outside it (NaN where a region is empty).

    For a defective image, ``outside > inside`` means its image score comes from a place that is *not* the
    defect: the max-of-map score then measures something else (misalignment, lighting) than the defect.
    """
    maps, masks = np.asarray(maps, float), np.asarray(masks, bool)
    inside = np.where(masks, maps, -np.inf).reshape(len(maps), -1).max(axis=1)
    outside = np.where(~masks, maps, -np.inf).reshape(len(maps), -1).max(axis=1)
    inside[~masks.reshape(len(masks), -1).any(axis=1)] = np.nan
    outside[masks.reshape(len(masks), -1).all(axis=1)] = np.nan
    return inside, outside


def max_location_figure(
    background: torch.Tensor | np.ndarray, maps: np.ndarray, labels: np.ndarray, title: str = ""
) -> plt.Figure:
    """Where the image scores come from: each test map's arg-max drawn over an image, good vs defective,
    next to the mean map of the good and of the defective images."""
    labels = np.asarray(labels)
    rows, cols = max_locations(maps)
    fig, axes = plt.subplots(1, 3, figsize=(10.5, 3.4))
    rgb = to_display(background) if isinstance(background, torch.Tensor) else np.asarray(background)
    axes[0].imshow(rgb, alpha=0.6)
    axes[0].scatter(cols[labels == 0], rows[labels == 0], s=22, c="lime", edgecolors="k", label="good")
    axes[0].scatter(cols[labels == 1], rows[labels == 1], s=22, c="red", marker="x", label="defective")
    axes[0].legend(fontsize=7, loc="lower right")
    axes[0].set_title("arg-max of each test map", fontsize=9)
    lo, hi = float(np.min(maps)), float(np.max(maps))
    for ax, group, name in ((axes[1], 0, "good"), (axes[2], 1, "defective")):
        image = ax.imshow(np.asarray(maps)[labels == group].mean(axis=0), cmap="jet", vmin=lo, vmax=hi)
        ax.set_title(f"mean map of the {name} images", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.colorbar(image, ax=list(axes), fraction=0.02, pad=0.01)
    fig.suptitle(title, fontsize=10)
    return fig


def inside_outside_figure(
    inside: np.ndarray, outside: np.ndarray, good_scores: np.ndarray, title: str = ""
) -> plt.Figure:
    """Defective images: map max inside the defect (x) vs outside it (y); the good images' scores as a band.

    Points above the diagonal are defective images whose score is set by a non-defect region. The shaded band
    spans the good images' scores (10th–90th percentile): a defective image is ranked above the good ones only
    if its score clears that band.
    """
    inside, outside = np.asarray(inside, float), np.asarray(outside, float)
    keep = np.isfinite(inside) & np.isfinite(outside)
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    lo = float(min(inside[keep].min(), outside[keep].min(), np.min(good_scores)))
    hi = float(max(inside[keep].max(), outside[keep].max(), np.max(good_scores)))
    q10, q90 = np.percentile(good_scores, [10, 90])
    ax.axhspan(q10, q90, color="tab:blue", alpha=0.12, label="good images' scores (10–90 %)")
    ax.axvspan(q10, q90, color="tab:blue", alpha=0.12)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    above = outside[keep] > inside[keep]
    ax.scatter(
        inside[keep][above],
        outside[keep][above],
        s=14,
        c="tab:red",
        label=f"max outside the defect ({int(above.sum())})",
    )
    ax.scatter(
        inside[keep][~above],
        outside[keep][~above],
        s=14,
        c="tab:green",
        label=f"max inside the defect ({int((~above).sum())})",
    )
    ax.set_xlabel("map max inside the defect mask", fontsize=8)
    ax.set_ylabel("map max outside the defect mask", fontsize=8)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def embedding_scatters(panels: dict[str, tuple[np.ndarray, Sequence[str]]], size: float = 4.2) -> plt.Figure:
    """Several 2-D embeddings side by side, one colour per group and one legend (the paper's Fig. 4 a/b)."""
    import seaborn as sns

    groups = sorted({g for _, gs in panels.values() for g in gs})
    palette = dict(zip(groups, sns.color_palette("tab20" if len(groups) > 10 else "tab10", len(groups))))
    fig, axes = plt.subplots(1, len(panels), figsize=(size * len(panels) + 1.6, size), squeeze=False)
    for ax, (title, (points, labels)) in zip(axes[0], panels.items()):
        labels = np.asarray(labels)
        for group in groups:
            sel = labels == group
            if sel.any():
                ax.scatter(points[sel, 0], points[sel, 1], s=10, color=palette[group], label=group)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=9)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, loc="center right", fontsize=7, markerscale=1.5, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (size * len(panels) + 1.6), 1))
    return fig


def contour_panels(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    fields: dict[str, np.ndarray],
    points: np.ndarray | Sequence[np.ndarray],
    levels: Sequence[float] = (1, 2, 3, 4, 5),
    xlabel: str = "channel 1",
    ylabel: str = "channel 2",
    colorbar_label: str = "distance from the mean",
    vmax: float | None = None,
    size: float = 3.4,
) -> plt.Figure:
    """Distance fields over a 2-D feature plane, side by side on one colour scale, with the samples drawn on top.

    Args:
        grid_x, grid_y: ``[H, W]`` coordinates (``np.meshgrid``).
        fields: title -> ``[H, W]`` distance values (e.g. Euclidean and Mahalanobis distance to the mean).
        points: ``[N, 2]`` samples the distances were fitted on, or one such array per panel.
        levels: contour lines drawn (labelled).
        vmax: top of the shared colour scale (default: the largest level).
    """
    vmax = float(max(levels)) if vmax is None else vmax
    per_panel = list(points) if not isinstance(points, np.ndarray) else [points] * len(fields)
    if len(per_panel) != len(fields):
        raise ValueError(f"{len(fields)} fields but {len(per_panel)} point sets; pass one array or one per field.")
    fig, axes = plt.subplots(
        1, len(fields), figsize=(size * len(fields) + 1.0, size), squeeze=False, constrained_layout=True
    )
    image = None
    for ax, (title, field), pts in zip(axes[0], fields.items(), per_panel):
        image = ax.pcolormesh(
            grid_x, grid_y, np.minimum(field, vmax), cmap="viridis", vmin=0, vmax=vmax, shading="auto"
        )
        lines = ax.contour(grid_x, grid_y, field, levels=list(levels), colors="white", linewidths=0.8)
        ax.clabel(lines, fontsize=7, fmt="%g")
        pts = np.asarray(pts)
        ax.scatter(
            pts[:, 0],
            pts[:, 1],
            s=14,
            color="tab:red",
            edgecolor="white",
            linewidth=0.5,
            label=f"samples the Gaussian is fitted on (N = {len(pts)})",
        )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=9)
        ax.set_aspect("equal")
        ax.legend(fontsize=6, loc="upper left")
    fig.colorbar(image, ax=list(axes[0]), label=colorbar_label, shrink=0.9)
    return fig
