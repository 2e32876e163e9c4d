"""fsad.costs: the variant timing shared by benchmarks/rcm_variants.py and notebook 07 (no timing asserted)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fsad.costs import rcm_variant_costs, time_models, variant_label


def test_variant_label_names_the_backbone_used() -> None:
    assert variant_label("R18+MAM+DCNv2", "mobilenet_v2") == "MNv2+MAM+DCNv2"
    assert variant_label("R18", "resnet18") == "R18"
    assert variant_label("R18+TAM", "toy") == "toy+TAM"


def test_time_models_counts_parameters_and_ratios() -> None:
    models = {"small": nn.Linear(4, 2), "big": nn.Sequential(nn.Linear(4, 8), nn.Linear(8, 2))}
    models["big"][0].weight.requires_grad_(False)
    rows = time_models(models, torch.randn(3, 4), reps=2, warmup=0)
    assert [r["label"] for r in rows] == ["small", "big"]
    assert rows[0]["params"] == 10 and rows[1]["params"] == 40 + 18
    assert rows[1]["trainable_params"] == 58 - 32
    assert rows[0]["time_ratio"] == 1.0 and rows[1]["params_ratio"] == pytest.approx(5.8)
    assert len(rows[1]["times_s"]) == 2
    with pytest.raises(ValueError, match="reps >= 1"):
        time_models(models, torch.randn(3, 4), reps=0)


def test_rcm_variant_costs_rows_are_labelled_by_backbone() -> None:
    result = rcm_variant_costs(
        {"R18": ("none", False), "R18+MAM": ("mam", False)},
        backbone="mobilenet_v2",
        image_size=32,
        batch=1,
        reps=1,
        warmup=0,
        device="cpu",
    )
    labels = [row["label"] for row in result["rows"]]
    assert labels == ["MNv2", "MNv2+MAM"] and result["config"]["backbone"] == "mobilenet_v2"
    assert 0 < result["rows"][1]["extra_params"] < 1000  # MAM on the 3-channel image: a few hundred parameters
