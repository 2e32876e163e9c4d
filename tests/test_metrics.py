"""Metrics on hand-made masks and maps whose values are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from fsad.metrics import MetricError, aupro, f1_max, image_auroc, pixel_auroc, pro_curve


def _masks() -> np.ndarray:
    m = np.zeros((3, 8, 8))
    m[0, 1:3, 1:3] = 1  # one 2x2 defect
    m[1, 5, 2:6] = 1  # one 1x4 scratch
    return m  # image 2 is good


def test_perfect_and_inverted_maps():
    m = _masks()
    assert pixel_auroc(m, m) == 1.0
    assert aupro(m, m) == 1.0
    assert pixel_auroc(m, 1 - m) == 0.0
    assert aupro(m, 1 - m) == 0.0
    assert image_auroc([0, 1, 1, 0], [0.1, 0.9, 0.8, 0.2]) == 1.0
    assert image_auroc([0, 1, 1, 0], [0.9, 0.1, 0.2, 0.8]) == 0.0


def test_torch_inputs_and_channel_dim_are_accepted():
    m = torch.from_numpy(_masks()).float().unsqueeze(1)  # [M, 1, H, W] like AnomalyDataset masks
    maps = torch.from_numpy(_masks()).float()
    assert pixel_auroc(m, maps) == 1.0
    assert aupro(m, maps) == 1.0
    assert image_auroc(torch.tensor([0, 1]), torch.tensor([0.2, 0.7])) == 1.0


def test_auroc_plumbing_matches_sklearn_on_random_data():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 50)
    scores = rng.normal(size=50) + labels
    assert image_auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    masks = rng.random((4, 10, 10)) > 0.8
    maps = rng.random((4, 10, 10)) + 0.3 * masks
    assert pixel_auroc(masks, maps) == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)


def test_aupro_two_regions_one_found_one_never():
    m = np.zeros((1, 6, 6))
    m[0, 0:2, 0:2] = 1  # region A (4 px): scored above every normal pixel
    m[0, 4:6, 4:6] = 1  # region B (4 px): scored below every normal pixel
    maps = np.ones((1, 6, 6))
    maps[0, 0:2, 0:2] = 2
    maps[0, 4:6, 4:6] = 0
    # Curve (0,0) -> (0,0.5) -> (1,0.5) -> (1,1): PRO is 0.5 over all of [0, 0.3].
    assert aupro(m, maps) == pytest.approx(0.5, abs=1e-12)


def test_aupro_hand_computed_staircase():
    # One row of 13 px: A at 0 (1 px), B at 2-3 (2 px), 10 normal px with scores 0.9 ... 0.0.
    mask = np.zeros((1, 1, 13))
    mask[0, 0, [0, 2, 3]] = 1
    maps = np.zeros((1, 1, 13))
    maps[0, 0, 0] = 0.95
    maps[0, 0, 2:4] = [0.85, 0.05]
    maps[0, 0, [1, 4, 5, 6, 7, 8, 9, 10, 11, 12]] = np.linspace(0.9, 0.0, 10)
    # A found at FPR 0 (PRO .5); after 1 normal (FPR .1) half of B (PRO .75); flat to FPR .3.
    # Area to 0.3 = 0.1*0.5 + 0.2*0.75 = 0.2 -> AUPRO = 0.2/0.3.
    assert aupro(mask, maps) == pytest.approx(0.2 / 0.3, abs=1e-12)
    fprs, pros = pro_curve(mask, maps)
    assert fprs[0] == 0 and pros[0] == 0 and fprs[-1] == pytest.approx(1) and pros[-1] == pytest.approx(1)
    # Limit interpolated inside a rising segment: to FPR 0.05 the curve is at PRO .5 throughout.
    assert aupro(mask, maps, fpr_limit=0.05) == pytest.approx(0.5, abs=1e-12)
    assert aupro(mask, maps, fpr_limit=1.0) == pytest.approx(
        0.1 * 0.5 + 0.8 * 0.75 + 0.1 * 1.0, abs=1e-12
    )  # B2 (0.05) found after 9 normals


def test_aupro_regions_are_8_connected():
    m = np.zeros((1, 6, 6))
    m[0, 0, 0] = m[0, 1, 1] = 1  # diagonal pair: one region under 8-connectivity, two under 4
    m[0, 4, 4] = 1  # a separate single-pixel region
    maps = np.zeros((1, 6, 6))
    maps[0, 0, 0] = maps[0, 4, 4] = 1.0
    maps[0, 1, 1] = -1.0  # never found before every normal pixel
    # 8-conn: regions {2 px, half found}, {1 px, found} -> PRO (0.5 + 1)/2 = 0.75 at FPR 0.
    assert aupro(m, maps) == pytest.approx(0.75, abs=1e-12)
    # 4-conn: three 1-px regions, two found -> 2/3.
    assert aupro(m, maps, connectivity=4) == pytest.approx(2 / 3, abs=1e-12)


def test_regions_never_connect_across_images():
    m = np.zeros((2, 4, 4))
    m[0, 3, 3] = 1
    m[1, 0, 0] = 1  # would touch image 0's pixel if the stack were labelled as one 3-D volume
    maps = np.zeros((2, 4, 4))
    maps[0, 3, 3] = 1.0
    maps[1, 0, 0] = -1.0
    assert aupro(m, maps) == pytest.approx(0.5, abs=1e-12)  # two regions, one found


def test_f1_max_hand_example():
    # thresholds: 0.8 -> P1 R.5 F.667 ; 0.4 -> P.5 R.5 ; 0.35 -> P.667 R1 F.8 ; 0.1 -> P.5 R1
    assert f1_max([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8, abs=1e-12)
    assert f1_max([0, 1], [0.0, 1.0]) == pytest.approx(1.0)


def test_ties_in_maps_are_handled():
    m = _masks()
    flat = np.zeros_like(m)
    assert pixel_auroc(m, flat) == 0.5
    # All pixels tie: the only threshold flips everything at once -> PRO at FPR .3 is 0.3 -> area .045.
    assert aupro(m, flat) == pytest.approx(0.5 * 0.3 * 0.3 / 0.3, abs=1e-12)


def test_degenerate_inputs_raise_metric_error():
    with pytest.raises(MetricError, match="only good images"):
        image_auroc([0, 0, 0], [0.1, 0.2, 0.3])
    with pytest.raises(MetricError, match="anomalous"):
        f1_max([1, 1], [0.1, 0.2])
    no_defects = np.zeros((2, 4, 4))
    with pytest.raises(MetricError, match="no defect pixel"):
        pixel_auroc(no_defects, np.random.rand(2, 4, 4))
    with pytest.raises(MetricError, match="no defect pixel"):
        aupro(no_defects, np.random.rand(2, 4, 4))
    with pytest.raises(MetricError, match="every mask pixel"):
        aupro(np.ones((1, 3, 3)), np.random.rand(1, 3, 3))
    with pytest.raises(MetricError, match="differ in shape"):
        pixel_auroc(_masks(), np.zeros((3, 4, 4)))
    with pytest.raises(MetricError, match="NaN"):
        image_auroc([0, 1], [0.0, float("nan")])
    with pytest.raises(MetricError, match="different lengths"):
        image_auroc([0, 1, 1], [0.0, 1.0])
    with pytest.raises(MetricError, match="0 \\(normal\\) or 1"):
        image_auroc([0, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(_masks(), _masks(), fpr_limit=0)
    with pytest.raises(ValueError, match="connectivity"):
        aupro(_masks(), _masks(), connectivity=6)
    assert issubclass(MetricError, ValueError)


def test_pro_curve_matches_a_threshold_loop_reference():
    from scipy import ndimage

    rng = np.random.default_rng(3)
    masks = np.zeros((3, 12, 12), dtype=bool)
    masks[0, 2:5, 2:6] = True
    masks[0, 8, 8:11] = True
    masks[1, 6:10, 1:3] = True
    maps = rng.random((3, 12, 12)) + 0.5 * masks
    fprs, pros = pro_curve(masks, maps)
    regions = [ndimage.label(m, structure=np.ones((3, 3)))[0] for m in masks]
    region_masks = [(i, r == j) for i, r in enumerate(regions) for j in range(1, r.max() + 1)]
    for t_index, t in enumerate(np.sort(np.unique(maps))[::-1]):
        pred = maps >= t
        fpr = (pred & ~masks).sum() / (~masks).sum()
        pro = np.mean([(pred[i] & reg).sum() / reg.sum() for i, reg in region_masks])
        assert fprs[t_index + 1] == pytest.approx(fpr, abs=1e-12)
        assert pros[t_index + 1] == pytest.approx(pro, abs=1e-12)


# ----------------------------------------------------------------------------------------- operating points
def _random_case(seed: int, n: int = 60):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    labels[:2] = [0, 1]
    scores = np.round(rng.normal(labels * 1.0, 1.0), 1)  # rounded: ties, as real scores can have
    return labels, scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_threshold_curve_matches_sklearn(seed: int) -> None:
    from sklearn.metrics import f1_score, precision_score, roc_curve

    from fsad.metrics import f1_max, threshold_curve

    labels, scores = _random_case(seed)
    curve = threshold_curve(labels, scores)
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    # roc_curve starts with an extra (0, 0) point at threshold +inf.
    np.testing.assert_allclose(curve["threshold"], thresholds[1:])
    np.testing.assert_allclose(curve["false_alarm_rate"], fpr[1:])
    np.testing.assert_allclose(curve["recall"], tpr[1:])
    for i in (0, len(curve["threshold"]) // 2, -1):
        predicted = scores >= curve["threshold"][i]
        assert curve["f1"][i] == pytest.approx(f1_score(labels, predicted))
        assert curve["precision"][i] == pytest.approx(precision_score(labels, predicted))
    assert curve["f1"].max() == pytest.approx(f1_max(labels, scores))


def test_operating_point_matches_sklearn_confusion_matrix() -> None:
    from sklearn.metrics import confusion_matrix, f1_score

    from fsad.metrics import operating_point

    labels, scores = _random_case(3)
    point = operating_point(labels, scores, 0.5)
    tn, fp, fn, tp = confusion_matrix(labels, scores >= 0.5).ravel()
    assert (point["tn"], point["fp"], point["fn"], point["tp"]) == (tn, fp, fn, tp)
    assert point["f1"] == pytest.approx(f1_score(labels, scores >= 0.5))
    assert point["false_alarm_rate"] == pytest.approx(fp / (fp + tn))


@pytest.mark.parametrize("budget", [0.0, 0.01, 0.1, 0.3, 1.0])
def test_threshold_for_false_alarm_rate_is_the_lowest_within_budget(budget: float) -> None:
    from fsad.metrics import operating_point, threshold_curve, threshold_for_false_alarm_rate

    labels, scores = _random_case(4, n=200)
    t = threshold_for_false_alarm_rate(labels, scores, budget)
    assert operating_point(labels, scores, t)["false_alarm_rate"] <= budget
    lower = threshold_curve(labels, scores)["threshold"]
    lower = lower[lower < t]
    if lower.size:  # the next threshold down breaks the budget
        assert operating_point(labels, scores, lower.max())["false_alarm_rate"] > budget


def test_threshold_helpers_reject_bad_input() -> None:
    from fsad.metrics import MetricError, best_f1_threshold, threshold_for_false_alarm_rate

    with pytest.raises(ValueError, match="max_false_alarm_rate"):
        threshold_for_false_alarm_rate([0, 1], [0.1, 0.2], 1.5)
    with pytest.raises(MetricError, match="both normal and anomalous"):
        best_f1_threshold([0, 0], [0.1, 0.2])
    # A good image tied with the top score: even the top threshold breaks a zero budget.
    t = threshold_for_false_alarm_rate([0, 1], [0.9, 0.9], 0.0)
    assert t > 0.9
