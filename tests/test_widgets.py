"""fsad.widgets at the Python level: controls trigger the library computation and the outputs follow.

The real-browser check (JupyterLab + Chromium) is tests/test_browser.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_tools.synthetic import generate_synthetic_dataset
from fsad.augment import AUGMENT_FAMILIES
from fsad.evaluate import EvaluationConfig, run_evaluation
from fsad.widgets import ExplorerSession, ablation_explorer, map_viewer, panel_rows, threshold_overlay

SIZE = 64
KS = (1, 2)
CATEGORIES = ["washer", "weave"]
OPTIONS = dict(ks=KS, image_size=SIZE, backbone="mobilenet_v2", weights="random", device="cpu", seed=0)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        seed=0,
        image_size=SIZE,
        n_train=4,
        n_test_good=3,
        n_test_per_defect=2,
        categories=CATEGORIES,
    )


@pytest.fixture(scope="module")
def explorer(root: Path):
    return ablation_explorer(root, "synthetic", CATEGORIES, **OPTIONS)


def test_explorer_initial_state(explorer) -> None:
    assert explorer.n_updates == 1
    assert "image AUROC" in explorer.auroc_label.value and "k = 1" in explorer.auroc_label.value
    assert explorer.result.k == 1 and explorer.result.category == "washer"
    assert explorer.result.augment_families == AUGMENT_FAMILIES
    assert explorer.maps_image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(explorer.k_slider.options) == list(KS)
    assert set(explorer.family_boxes) == set(AUGMENT_FAMILIES)
    assert explorer.stn_dropdown.options[0] == "none" and len(explorer.stn_dropdown.options) == 10
    assert explorer.stn_mode is None and explorer.result.stn_mode is None
    assert "identity" in explorer.help.value and "checkpoint" in explorer.help.value


def test_controls_rerun_and_match_run_evaluation(explorer, root: Path, tmp_path: Path) -> None:
    before = (explorer.n_updates, explorer.auroc_label.value, explorer.maps_image.value)
    explorer.k_slider.value = 2
    assert explorer.n_updates == before[0] + 1
    assert explorer.result.k == 2 and "k = 2" in explorer.auroc_label.value
    assert "44 support views" in explorer.auroc_label.value  # 2 supports x 22 views
    assert explorer.auroc_label.value != before[1] and explorer.maps_image.value != before[2]

    explorer.family_boxes["rotation"].value = False
    explorer.family_boxes["translation"].value = False
    assert explorer.result.augment_families == ("flip", "gray", "rot90")
    assert "12 support views" in explorer.auroc_label.value  # 2 x (1 + 1 + 1 + 3)

    # The widget's numbers are run_evaluation's for the same setting (run 0): the wiring adds nothing.
    config = EvaluationConfig(
        data_root=str(root),
        dataset="synthetic",
        categories=["washer"],
        ks=[2],
        runs=1,
        out=str(tmp_path / "eval.json"),
        method="regad",
        backbone="mobilenet_v2",
        weights="random",
        stn_mode=None,
        augment_families=["flip", "gray", "rot90"],
        image_size=SIZE,
        device="cpu",
        seed=0,
    )
    cell = run_evaluation(config, progress=False)["cells"][0]
    assert cell["support_files"] == explorer.result.support_files
    assert explorer.result.image_auroc == pytest.approx(cell["image_auroc"], abs=1e-9)
    assert explorer.result.pixel_auroc == pytest.approx(cell["pixel_auroc"], abs=1e-9)
    for family in ("rotation", "translation"):
        explorer.family_boxes[family].value = True


def test_untrained_stn_is_identity_and_category_switch(explorer) -> None:
    explorer.k_slider.value = 1
    reference = explorer.result
    explorer.stn_dropdown.value = "rotation_scale"
    assert explorer.result.stn_mode == "rotation_scale" and "untrained" in explorer.auroc_label.value
    # An untrained STN is the identity, so the maps barely move (grid_sample rounding only).
    np.testing.assert_allclose(explorer.result.maps, reference.maps, rtol=1e-3, atol=1e-3)
    explorer.stn_dropdown.value = "none"
    assert explorer.result.stn_mode is None and "STN none" in explorer.auroc_label.value
    count = explorer.n_updates
    explorer.category_dropdown.value = "weave"
    assert explorer.n_updates == count + 1 and explorer.result.category == "weave"
    assert "category weave" in explorer.auroc_label.value
    assert explorer.result.maps.shape == (len(explorer.result.labels), SIZE, SIZE)
    explorer.category_dropdown.value = "washer"


def test_all_families_off_is_plain_supports(explorer) -> None:
    for box in explorer.family_boxes.values():
        box.value = False
    assert explorer.result.augment_families == () and "1 support views" in explorer.auroc_label.value
    for box in explorer.family_boxes.values():
        box.value = True


def test_session_errors(root: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least one category"):
        ExplorerSession(root, "synthetic", [], **OPTIONS)
    with pytest.raises(ValueError, match="positive support sizes"):
        ExplorerSession(root, "synthetic", ["washer"], **{**OPTIONS, "ks": (0,)})
    with pytest.raises(FileNotFoundError, match="checkpoint_dir"):
        ExplorerSession(root, "synthetic", ["washer"], checkpoint_dir=tmp_path / "nope", **OPTIONS)
    with pytest.raises(ValueError, match="marble"):  # unknown category: the message lists what exists
        ExplorerSession(root, "synthetic", ["marble"], **OPTIONS)
    session = ExplorerSession(root, "synthetic", ["washer"], **OPTIONS)
    with pytest.raises(ValueError, match="Unknown STN mode"):
        session.evaluate("washer", 1, (), "spin")
    with pytest.raises(ValueError, match="offers washer"):
        session.evaluate("weave", 1, (), None)
    # A checkpoint folder without a file for this setting falls back to the untrained model.
    (tmp_path / "ckpts").mkdir()
    assert (
        ExplorerSession(root, "synthetic", ["washer"], checkpoint_dir=tmp_path / "ckpts", **OPTIONS).checkpoint_for(
            "washer", "rotation"
        )
        is None
    )


def test_panel_rows() -> None:
    assert panel_rows(["good", "good", "hole", "hole", "stain", "thread", "x"]) == [0, 2, 4, 5]
    assert panel_rows(["hole", "good"], max_rows=4) == [1, 0]


def _viewer_data():
    n, s = 4, 8
    maps = np.zeros((n, s, s))
    maps[:, 0, 0] = [1.0, 2.0, 3.0, 4.0]  # map maxima = scores
    masks = np.zeros((n, s, s), bool)
    masks[2:, 0, 0] = True
    masks[3, 1, 1] = True
    images = torch.zeros(n, 3, s, s)
    return images, masks, maps, maps.reshape(n, -1).max(1), np.array([0, 0, 1, 1])


def test_map_viewer_threshold_and_index() -> None:
    viewer = map_viewer(*_viewer_data())
    # Default threshold: midway between the medians of good (1.5) and defective (3.5) scores.
    assert viewer.threshold_slider.value == pytest.approx(2.5)
    assert "4 correct, 0 missed defects, 0 false alarms" in viewer.decision_label.value
    assert "→ GOOD" in viewer.decision_label.value and "truth: good" in viewer.decision_label.value
    viewer.threshold_slider.value = 0.5  # everything flagged
    assert "→ DEFECTIVE" in viewer.decision_label.value and "✗ wrong" in viewer.decision_label.value
    assert "2 correct, 0 missed defects, 2 false alarms" in viewer.decision_label.value
    viewer.threshold_slider.value = 3.5
    viewer.index_slider.value = 3
    text = viewer.decision_label.value
    assert text.startswith("<b>image 3: score 4.000 ≥ threshold 3.500 → DEFECTIVE")
    assert "3 correct, 1 missed defects, 0 false alarms" in text
    # One of the two ground-truth pixels is above the threshold: IoU 1/2.
    assert "pixels above threshold 1, IoU with ground truth 0.50" in text
    assert viewer.image.value[:4] == b"\x89PNG"


def test_map_viewer_without_masks_and_errors() -> None:
    images, _, maps, scores, labels = _viewer_data()
    viewer = map_viewer(images, None, maps, scores, labels, threshold=3.0)
    assert viewer.threshold_slider.value == pytest.approx(3.0) and "IoU" not in viewer.decision_label.value
    with pytest.raises(ValueError, match="same non-zero number"):
        map_viewer(images[:3], None, maps, scores, labels)
    with pytest.raises(ValueError, match="same shape"):
        map_viewer(images, np.zeros((4, 2, 2), bool), maps, scores, labels)


def test_threshold_overlay_colours() -> None:
    prediction = np.array([[True, True, False, False]])
    truth = np.array([[True, False, True, False]])
    rgb = threshold_overlay(prediction, truth)
    np.testing.assert_allclose(rgb[0], [(0.1, 0.8, 0.1), (0.9, 0.1, 0.1), (0.2, 0.4, 1.0), (0, 0, 0)])
    np.testing.assert_allclose(threshold_overlay(prediction, None)[0, :, 0], [1, 1, 0, 0])
