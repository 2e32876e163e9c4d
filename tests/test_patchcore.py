"""PatchCore-k: nearest-neighbour scores, coreset, local averaging (border rules), image-score rules, the method."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from fsad.anomaly_map import anomaly_maps, image_scores
from fsad.methods import maps_and_image_scores
from fsad.patchcore import (
    BORDERS,
    IMAGE_SCORES,
    PatchCoreMethod,
    greedy_coreset,
    local_average,
    nearest_distance,
    nearest_neighbours,
    patch_features,
    reweighted_image_scores,
)


class TinyExtractor(nn.Module):
    """Stand-in for fsad.models.backbone.FeatureExtractor: 3 stage maps at strides 4, 8, 16."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(3, 8, 4, stride=4), nn.ReLU()),
                nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.BatchNorm2d(12), nn.ReLU()),
                nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU()),
            ]
        )
        self.channels = (8, 12, 16)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


def _images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _numpy_nearest(queries: np.ndarray, bank: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - bank[None, :, :].astype(np.float64)) ** 2).sum(-1))
    return d.min(1), d.argmin(1)


# --------------------------------------------------------------------------- nearest neighbours
@pytest.mark.parametrize("chunk_size, bank_chunk_size", [(5, 7), (37, 53), (1, 1000)])
def test_nearest_distance_matches_numpy_brute_force(chunk_size: int, bank_chunk_size: int) -> None:
    g = torch.Generator().manual_seed(1)
    queries, bank = torch.randn(37, 8, generator=g), torch.randn(53, 8, generator=g)
    expected_d, expected_i = _numpy_nearest(queries.numpy(), bank.numpy())
    d, i = nearest_neighbours(queries, bank, chunk_size=chunk_size, bank_chunk_size=bank_chunk_size)
    np.testing.assert_allclose(d.numpy(), expected_d, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(i.numpy(), expected_i)
    np.testing.assert_allclose(
        nearest_distance(queries, bank, chunk_size, bank_chunk_size).numpy(), expected_d, rtol=1e-5, atol=1e-6
    )


def test_nearest_distance_large_norms_exact_zero_for_bank_rows() -> None:
    # Large blocks make cdist use its matrix-product form; large norms make its cancellation error visible.
    g = torch.Generator().manual_seed(2)
    bank = torch.randn(400, 64, generator=g) * 3 + 20
    queries = torch.cat([torch.randn(100, 64, generator=g) * 3 + 20, bank[:50]])
    expected_d, _ = _numpy_nearest(queries.numpy(), bank.numpy())
    d = nearest_distance(queries, bank, chunk_size=64, bank_chunk_size=128)
    np.testing.assert_allclose(d.numpy(), expected_d, rtol=1e-4)
    assert torch.all(d[100:] == 0)


def test_nearest_distance_errors() -> None:
    with pytest.raises(ValueError, match="feature dimensions differ"):
        nearest_distance(torch.zeros(3, 4), torch.zeros(5, 6))
    with pytest.raises(ValueError, match="empty"):
        nearest_distance(torch.zeros(3, 4), torch.zeros(0, 4))
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_distance(torch.zeros(3, 4), torch.zeros(5, 4), chunk_size=0)


# --------------------------------------------------------------------------- local features
def _zero_padded_mean_by_hand(x: np.ndarray) -> np.ndarray:
    """The authors' definition, written out: every cell = (sum of its 3x3 neighbours, zeros outside) / 9."""
    n, c, h, w = x.shape
    out = np.zeros_like(x, dtype=np.float64)
    for i in range(h):
        for j in range(w):
            total = np.zeros((n, c))
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        total += x[:, :, i + di, j + dj]
            out[:, :, i, j] = total / 9.0
    return out


def test_local_average_default_is_the_zero_padded_mean() -> None:
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6) ** 1.5
    y = local_average(x)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.numpy(), _zero_padded_mean_by_hand(x.numpy()), rtol=1e-6)
    # corner: the 4 existing neighbours summed, divided by 9 (the 5 padded zeros count)
    assert torch.allclose(y[0, 1, 0, 0], x[0, 1, 0:2, 0:2].sum() / 9)
    assert torch.equal(local_average(x, kernel=1), x)
    with pytest.raises(ValueError, match="odd"):
        local_average(x, kernel=2)


def test_local_average_exclude_padding_option() -> None:
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6) ** 1.5
    y = local_average(x, border="exclude_padding")
    # interior position (2, 3): mean of the 3x3 block rows 1..3, cols 2..4, as with padding
    assert torch.allclose(y[1, 2, 2, 3], x[1, 2, 1:4, 2:5].mean())
    assert torch.allclose(y[1, 2, 2, 3], local_average(x)[1, 2, 2, 3])
    # corner: only the 4 existing neighbours, edge (not corner): the 6 existing ones
    assert torch.allclose(y[0, 1, 0, 0], x[0, 1, 0:2, 0:2].mean())
    assert torch.allclose(y[0, 1, 0, 3], x[0, 1, 0:2, 2:5].mean())
    with pytest.raises(ValueError, match="include_padding"):
        local_average(x, border="zeros")


def test_patch_features_border_reaches_three_cells_in_after_upsampling() -> None:
    # Constant maps: the two rules differ only where padding enters; on the stage-2 grid that is its outer ring
    # for stage 2, but upsampled stage 3 carries its own border difference further in.
    s2, s3 = torch.ones(1, 2, 12, 12), torch.ones(1, 3, 6, 6)
    inc, exc = patch_features(s2, s3), patch_features(s2, s3, border="exclude_padding")
    assert torch.equal(exc, torch.ones_like(exc))
    differs = (inc != exc).any(dim=1)[0]
    assert differs[0].all() and differs[:, 0].all()  # the outer ring
    assert differs[2, 6] and not differs[4:8, 4:8].any()  # 3rd cell in still differs, the centre does not


def test_patch_features_shape_and_content() -> None:
    g = torch.Generator().manual_seed(3)
    s2, s3 = torch.randn(2, 5, 8, 8, generator=g), torch.randn(2, 7, 4, 4, generator=g)
    out = patch_features(s2, s3)
    assert out.shape == (2, 12, 8, 8)
    assert torch.allclose(out[:, :5], local_average(s2))
    assert torch.allclose(
        patch_features(s2, s3, border="exclude_padding")[:, :5], local_average(s2, border="exclude_padding")
    )
    # a constant stage 3 stays constant after averaging (existing neighbours) and bilinear upsampling
    const = patch_features(s2, torch.full((2, 7, 4, 4), 2.5), border="exclude_padding")
    assert torch.allclose(const[:, 5:], torch.full((2, 7, 8, 8), 2.5))
    with pytest.raises(ValueError, match="batch sizes differ"):
        patch_features(s2, s3[:1])


# --------------------------------------------------------------------------- coreset
def _reference_greedy(points: np.ndarray, first: int, count: int) -> list[int]:
    chosen = [first]
    dist = np.linalg.norm(points - points[first], axis=1)
    for _ in range(count - 1):
        dist[chosen] = -1
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(points - points[nxt], axis=1))
    return chosen


def test_greedy_coreset_keeps_outlier_unique_count_deterministic() -> None:
    g = torch.Generator().manual_seed(4)
    bank = torch.randn(300, 200, generator=g)  # D > 128: the random projection is used
    bank[137] += 60.0  # far from all others
    for seed in range(5):
        idx = greedy_coreset(bank, ratio=0.02, seed=seed)
        assert idx.dtype == torch.long
        assert len(idx) == math.ceil(0.02 * 300)
        assert len(set(idx.tolist())) == len(idx)
        assert 137 in idx.tolist()
        assert torch.equal(idx, greedy_coreset(bank, ratio=0.02, seed=seed))
    assert len(greedy_coreset(bank, ratio=1.0)) == 300
    assert sorted(greedy_coreset(bank, ratio=1.0).tolist()) == list(range(300))


def test_greedy_coreset_is_farthest_point_order() -> None:
    g = torch.Generator().manual_seed(5)
    bank = torch.randn(120, 6, generator=g)
    idx = greedy_coreset(bank, ratio=0.1, seed=3, projection_dim=None).tolist()
    assert idx == _reference_greedy(bank.numpy().astype(np.float64), idx[0], len(idx))


def test_greedy_coreset_duplicates_stay_unique_and_errors() -> None:
    idx = greedy_coreset(torch.zeros(10, 4), ratio=1.0)
    assert sorted(idx.tolist()) == list(range(10))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        greedy_coreset(torch.zeros(10, 4), ratio=0.0)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        greedy_coreset(torch.zeros(10, 4), ratio=1.5)


# --------------------------------------------------------------------------- reweighting
def test_reweighted_image_scores_matches_eq7_by_hand() -> None:
    g = torch.Generator().manual_seed(6)
    bank = torch.randn(30, 4, generator=g)
    emb = torch.randn(2, 10, 4, generator=g) * 2
    d, i = nearest_neighbours(emb.reshape(-1, 4), bank)
    d, i = d.reshape(2, 10), i.reshape(2, 10)
    got = reweighted_image_scores(d, i, emb, bank, neighbours=3)
    for b in range(2):
        p = int(d[b].argmax())
        m_test, m_star = emb[b, p].double(), bank[i[b, p]].double()
        nb = torch.cdist(m_star[None], bank.double())[0].argsort()[:3]  # includes m* itself first
        dists = torch.linalg.vector_norm(m_test - bank.double()[nb], dim=1)
        expected = (1 - torch.exp(dists[0]) / torch.exp(dists).sum()) * d[b, p].double()
        assert torch.isclose(got[b].double(), expected, rtol=1e-5)
    assert torch.equal(reweighted_image_scores(d, i, emb, bank, neighbours=1), d.amax(1))


# --------------------------------------------------------------------------- the method
def test_identical_image_scores_zero_everywhere() -> None:
    supports = _images(3, seed=7)
    method = PatchCoreMethod(TinyExtractor(), feature_batch=2)
    method.fit(supports)
    maps = method.score(supports[1:2])
    assert maps.shape == (1, 4, 4)  # stage-2 grid of a 32 px image (stride 8)
    assert torch.allclose(maps, torch.zeros_like(maps), atol=1e-4)
    other = method.score(_images(1, seed=8))
    assert other.max() > 1e-2
    info = method.describe()
    assert info["method"] == "patchcore" and info["bank_size"] == 3 * 4 * 4
    assert info["image_score"] == "patch_max" and info["border"] == "include_padding"
    assert info["coreset_ratio"] is None and info["augment_families"] == []


def test_embed_and_score_features_agree_with_score() -> None:
    method = PatchCoreMethod(TinyExtractor())
    method.fit(_images(2, seed=9))
    test = _images(3, seed=10)
    features = method.embed(test)
    assert features.shape == (3, 12 + 16, 4, 4)
    assert torch.equal(method.score_features(features), method.score(test))
    maps, scores = method.score_features_with_image_scores(features)
    assert torch.equal(maps, method.score(test)) and torch.equal(scores, maps.flatten(1).amax(1))


def test_fit_score_deterministic_with_coreset_and_reweight() -> None:
    supports, test = _images(2, seed=11), _images(2, seed=12)
    results = []
    for _ in range(2):
        method = PatchCoreMethod(TinyExtractor(), coreset_ratio=0.25, seed=3, image_score="reweighted")
        method.fit(supports)
        assert method.describe()["bank_size"] == math.ceil(0.25 * 2 * 16)
        results.append((method.score(test), *method.score_features_with_image_scores(method.embed(test))))
    for a, b in zip(*results):
        assert torch.equal(a, b)
    assert torch.all(results[0][2] <= results[0][1].flatten(1).amax(1))  # reweighting only damps


def test_augmented_bank_size() -> None:
    from fsad.augment import views_per_image

    method = PatchCoreMethod(TinyExtractor(), augment_families=("flip", "rot90"))
    method.fit(_images(2, seed=13))
    assert method.describe()["bank_size"] == 2 * views_per_image(("flip", "rot90")) * 16
    assert method.describe()["augment_families"] == ["flip", "rot90"]


def test_method_errors() -> None:
    with pytest.raises(RuntimeError, match="before fit"):
        PatchCoreMethod(TinyExtractor()).score(_images(1))
    with pytest.raises(ValueError, match="valid"):
        PatchCoreMethod(TinyExtractor(), augment_families=("blur",))
    with pytest.raises(ValueError, match="sequence"):
        PatchCoreMethod(TinyExtractor(), augment_families="flip")
    with pytest.raises(ValueError, match="coreset_ratio"):
        PatchCoreMethod(TinyExtractor(), coreset_ratio=2.0)
    method = PatchCoreMethod(TinyExtractor())
    method.fit(_images(1))
    with pytest.raises(ValueError, match="patch features"):
        method.score_features(torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="images"):
        method.embed(torch.zeros(1, 1, 32, 32))


def test_real_feature_extractor_if_available() -> None:
    backbone = pytest.importorskip("fsad.models.backbone")
    extractor = backbone.FeatureExtractor("resnet18")
    method = PatchCoreMethod(extractor)
    supports = _images(2, size=64, seed=14)
    method.fit(supports)
    maps = method.score(supports[:1])
    assert maps.shape == (1, 8, 8)
    assert method.embed(supports[:1]).shape[1] == sum(backbone.STAGE_CHANNELS["resnet18"][1:])
    assert torch.allclose(maps, torch.zeros_like(maps), atol=1e-4)


# --------------------------------------------------------------------------- image-score rules
class _FixedMapMethod:
    """A method whose patch map is given by hand (as a PatchCore-like method: score_features_with_image_scores)."""

    def __init__(self, distances: torch.Tensor, image_score: str) -> None:
        self.distances, self.image_score = distances, image_score

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.distances

    def score_features_with_image_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.distances, self.distances.flatten(1).amax(1)


def test_image_score_rules_on_a_hand_made_map() -> None:
    # Image 0: one isolated hot patch (5.0) that the blur spreads out; image 1: a broad plateau of 3.0.
    d = torch.zeros(2, 8, 8)
    d[0, 4, 4] = 5.0
    d[1, 2:7, 2:7] = 3.0
    maps, patch_max = maps_and_image_scores(_FixedMapMethod(d, "patch_max"), torch.empty(2), 64)
    assert torch.equal(patch_max, torch.tensor([5.0, 3.0]))  # the paper's s*: raw patch maximum
    blurred, map_max = maps_and_image_scores(_FixedMapMethod(d, "map_max"), torch.empty(2), 64)
    assert torch.equal(maps, blurred) and torch.equal(maps, anomaly_maps(d, 64))
    assert torch.equal(map_max, image_scores(anomaly_maps(d, 64)))
    # the blur flattens the single hot patch below the plateau: the two rules rank the images oppositely
    assert map_max[0] < map_max[1] and patch_max[0] > patch_max[1]


def test_patchcore_image_score_rules_end_to_end() -> None:
    supports, test = _images(2, seed=21), _images(3, seed=22)
    scores = {}
    for rule in IMAGE_SCORES:
        method = PatchCoreMethod(TinyExtractor(), image_score=rule)
        method.fit(supports)
        features = method.embed(test)
        maps, scores[rule] = maps_and_image_scores(method, features, 32)
        assert torch.equal(maps, anomaly_maps(method.score_features(features), 32))  # maps never depend on the rule
        if rule == "patch_max":
            assert torch.equal(scores[rule], method.score_features(features).flatten(1).amax(1))
        if rule == "map_max":
            assert torch.equal(scores[rule], image_scores(maps))
    assert torch.all(scores["reweighted"] <= scores["patch_max"])
    with pytest.raises(ValueError, match="patch_max"):
        PatchCoreMethod(TinyExtractor(), image_score="max")
    with pytest.raises(ValueError, match="include_padding"):
        PatchCoreMethod(TinyExtractor(), border="zero")
    assert set(BORDERS) == {"include_padding", "exclude_padding"}


def test_nearest_neighbours_no_cancellation_far_from_origin() -> None:
    # Features far from the origin (like ReLU features) with small spread: |q|^2 + |b|^2 >> d^2, where the
    # uncentred |q|^2 - 2qb + |b|^2 form loses the distance. Exact up to float32 on the differences.
    g = torch.Generator().manual_seed(5)
    bank = 1000.0 + torch.randn(300, 32, generator=g) * 0.05
    queries = bank[:40] + torch.randn(40, 32, generator=g) * 0.01
    expected_d, expected_i = _numpy_nearest(queries.numpy(), bank.numpy())
    d, i = nearest_neighbours(queries, bank, chunk_size=16, bank_chunk_size=64)
    np.testing.assert_array_equal(i.numpy(), expected_i)
    np.testing.assert_allclose(d.numpy(), expected_d, rtol=1e-3)
