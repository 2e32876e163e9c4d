"""The one fit → score → map → metric path of a support set, shared by evaluation, figures and widgets.

:func:`fsad.evaluate.run_evaluation` (every results number), :func:`fsad.figures.localisation_examples` (the
localisation panels) and :class:`fsad.widgets.ExplorerSession` (the explorer's AUROC line and maps) all score a
support set through these three functions, so a map or an AUROC shown in a figure or a widget is the one a
results file holds for the same (category, k, run):

1. :func:`load_run_supports` — the manifest's support files of one (category, k, run), loaded on the device;
2. :func:`fit_and_score` — seed, ``method.fit(supports)``, then :func:`fsad.methods.maps_and_image_scores` of
   test features (embedded once per category by the caller: test features do not depend on the supports);
3. :func:`cell_metrics` — image AUROC, F1-max, pixel AUROC and AUPRO (:mod:`fsad.metrics`) of those maps.

Example:
    >>> files, supports = load_run_supports(manifest, root, "washer", k=2, run=0, image_size=64)  # doctest: +SKIP
    >>> scored = fit_and_score(method, supports, method.embed(test_images), 64, seed=0)
    >>> cell_metrics(labels, scored.scores, scored.maps, masks)["image_auroc"]
    0.875
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from data_tools.datasets import load_supports
from data_tools.manifests import support_files
from fsad.errors import ConfigError
from fsad.methods import FewShotMethod, maps_and_image_scores
from fsad.metrics import aupro, f1_max, image_auroc, pixel_auroc
from fsad.utils import seed_everything, synchronize

# What a results cell records, in this order; image metrics need labels and scores, pixel metrics masks and maps.
CELL_METRICS = ("image_auroc", "f1_max", "pixel_auroc", "aupro")
PIXEL_METRICS = ("pixel_auroc", "aupro")


class Scored(NamedTuple):
    """A fitted support set's test maps ``[N,S,S]`` and image scores ``[N]`` (numpy, on the CPU) and the
    seconds ``fit`` (``adaptation_s``) and scoring (``score_s``, features → maps and scores) took."""

    maps: np.ndarray
    scores: np.ndarray
    adaptation_s: float
    score_s: float


def timed(device: torch.device | None, fn: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``(fn(*args), seconds)``, waiting for queued GPU work before and after so the seconds are honest."""
    if device is not None:
        synchronize(device)
    start = time.perf_counter()
    value = fn(*args)
    if device is not None:
        synchronize(device)
    return value, time.perf_counter() - start


def load_run_supports(
    manifest: Mapping[str, Any],
    data_root: str | Path,
    category: str,
    k: int,
    run: int,
    image_size: int,
    device: torch.device | str = "cpu",
) -> tuple[list[str], torch.Tensor]:
    """The support files of one (category, k, run) of ``manifest`` and the ImageNet-normalised ``[k,3,S,S]``
    batch of them on ``device``."""
    files = support_files(manifest, category, k, run)
    return files, load_supports(data_root, category, files, image_size).to(device)


def fit_and_score(
    method: FewShotMethod,
    supports: torch.Tensor,
    test_features: torch.Tensor,
    image_size: int,
    seed: int,
    device: torch.device | None = None,
) -> Scored:
    """Fit ``method`` on ``supports`` after seeding every generator with ``seed``, then turn ``test_features``
    (``method.embed`` of the test images) into maps and image scores by
    :func:`fsad.methods.maps_and_image_scores`.

    Args:
        method: a built method (:func:`fsad.evaluate.build_method`, or a spec's ``build``).
        supports: ImageNet-normalised support images ``[k,3,S,S]`` on the method's device.
        test_features: ``method.embed(test_images)``; embedded once per category by the caller and reused
            for every support set (they do not depend on the supports).
        image_size: side ``S`` of the maps.
        seed: seeds the fit (augmentation, channel subset, coreset): evaluation and figures pass
            ``seed + run``, so a run's numbers do not depend on which runs were computed before it.
        device: synchronised around the timed steps (None: no synchronisation).

    Returns:
        :class:`Scored` (maps, image scores, ``adaptation_s`` = seconds of ``fit``, ``score_s`` = seconds of
        scoring, both without the copy of the maps to the CPU).
    """
    seed_everything(seed)
    _, adaptation_s = timed(device, method.fit, supports)
    with torch.no_grad():
        (maps, scores), score_s = timed(device, maps_and_image_scores, method, test_features, image_size)
    return Scored(maps.cpu().numpy(), scores.cpu().numpy(), adaptation_s, score_s)


def cell_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    names: Sequence[str] = CELL_METRICS,
) -> dict[str, float | None]:
    """The metrics ``names`` (any of :data:`CELL_METRICS`, in that order) of one scored support set.

    Args:
        labels: ``[N]`` 1 = defective; scores: ``[N]`` image scores; maps: ``[N,S,S]`` anomaly maps.
        masks: ``[N,S,S]`` ground truth, or None when the dataset has none (pixel metrics are then None).

    Raises:
        ConfigError: an unknown metric name.

    Example:
        >>> labels, scores = np.array([0, 1, 1]), np.array([0.1, 0.9, 0.4])
        >>> cell_metrics(labels, scores, np.zeros((3, 4, 4)), None, names=("image_auroc", "pixel_auroc"))
        {'image_auroc': 1.0, 'pixel_auroc': None}
    """
    unknown = [name for name in names if name not in CELL_METRICS]
    if unknown:
        raise ConfigError(f"Unknown metric(s) {unknown}; choose from {', '.join(CELL_METRICS)}.")
    functions = {
        "image_auroc": lambda: image_auroc(labels, scores),
        "f1_max": lambda: f1_max(labels, scores),
        "pixel_auroc": lambda: pixel_auroc(masks, maps),
        "aupro": lambda: aupro(masks, maps),
    }
    return {
        name: None if masks is None and name in PIXEL_METRICS else functions[name]()
        for name in CELL_METRICS
        if name in names
    }
