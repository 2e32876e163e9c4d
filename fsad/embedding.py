"""RegAD's Fig. 4 (Sec. 5.4): t-SNE of normal features without and with registration, computed one way.

The paper: "Each dot here represents an augmented normal sample from the test set", features of the baseline
without registration (a) and of the registration-trained model (b), "the same t-SNE optimization iterations" for
both. The kit's recipe, used by notebook 04 (the tutorial) and notebook 08 / ``make figures`` (the regenerated
figure), so that the two figures cannot disagree by construction:

1. :func:`augmented_normals` — the first ``n_images`` ``test/good`` images of each category (``train/good`` when a
   category has no test split), each expanded into its augmented views (:mod:`fsad.augment`, all families: 22 views);
2. :func:`pooled_features` — ``RegADModel.embed`` (the registered, back-warped features the Gaussian uses) averaged
   over positions, one ``C``-vector per view (``heads=True``: the Siamese encoder's ``z`` instead);
3. :func:`tsne_2d` — scikit-learn t-SNE, PCA initialisation, fixed seed and perplexity (capped for tiny sets);
4. :func:`silhouette` — the silhouette score of the categories **in the feature space** (cosine distance), not on
   the t-SNE points, since t-SNE distorts distances; +1 = compact and apart, 0 = overlapping.

:func:`fig4` runs 2–4 for several models on the same views; the figure is ``fsad.viz.embedding_scatters``.

Example:
    >>> views, groups = augmented_normals("data/synthetic", ["washer", "bracket"], 2, 64)   # doctest: +SKIP
    >>> result = fig4({"(a) before": untrained, "(b) after": trained}, views, groups)      # doctest: +SKIP
    >>> result.silhouettes                                                                  # doctest: +SKIP
    {'(a) before': 0.41, '(b) after': 0.47}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from fsad.augment import AUGMENT_FAMILIES, augment_supports

__all__ = ["Fig4", "augmented_normals", "fig4", "pooled_features", "silhouette", "tsne_2d"]

TSNE_PERPLEXITY = 30.0
HELD_OUT_SUFFIX = " (held out)"


def augmented_normals(
    root: str | Path,
    categories: Sequence[str],
    n_images: int,
    image_size: int,
    families: Sequence[str] = AUGMENT_FAMILIES,
    held_out: str | None = None,
) -> tuple[torch.Tensor, list[str]]:
    """Augmented views of the first ``n_images`` normal test images of each category, and a group label per view.

    Args:
        root: dataset root in MVTec layout.
        categories: categories to draw from.
        n_images: normal images per category (fewer when a category has fewer).
        image_size: input size.
        families: augmentation families (default all: 22 views per image).
        held_out: the category left out of registration training; its label gets " (held out)".

    Returns:
        ``(views [N,3,S,S], groups)`` with ``len(groups) == N``.
    """
    from data_tools.datasets import image_files, load_image

    if n_images < 1:
        raise ValueError(f"n_images must be at least 1 (got {n_images}).")
    views, groups = [], []
    for category in categories:
        folder = Path(root) / category / "test" / "good"
        if not folder.is_dir() or not image_files(folder):
            folder = Path(root) / category / "train" / "good"
        files = image_files(folder)[:n_images] if folder.is_dir() else []
        if not files:
            raise ValueError(f"No normal images for {category!r} under {root} (looked in test/good and train/good).")
        images = torch.stack([load_image(f, image_size) for f in files])
        augmented = augment_supports(images, list(families)) if families else images
        views.append(augmented)
        groups += [category + (HELD_OUT_SUFFIX if category == held_out else "")] * len(augmented)
    return torch.cat(views), groups


@torch.no_grad()
def pooled_features(
    model: torch.nn.Module,
    images: torch.Tensor,
    heads: bool = False,
    device: str | torch.device | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Position-averaged ``model.embed`` features ``[N, C]`` (``heads=True``: the encoder's ``z``), float64."""
    from fsad.methods import batched_embed

    device = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(device).eval()
    fn = (lambda x: model(x).z) if heads else model.embed
    return batched_embed(fn, images.to(device), batch_size).mean(dim=(2, 3)).double().cpu().numpy()


def tsne_2d(features: np.ndarray | torch.Tensor, seed: int = 0, perplexity: float = TSNE_PERPLEXITY) -> np.ndarray:
    """2-D t-SNE (scikit-learn, PCA init, automatic learning rate) of ``[N, D]`` features.

    The perplexity is capped at ``(N - 1) / 3`` so small smoke sets run (t-SNE requires perplexity < N).
    """
    from sklearn.manifold import TSNE

    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    array = array.reshape(len(array), -1).astype(np.float64)
    if len(array) < 4:
        raise ValueError(f"t-SNE needs at least 4 points, got {len(array)}; use more images per category.")
    perplexity = float(min(perplexity, max(1.0, (len(array) - 1) / 3.0)))
    return TSNE(
        n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", random_state=seed
    ).fit_transform(array)


def silhouette(features: np.ndarray, groups: Sequence[str], metric: str = "cosine") -> float:
    """Silhouette score of the groups in the feature space (scikit-learn): +1 compact and apart, 0 overlapping."""
    from sklearn.metrics import silhouette_score

    labels = np.asarray(list(groups))
    if len(set(labels.tolist())) < 2:
        raise ValueError("The silhouette score needs at least two categories.")
    return float(silhouette_score(np.asarray(features), labels, metric=metric))


@dataclass
class Fig4:
    """The t-SNE panels of several feature sets of the same views.

    Attributes:
        features: name -> ``[N, C]`` pooled features.
        points: name -> ``[N, 2]`` t-SNE points.
        silhouettes: name -> silhouette score in feature space (cosine).
        groups: one label per view.
    """

    features: dict[str, np.ndarray]
    points: dict[str, np.ndarray]
    silhouettes: dict[str, float]
    groups: list[str] = field(default_factory=list)

    def panels(self, with_score: bool = True) -> dict[str, tuple[np.ndarray, list[str]]]:
        """``{title: (points, groups)}`` for :func:`fsad.viz.embedding_scatters`."""
        return {
            (f"{name}\nsilhouette {self.silhouettes[name]:.3f}" if with_score else name): (points, self.groups)
            for name, points in self.points.items()
        }

    def rows(self) -> list[dict[str, object]]:
        return [
            {"features": name, "dim": int(x.shape[1]), "silhouette (cosine, feature space)": self.silhouettes[name]}
            for name, x in self.features.items()
        ]


def fig4(
    models: dict[str, torch.nn.Module | tuple[torch.nn.Module, bool]],
    views: torch.Tensor,
    groups: Sequence[str],
    seed: int = 0,
    perplexity: float = TSNE_PERPLEXITY,
    device: str | torch.device | None = None,
) -> Fig4:
    """Pooled features, t-SNE and silhouette of each model on the same views (the paper's Fig. 4 a/b).

    Args:
        models: name -> model, or name -> ``(model, heads)`` to use the Siamese encoder's ``z``.
        views: ``[N,3,S,S]`` from :func:`augmented_normals`.
        groups: a label per view.
        seed, perplexity: t-SNE settings, the same for every panel.
        device: where to run the models (default: where their parameters are).
    """
    groups = list(groups)
    if len(groups) != len(views):
        raise ValueError(f"{len(views)} views but {len(groups)} group labels.")
    features, points, scores = {}, {}, {}
    for name, entry in models.items():
        model, heads = entry if isinstance(entry, tuple) else (entry, False)
        features[name] = pooled_features(model, views, heads=heads, device=device)
        points[name] = tsne_2d(features[name], seed=seed, perplexity=perplexity)
        scores[name] = silhouette(features[name], groups)
    return Fig4(features=features, points=points, silhouettes=scores, groups=groups)
