"""The backbone table: a new backbone is one row, and everything that builds models picks it up."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fsad.models.backbone import BACKBONE_TABLE, STAGE_CHANNELS, BackboneSpec, FeatureExtractor, backbone_names
from fsad.models.regad import RegADModel


class _TinyNet(nn.Module):
    """A toy CNN with three stages of strides 4, 8, 16 (what a new backbone must provide)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
        self.mid = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU())
        self.deep = nn.Sequential(nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.ReLU())


TOY = BackboneSpec("tiny_toy", _TinyNet, lambda m: [m.stem, m.mid, m.deep], (8, 12, 16))


@pytest.fixture
def toy_backbone(monkeypatch: pytest.MonkeyPatch) -> BackboneSpec:
    monkeypatch.setitem(BACKBONE_TABLE, TOY.name, TOY)  # one row; removed again after the test
    return TOY


def test_shipped_rows():
    assert backbone_names()[:2] == ("resnet18", "mobilenet_v2")
    assert dict(STAGE_CHANNELS)["resnet18"] == (64, 128, 256) and STAGE_CHANNELS["mobilenet_v2"] == (24, 32, 96)


def test_a_registered_backbone_is_one_row(toy_backbone: BackboneSpec):
    from fsad.cli import build_parser
    from fsad.weights import WeightsError, load_backbone_weights

    torch.manual_seed(0)
    features = FeatureExtractor("tiny_toy")(torch.randn(2, 3, 64, 64))
    assert [tuple(f.shape) for f in features] == [(2, 8, 16, 16), (2, 12, 8, 8), (2, 16, 4, 4)]
    assert STAGE_CHANNELS["tiny_toy"] == (8, 12, 16) and "tiny_toy" in backbone_names()

    model = RegADModel("tiny_toy", image_size=64, seed=0).eval()
    assert model.embed(torch.randn(1, 3, 64, 64)).shape == (1, 8 + 12 + 16, 16, 16)

    # The CLI offers it; random weights are explicit; ImageNet weights are refused, never borrowed.
    args = build_parser().parse_args(
        [
            "evaluate",
            "--data-root",
            "x",
            "--dataset",
            "synthetic",
            "--categories",
            "a",
            "--out",
            "r.json",
            "--backbone",
            "tiny_toy",
            "--weights",
            "random",
        ]
    )
    assert args.backbone == "tiny_toy"
    state_dict, info = load_backbone_weights("tiny_toy", "random", seed=3)
    assert state_dict is None and info.kind == "random" and info.seed == 3
    with pytest.raises(WeightsError, match="no ImageNet weights source for backbone 'tiny_toy'"):
        load_backbone_weights("tiny_toy", "imagenet")


def test_unknown_backbone_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid backbones: resnet18, mobilenet_v2"):
        FeatureExtractor("vgg16")
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        RegADModel("vgg16")
