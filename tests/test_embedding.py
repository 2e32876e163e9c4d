"""RegAD Fig. 4 as one implementation (fsad.embedding): views, pooled features, t-SNE and silhouette."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_tools.synthetic import generate_synthetic_dataset
from fsad import embedding
from fsad.models.regad import RegADModel

SIZE = 64


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        seed=0,
        image_size=SIZE,
        n_train=3,
        n_test_good=2,
        n_test_per_defect=1,
        categories=["weave", "washer"],
    )


def test_tsne_2d_separates_two_blobs_and_handles_tiny_inputs() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.1, (20, 8)), rng.normal(5, 0.1, (20, 8))])
    points = embedding.tsne_2d(x, seed=0)
    assert points.shape == (40, 2)
    a, b = points[:20].mean(0), points[20:].mean(0)
    spread = max(points[:20].std(0).max(), points[20:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread
    assert embedding.tsne_2d(rng.normal(size=(5, 3)), seed=0).shape == (5, 2)  # perplexity capped below N
    with pytest.raises(ValueError, match="at least 4"):
        embedding.tsne_2d(np.zeros((3, 5)))


def test_silhouette_is_computed_in_feature_space() -> None:
    rng = np.random.default_rng(0)
    # two directions: cosine silhouette near +1; the same points mixed: near 0
    a = np.array([1.0, 0.0, 0.0]) + rng.normal(0, 0.01, (10, 3))
    b = np.array([0.0, 1.0, 0.0]) + rng.normal(0, 0.01, (10, 3))
    assert embedding.silhouette(np.concatenate([a, b]), ["a"] * 10 + ["b"] * 10) > 0.9
    assert abs(embedding.silhouette(np.concatenate([a, b]), ["a", "b"] * 10)) < 0.1
    with pytest.raises(ValueError, match="two categories"):
        embedding.silhouette(a, ["a"] * 10)


def test_augmented_normals_labels_every_view(root: Path) -> None:
    views, groups = embedding.augmented_normals(root, ["weave", "washer"], 1, SIZE, held_out="washer")
    assert views.shape == (44, 3, SIZE, SIZE) and len(groups) == 44  # 2 categories x 1 image x 22 views
    assert groups.count("weave") == 22 and groups.count("washer (held out)") == 22
    views, groups = embedding.augmented_normals(root, ["weave"], 5, SIZE, families=["flip"])
    assert len(views) == 2 * 2  # only 2 test/good images exist
    with pytest.raises(ValueError, match="No normal images"):
        embedding.augmented_normals(root, ["nothing"], 1, SIZE)


def test_fig4_untrained_model_features_equal_the_backbone(root: Path) -> None:
    views, groups = embedding.augmented_normals(root, ["weave", "washer"], 1, SIZE, families=["flip", "rot90"])
    model = RegADModel("resnet18", image_size=SIZE, seed=0)  # identity STNs: embed = backbone features
    plain = RegADModel("resnet18", image_size=SIZE, stn_mode=None, seed=0)
    result = embedding.fig4({"stn": model, "plain": plain, "z": (model, True)}, views, groups, seed=0)
    assert result.features["stn"].shape == (len(views), model.embed_channels)
    np.testing.assert_allclose(result.features["stn"], result.features["plain"], rtol=1e-5, atol=1e-6)
    assert result.features["z"].shape[1] == model.channels[-1]
    assert set(result.silhouettes) == {"stn", "plain", "z"} and all(-1 <= s <= 1 for s in result.silhouettes.values())
    panels = result.panels()
    assert all(points.shape == (len(views), 2) for points, _ in panels.values())
    assert any("silhouette" in title for title in panels)
    with pytest.raises(ValueError, match="group labels"):
        embedding.fig4({"stn": model}, views, groups[:-1])
