"""Localisation examples: fit one support set and keep the test set's anomaly maps (results files do not), then
pick the best-detected defects, the worst ones and the false alarms (:func:`fsad.figures.plots.localisation_figure`
draws them).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch


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
    from data_tools.datasets import load_test_set
    from fsad.evaluate import build_method, resolve_manifest
    from fsad.scoring import fit_and_score, load_run_supports
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
    # The same loader as run_evaluation and the widgets (both classes checked).
    test = load_test_set(config.data_root, category, config.image_size, config.dataset)
    images = test["images"]
    with torch.no_grad():
        features = method.embed(images.to(device))
    # The path run_evaluation scores this (category, k, run) by, so the maps are those behind its numbers.
    files, supports = load_run_supports(manifest, config.data_root, category, k, run, config.image_size, device)
    scored = fit_and_score(method, supports, features, config.image_size, config.seed + run, device)
    scores = scored.scores
    labels = test["labels"]
    selection = select_examples(scores, labels, n)
    names = [Path(p).parent.name + "/" + Path(p).name for p in test["paths"]]
    short = {"best defect": "best", "worst defect": "worst", "false alarm": "false alarm"}
    titles = {i: f"{short[group]}: {names[i]} ({scores[i]:.1f})" for group, idx in selection.items() for i in idx}
    return {
        "images": images,
        "masks": test["masks"],
        "maps": scored.maps,
        "scores": scores,
        "labels": labels,
        "paths": test["paths"],
        "supports": files,
        "has_masks": test["has_masks"],
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
