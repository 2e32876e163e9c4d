"""Tests of the figure helpers in fsad.viz (the arrays behind the figures, and that figures are saved)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from fsad import viz
from fsad.augment import AUGMENT_FAMILIES, augment_supports, views_per_image
from fsad.models.stn import invert_theta, params_to_theta, warp


def test_augment_view_titles_match_augment_layout():
    for families in ([], ["flip", "gray"], ["rotation", "rot90"], list(AUGMENT_FAMILIES)):
        titles = viz.augment_view_titles(families)
        assert len(titles) == views_per_image(families)
        assert titles[0] == "original"
    assert viz.augment_view_titles(["flip", "gray"]) == ["original", "hflip", "gray"]
    # the flip view really is at the position the titles say
    images = torch.randn(1, 3, 32, 32)
    views = augment_supports(images, AUGMENT_FAMILIES)
    index = viz.augment_view_titles().index("hflip")
    assert torch.equal(views[index], torch.flip(images[0], dims=(2,)))


def test_sampled_outside_identity_and_zoom():
    identity = torch.eye(2, 3)[None]
    assert not viz.sampled_outside(identity, 16).any()
    # scale 2 samples [-2, 2]: the outer half of each side is outside -> the inner 8x8 block stays inside
    zoom_out = params_to_theta(torch.tensor([[2.0, 2.0]]), "scale")
    outside = viz.sampled_outside(zoom_out, 16)[0]
    assert outside.shape == (16, 16)
    assert not outside[4:12, 4:12].any() and outside[:4].all() and outside[:, :4].all()
    assert outside.mean() == pytest.approx(1 - 64 / 256)


def test_sampled_outside_marks_where_roundtrip_differs():
    # smooth content, so two bilinear resamplings barely change it where the content survives
    yy, xx = torch.meshgrid(torch.linspace(0, 3, 32), torch.linspace(0, 3, 32), indexing="ij")
    x = torch.stack([torch.sin(xx), torch.cos(yy), torch.sin(xx + yy)])[None] + 2.0
    theta = params_to_theta(torch.tensor([[math.pi / 8, 0.8, 0.8]]), "rotation_scale")
    inverse = invert_theta(theta)
    restored = warp(warp(x, theta, padding_mode="zeros"), inverse, padding_mode="zeros")
    diff = (restored - x).abs().mean(1)[0].numpy()
    outside = viz.sampled_outside(inverse, 32)[0]
    assert outside.any() and (~outside).any()
    assert diff[outside].mean() > 5 * diff[~outside].mean()


def test_max_locations_and_inside_outside():
    maps = np.zeros((3, 4, 5))
    maps[0, 1, 2] = 5.0
    maps[1, 3, 4] = 2.0
    maps[2, 0, 0] = 1.0
    maps[2, 2, 2] = 0.5
    rows, cols = viz.max_locations(maps)
    assert rows.tolist() == [1, 3, 0] and cols.tolist() == [2, 4, 0]
    masks = np.zeros_like(maps, dtype=bool)
    masks[0, 1, 2] = True  # image 0: the max is inside the defect
    masks[2, 2, 2] = True  # image 2: the max (1.0) is outside, inside max is 0.5
    inside, outside = viz.max_inside_outside(maps, masks)
    assert inside[0] == 5.0 and outside[0] == 0.0
    assert np.isnan(inside[1]) and outside[1] == 2.0  # no mask: inside undefined
    assert inside[2] == 0.5 and outside[2] == 1.0


def test_feature_pca_rgb_shapes_and_equal_inputs():
    f = torch.randn(16, 6, 7)
    out = viz.feature_pca_rgb([f, f.clone(), torch.randn(16, 3, 3)])
    assert [o.shape for o in out] == [(6, 7, 3), (6, 7, 3), (3, 3, 3)]
    assert np.allclose(out[0], out[1])
    assert out[0].min() >= 0 and out[0].max() <= 1


def test_figures_are_saved(tmp_path):
    maps = np.random.default_rng(0).random((4, 16, 16))
    labels = np.array([0, 0, 1, 1])
    masks = np.zeros((4, 16, 16), bool)
    masks[2:, 4:8, 4:8] = True
    inside, outside = viz.max_inside_outside(maps, masks)
    figures = {
        "row": viz.heatmap_row([torch.zeros(3, 16, 16), maps[0]], ["image", "map"], contours=[None, masks[2]]),
        "hist": viz.score_histograms({"a": (maps.max((1, 2)), labels)}),
        "maxloc": viz.max_location_figure(torch.zeros(3, 16, 16), maps, labels),
        "inout": viz.inside_outside_figure(inside[2:], outside[2:], maps[:2].max((1, 2))),
        "scatter": viz.embedding_scatters({"p": (np.random.rand(6, 2), ["x", "y"] * 3)}),
    }
    for name, fig in figures.items():
        path = viz.savefig(fig, name, tmp_path)
        assert path == tmp_path / "figures" / f"{name}.png" and path.stat().st_size > 1000


def test_decision_overlay_colours_hits_false_alarms_and_misses():
    from fsad.viz import decision_overlay

    map_ = np.array([[0.9, 0.9], [0.1, 0.1]])
    mask = np.array([[1, 0], [1, 0]])
    rgb = decision_overlay(map_, mask, 0.5)
    assert rgb[0, 0].tolist() == [0, 1, 0]  # hit
    assert rgb[0, 1].tolist() == [1, 0, 0]  # false alarm
    assert rgb[1, 0].tolist() == [0, 0, 1]  # missed
    assert rgb[1, 1].tolist() == [0, 0, 0]  # correct normal


def test_threshold_figure_and_localisation_panel_have_labelled_axes_and_colour_bar():
    import torch

    from fsad.metrics import threshold_curve
    from fsad.viz import localisation_panel, threshold_figure

    labels, scores = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    fig = threshold_figure(threshold_curve(labels, scores), scores, labels, marks={"best F1": 0.35})
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    panel = localisation_panel(torch.zeros(2, 3, 8, 8), np.zeros((2, 8, 8)), np.random.default_rng(0).random((2, 8, 8)))
    assert "Mahalanobis" in panel.axes[-1].get_ylabel()  # the colour bar's label


def test_contour_panels_share_one_scale_and_take_points_per_panel(tmp_path):
    gx, gy = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9))
    field = np.hypot(gx, gy)
    pts = np.zeros((3, 2))
    fig = viz.contour_panels(gx, gy, {"a": field, "b": 2 * field}, [pts, pts[:2]], levels=(0.5, 1), vmax=2)
    meshes = [ax.collections[0] for ax in fig.axes[:2]]
    assert all(m.get_clim() == (0, 2) for m in meshes)  # one colour scale for every panel
    assert [ax.get_legend().get_texts()[0].get_text() for ax in fig.axes[:2]] == [
        "samples the Gaussian is fitted on (N = 3)",
        "samples the Gaussian is fitted on (N = 2)",
    ]
    assert viz.savefig(fig, "contours", tmp_path).stat().st_size > 1000
    with pytest.raises(ValueError, match="one per field"):
        viz.contour_panels(gx, gy, {"a": field}, [pts, pts])
