"""float32 Gaussian scoring on REAL features matches a float64 reference to 1e-4 relative.

bottle (MVTec AD subset) and metal_plate (MPDD subset); MobileNetV2 with its shipped ImageNet weights and
ResNet-18 random; k = 1, 2, 8 (22 augmented views each, so both the low-rank and the full form run); the
test images include one equal to a support, where the residual is smallest. The embedding and the
reference live in benchmarks/exactness.py (which prints the same table).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

_spec = importlib.util.spec_from_file_location("fsad_bench_exactness", REPO_ROOT / "benchmarks" / "exactness.py")
exactness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = exactness
_spec.loader.exec_module(exactness)

pytestmark = [pytest.mark.real_data, pytest.mark.slow]


@pytest.fixture(
    scope="module",
    params=[(root, cat, bb) for root, cat in exactness.CASES for bb in exactness.BACKBONE_WEIGHTS],
    ids=lambda p: f"{p[1]}-{p[2]}",
)
def features(request, shared_data_root):
    root, category, backbone = request.param
    sup, tst, views = exactness.real_features(
        shared_data_root / root, category, backbone, exactness.BACKBONE_WEIGHTS[backbone], stride=8
    )
    return backbone, sup, tst, views


def test_float32_distances_match_float64_reference(features):
    backbone, sup, tst, views = features
    rows = exactness.exactness_rows(sup, tst, max(exactness.KS), views)
    assert [r["k"] for r in rows] == list(exactness.KS)
    assert all(r["dtype"] == "float32" for r in rows)
    forms = {r["form"] for r in rows}
    # ResNet-18 (C = 448) is low-rank at every k; MobileNetV2 (C = 152) switches to the full form at k = 8.
    assert forms == ({"lowrank"} if backbone == "resnet18" else {"lowrank", "full"})
    for row in rows:
        assert row["max_rel"] <= exactness.TOLERANCE, row
        assert row["at_support"] <= exactness.TOLERANCE, row
