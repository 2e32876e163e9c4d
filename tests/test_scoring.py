"""fsad.scoring: the one fit -> score -> map -> metric path that evaluation, figures and widgets share."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_tools.synthetic import generate_synthetic_dataset
from fsad import figures
from fsad.errors import ConfigError
from fsad.evaluate import EvaluationConfig, run_evaluation
from fsad.methods import GaussianMethod, maps_and_image_scores
from fsad.metrics import aupro, f1_max, image_auroc, pixel_auroc
from fsad.models.regad import RegADModel
from fsad.scoring import CELL_METRICS, cell_metrics, fit_and_score
from fsad.utils import seed_everything

SIZE = 64


class _RandomFitMethod:
    """A method whose fit draws from the global generator (as augmentation or a coreset may)."""

    name = "random_fit"

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return images.mean(dim=1)[:, ::8, ::8]

    def fit(self, supports: torch.Tensor) -> None:
        self.offset = torch.rand(1)

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return features + self.offset

    def describe(self) -> dict:
        return {"method": self.name}


def test_fit_and_score_is_seed_fit_then_maps_and_image_scores() -> None:
    torch.manual_seed(0)
    supports, test = torch.randn(2, 3, SIZE, SIZE), torch.randn(3, 3, SIZE, SIZE)
    method = GaussianMethod(RegADModel(image_size=SIZE), augment_families=("flip",))
    features = method.embed(test)
    scored = fit_and_score(method, supports, features, SIZE, seed=5)

    seed_everything(5)
    method.fit(supports)
    maps, scores = maps_and_image_scores(method, features, SIZE)
    assert np.array_equal(scored.maps, maps.numpy()) and np.array_equal(scored.scores, scores.numpy())
    assert scored.maps.shape == (3, SIZE, SIZE) and scored.adaptation_s > 0 and scored.score_s > 0

    toy, toy_features = _RandomFitMethod(), _RandomFitMethod().embed(test)
    first = fit_and_score(toy, supports, toy_features, SIZE, seed=3)
    torch.rand(10)  # whatever ran in between, the seed decides the fit
    again = fit_and_score(toy, supports, toy_features, SIZE, seed=3)
    other = fit_and_score(toy, supports, toy_features, SIZE, seed=4)
    assert np.array_equal(first.scores, again.scores) and not np.array_equal(first.scores, other.scores)


def test_cell_metrics_are_fsad_metrics_and_none_without_masks() -> None:
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.2, 0.6, 0.5, 0.9, 0.8])
    maps = rng.random((5, 16, 16))
    masks = np.zeros((5, 16, 16), dtype=bool)
    masks[2:, 4:9, 4:9] = True
    maps[masks] += 0.5

    metrics = cell_metrics(labels, scores, maps, masks)
    assert list(metrics) == list(CELL_METRICS)
    assert metrics == {
        "image_auroc": image_auroc(labels, scores),
        "f1_max": f1_max(labels, scores),
        "pixel_auroc": pixel_auroc(masks, maps),
        "aupro": aupro(masks, maps),
    }
    assert metrics["image_auroc"] == pytest.approx(5 / 6)
    assert cell_metrics(labels, scores, maps, None) == {**metrics, "pixel_auroc": None, "aupro": None}
    assert cell_metrics(labels, scores, maps, masks, names=("pixel_auroc", "image_auroc")) == {
        "image_auroc": metrics["image_auroc"],
        "pixel_auroc": metrics["pixel_auroc"],
    }
    with pytest.raises(ConfigError, match="Unknown metric.*'auc'.*choose from image_auroc"):
        cell_metrics(labels, scores, maps, masks, names=("auc",))


@pytest.mark.parametrize("method", ["regad", "patchcore"])
def test_localisation_maps_are_the_ones_behind_run_evaluation_numbers(
    method: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = generate_synthetic_dataset(
        tmp_path_factory.mktemp("syn"),
        seed=1,
        image_size=SIZE,
        n_train=4,
        n_test_good=3,
        n_test_per_defect=2,
        categories=["washer"],
    )
    out = tmp_path_factory.mktemp("eval") / "e.json"
    config = EvaluationConfig(
        data_root=str(root),
        dataset="synthetic",
        categories=["washer"],
        ks=[2],
        runs=2,
        out=str(out),
        method=method,
        backbone="resnet18",
        weights="random",
        image_size=SIZE,
        augment_families=["flip"] if method == "regad" else [],
        coreset_ratio=0.5 if method == "patchcore" else None,
    )
    cell = [c for c in run_evaluation(config, progress=False)["cells"] if c["run"] == 1][0]
    examples = figures.localisation_examples(config, "washer", k=2, run=1)
    assert examples["supports"] == cell["support_files"]
    assert image_auroc(examples["labels"], examples["scores"]) == cell["image_auroc"]
    assert pixel_auroc(examples["masks"], examples["maps"]) == cell["pixel_auroc"]
