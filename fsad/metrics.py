"""Detection and localisation metrics: image/pixel AUROC, F1-max and AUPRO (MVTec convention).

ROC and precision-recall curves come from scikit-learn. AUPRO has no scikit-learn
equivalent, so it is built here, following the MVTec AD evaluation code: ground-truth defects are
split into connected regions (8-connectivity, ``scipy.ndimage.label``); for a threshold ``t`` the
false-positive rate is taken over all defect-free pixels of all images and the per-region overlap
(PRO) is the mean over regions of the fraction of the region's pixels scoring ``>= t``; PRO is
integrated over FPR in ``[0, fpr_limit]`` (trapezoid, the end point interpolated at exactly
``fpr_limit``) and divided by ``fpr_limit``. Every distinct score is a threshold: one sort of all
pixels, then cumulative sums, so the curve is exact and no loop runs over thresholds or pixels.

Degenerate input raises :class:`MetricError`: a single class of image labels (e.g. an all-good
test set), masks without any defect pixel (pixel AUROC and AUPRO are undefined — datasets
shipped without masks should skip pixel metrics), masks that are defect everywhere, non-finite
scores, or mismatched shapes.

Inputs may be torch tensors or NumPy arrays; masks may be ``[M, H, W]`` or ``[M, 1, H, W]`` and are
binarised with ``> 0.5`` like the authors' ``gt_mask > 0.5``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from fsad.errors import FsadError

# AUPRO integration limit: FPR up to 30% (MVTec AD evaluation protocol, Bergmann et al.).
AUPRO_FPR_LIMIT = 0.3


class MetricError(FsadError):
    """A metric is undefined for the given input (e.g. only one class present)."""


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.size == 0:
        raise MetricError(f"{name} is empty; nothing to evaluate.")
    return arr


def _finite_scores(x: Any, name: str) -> np.ndarray:
    arr = _to_numpy(x, name).astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise MetricError(f"{name} contains NaN or infinite values; check the model output before scoring.")
    return arr


def _pixel_pair(masks: Any, maps: Any) -> tuple[np.ndarray, np.ndarray]:
    gt = _to_numpy(masks, "masks")
    scores = _finite_scores(maps, "maps")
    if gt.ndim == scores.ndim + 1 and gt.shape[1] == 1:
        gt = gt[:, 0]  # [M, 1, H, W] -> [M, H, W]
    if scores.ndim == gt.ndim + 1 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if gt.shape != scores.shape:
        raise MetricError(
            f"masks {gt.shape} and maps {scores.shape} differ in shape; resize masks (NEAREST) to the map size first."
        )
    gt = gt > 0.5
    if not gt.any():
        raise MetricError(
            "masks contain no defect pixel, so pixel-level metrics are undefined; "
            "skip them for test sets without ground-truth masks (dataset.has_masks is False)."
        )
    if gt.all():
        raise MetricError("every mask pixel is a defect, so the false-positive rate is undefined.")
    return gt, scores


def _labels_and_scores(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = _to_numpy(labels, "labels").ravel()
    s = _finite_scores(scores, "scores").ravel()
    if y.shape != s.shape:
        raise MetricError(f"labels ({y.size}) and scores ({s.size}) have different lengths.")
    values = np.unique(y)
    if not np.all(np.isin(values, [0, 1])):
        raise MetricError(f"labels must be 0 (normal) or 1 (anomalous), got values {values.tolist()[:10]}.")
    if values.size < 2:
        which = "normal (0)" if values[0] == 0 else "anomalous (1)"
        raise MetricError(
            f"all {y.size} labels are {which}; AUROC/F1 need both normal and anomalous samples "
            "(e.g. a test set with only good images cannot be evaluated)."
        )
    return y.astype(np.int64), s


def image_auroc(labels: Any, scores: Any) -> float:
    """Image-level ROC AUC (scikit-learn). ``labels``: 1 = anomalous; ``scores``: higher = more anomalous.

    Example:
        >>> image_auroc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.3])
        1.0
    """
    y, s = _labels_and_scores(labels, scores)
    return float(roc_auc_score(y, s))


def pixel_auroc(masks: Any, maps: Any) -> float:
    """Pixel-level ROC AUC over all pixels of all images (masks ``[M,(1,)H,W]``, maps ``[M,H,W]``).

    Example:
        >>> m = np.zeros((1, 4, 4)); m[0, 1, 1] = 1
        >>> pixel_auroc(m, m * 2.0)
        1.0
    """
    gt, scores = _pixel_pair(masks, maps)
    return float(roc_auc_score(gt.ravel(), scores.ravel()))


def f1_max(labels: Any, scores: Any) -> float:
    """Best F1 over all thresholds (precision-recall curve of scikit-learn). Any shapes; flattened.

    Example:
        >>> round(f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]), 4)
        0.8
    """
    y, s = _labels_and_scores(labels, scores)
    precision, recall, _ = precision_recall_curve(y, s)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return float(f1.max())


def _region_structure(connectivity: int) -> np.ndarray:
    """3-D structuring element that connects pixels within an image only (never across images)."""
    if connectivity == 8:
        plane = np.ones((3, 3), dtype=bool)
    elif connectivity == 4:
        plane = ndimage.generate_binary_structure(2, 1)
    else:
        raise ValueError(f"connectivity must be 4 or 8 (MVTec uses 8), got {connectivity}.")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = plane
    return structure


def pro_curve(masks: Any, maps: Any, connectivity: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Exact PRO curve: (FPR, PRO) at every distinct score threshold, starting at (0, 0).

    Args:
        masks: ``[M, H, W]`` or ``[M, 1, H, W]`` ground truth (``> 0.5`` = defect).
        maps: ``[M, H, W]`` anomaly maps.
        connectivity: 8 (MVTec convention) or 4, for splitting defects into regions.

    Returns:
        ``(fprs, pros)`` non-decreasing arrays, from (0, 0) to (1, 1).
    """
    gt, scores = _pixel_pair(masks, maps)
    if gt.ndim == 2:
        gt, scores = gt[None], scores[None]
    if gt.ndim != 3:
        raise MetricError(f"AUPRO expects masks/maps shaped [M, H, W], got {gt.shape}.")
    regions, n_regions = ndimage.label(gt, structure=_region_structure(connectivity))
    regions = regions.ravel()
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    normal = regions == 0
    # Each defect pixel adds 1/(R * |its region|) to PRO when the threshold falls to its score;
    # each normal pixel adds 1/#normal to FPR.
    pro_weight = np.where(normal, 0.0, 1.0 / (n_regions * sizes[regions]))
    fpr_weight = normal / normal.sum()
    order = np.argsort(-scores.ravel(), kind="stable")
    sorted_scores = scores.ravel()[order]
    # Tied scores pass a threshold together: keep only the last index of each run of equal scores.
    ends = np.append(np.flatnonzero(np.diff(sorted_scores)), sorted_scores.size - 1)
    fprs = np.concatenate([[0.0], np.cumsum(fpr_weight[order])[ends]])
    pros = np.concatenate([[0.0], np.cumsum(pro_weight[order])[ends]])
    return np.clip(fprs, 0.0, 1.0), np.clip(pros, 0.0, 1.0)


def aupro(masks: Any, maps: Any, fpr_limit: float = AUPRO_FPR_LIMIT, connectivity: int = 8) -> float:
    """Normalised area under the PRO curve up to ``fpr_limit`` (1.0 = perfect, MVTec convention).

    Args:
        masks: ``[M, H, W]`` or ``[M, 1, H, W]`` ground truth of all test images (good ones included:
            their pixels count towards the FPR).
        maps: ``[M, H, W]`` anomaly maps.
        fpr_limit: upper FPR of the integration, in ``(0, 1]``; the area is divided by it.
        connectivity: 8 (default, MVTec) or 4.

    Returns:
        AUPRO in ``[0, 1]``.

    Example:
        >>> m = np.zeros((2, 8, 8)); m[0, 2:4, 2:4] = 1
        >>> aupro(m, m)   # the map equals the mask: every region found at zero FPR
        1.0
    """
    if not 0 < fpr_limit <= 1:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}.")
    fprs, pros = pro_curve(masks, maps, connectivity)
    # Points with FPR <= limit, plus the curve linearly interpolated at exactly the limit.
    idx = int(np.searchsorted(fprs, fpr_limit, side="right"))
    x, y = fprs[:idx], pros[:idx]
    if idx < fprs.size:
        f0, f1 = fprs[idx - 1], fprs[idx]
        p_lim = pros[idx - 1] + (fpr_limit - f0) / (f1 - f0) * (pros[idx] - pros[idx - 1])
        x, y = np.append(x, fpr_limit), np.append(y, p_lim)
    return float(np.trapezoid(y, x) / fpr_limit)


# ------------------------------------------------------------------------------------------- operating points
# AUROC summarises every threshold; a deployed inspector needs one. The decision rule is "anomalous iff
# score >= threshold" (scikit-learn's convention for roc_curve / precision_recall_curve). scikit-learn has the
# curves but no "F1 and false-alarm rate at every threshold" table nor a "threshold for a false-alarm budget"
# helper, so both are built here from one sort (no loop over thresholds) and tested against scikit-learn.


def threshold_curve(labels: Any, scores: Any) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and false-alarm rate at every distinct score, used as threshold (decreasing).

    Args:
        labels: 1 = anomalous, 0 = normal.
        scores: higher = more anomalous.

    Returns:
        dict of equal-length arrays: ``threshold`` (distinct scores, decreasing), ``tp``, ``fp``, ``precision``,
        ``recall`` (true-positive rate), ``f1``, ``false_alarm_rate`` (FPR: good images flagged / good images).

    Example:
        >>> c = threshold_curve([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        >>> c["threshold"].tolist(), c["f1"].round(3).tolist(), c["false_alarm_rate"].tolist()
        ([0.8, 0.4, 0.35, 0.1], [0.667, 0.5, 0.8, 0.667], [0.0, 0.5, 0.5, 1.0])
    """
    y, s = _labels_and_scores(labels, scores)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    ends = np.append(np.flatnonzero(np.diff(s_sorted)), s.size - 1)  # last index of each run of tied scores
    tp = np.cumsum(y_sorted)[ends]
    fp = np.cumsum(1 - y_sorted)[ends]
    positives, negatives = int(y.sum()), int(y.size - y.sum())
    precision = tp / (tp + fp)
    recall = tp / positives
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    return {
        "threshold": s_sorted[ends],
        "tp": tp,
        "fp": fp,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / negatives,
    }


def operating_point(labels: Any, scores: Any, threshold: float) -> dict[str, float]:
    """Counts and rates of the decision "anomalous iff score >= threshold".

    Example:
        >>> p = operating_point([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.35)
        >>> p["tp"], p["fp"], p["fn"], p["tn"], p["false_alarm_rate"], round(p["f1"], 3)
        (2, 1, 0, 1, 0.5, 0.8)
    """
    y, s = _labels_and_scores(labels, scores)
    flagged = s >= threshold
    tp, fp = int(np.sum(flagged & (y == 1))), int(np.sum(flagged & (y == 0)))
    fn, tn = int(np.sum(~flagged & (y == 1))), int(np.sum(~flagged & (y == 0)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "threshold": float(threshold),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "false_alarm_rate": fp / (fp + tn),
    }


def threshold_for_false_alarm_rate(labels: Any, scores: Any, max_false_alarm_rate: float) -> float:
    """The lowest threshold whose false-alarm rate on the given images is at most ``max_false_alarm_rate``.

    The lowest such threshold catches the most defects within the false-alarm budget. With ``n`` good images
    the achievable rates are multiples of ``1/n``: a 1 % budget needs at least 100 good images to differ from 0.

    Raises:
        ValueError: ``max_false_alarm_rate`` outside ``[0, 1]``.

    Example:
        >>> threshold_for_false_alarm_rate([0, 0, 0, 0, 1], [0.1, 0.2, 0.3, 0.9, 0.5], 0.25)
        0.5
    """
    if not 0.0 <= max_false_alarm_rate <= 1.0:
        raise ValueError(f"max_false_alarm_rate must be in [0, 1], got {max_false_alarm_rate}")
    curve = threshold_curve(labels, scores)
    allowed = np.flatnonzero(curve["false_alarm_rate"] <= max_false_alarm_rate + 1e-12)
    # The rate grows as the threshold falls, so the allowed thresholds are a prefix; at least the top score
    # qualifies unless good images tie with it (then nothing below infinity does).
    if allowed.size == 0:
        return float(np.nextafter(curve["threshold"][0], np.inf))
    return float(curve["threshold"][allowed[-1]])


def best_f1_threshold(labels: Any, scores: Any) -> float:
    """The threshold of the highest F1 (the highest such threshold when several tie).

    Example:
        >>> best_f1_threshold([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
        0.35
    """
    curve = threshold_curve(labels, scores)
    return float(curve["threshold"][int(np.argmax(curve["f1"]))])


__all__ = [
    "AUPRO_FPR_LIMIT",
    "MetricError",
    "aupro",
    "best_f1_threshold",
    "f1_max",
    "image_auroc",
    "operating_point",
    "pixel_auroc",
    "pro_curve",
    "threshold_curve",
    "threshold_for_false_alarm_rate",
]
