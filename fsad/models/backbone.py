"""Three-stage CNN feature extractor (ResNet-18 or MobileNetV2 from torchvision) for RegAD."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torchvision
from torch import Tensor, nn

__all__ = ["BACKBONES", "STAGE_CHANNELS", "STAGE_STRIDES", "FeatureExtractor"]

BACKBONES = ("resnet18", "mobilenet_v2")
# Output channels of the three stages (RegAD paper §3.2: ResNet-18 C1–C3; MobileNetV2 features[3]/[6]/[13]).
STAGE_CHANNELS: dict[str, tuple[int, int, int]] = {"resnet18": (64, 128, 256), "mobilenet_v2": (24, 32, 96)}
# Downsampling of each stage's output w.r.t. the input image (same for both backbones).
STAGE_STRIDES = (4, 8, 16)


def _check_backbone(backbone: str) -> None:
    if backbone not in STAGE_CHANNELS:
        raise ValueError(f"unknown backbone {backbone!r}; valid backbones: {', '.join(BACKBONES)}")


def _load_strict(model: nn.Module, state_dict: Mapping[str, Tensor], backbone: str) -> None:
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(f"state_dict is not a torchvision {backbone} state dict: {err}. Get one from "
                         f"fsad.weights.load_backbone_weights({backbone!r}) or torchvision.models.{backbone}()"
                         ".state_dict()") from err
    if missing or unexpected:
        raise ValueError(
            f"state_dict is not a torchvision {backbone} state dict: missing keys {missing[:5]}"
            f"{'…' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys {unexpected[:5]}"
            f"{'…' if len(unexpected) > 5 else ''} ({len(unexpected)}). Get one from "
            f"fsad.weights.load_backbone_weights({backbone!r}) or torchvision.models.{backbone}().state_dict()")


class FeatureExtractor(nn.Module):
    """The first three stages of a torchvision CNN, returning one feature map per stage.

    Stage mapping (strides 4, 8, 16 w.r.t. the input; shapes for a 224 px input):

    * ``resnet18``: stage 1 = ``conv1, bn1, relu, maxpool, layer1`` → ``[N, 64, 56, 56]``; stage 2 = ``layer2`` →
      ``[N, 128, 28, 28]``; stage 3 = ``layer3`` → ``[N, 256, 14, 14]`` (``layer4``/``avgpool``/``fc`` are dropped:
      RegAD paper §3.2 keeps the first three blocks so features keep spatial detail).
    * ``mobilenet_v2``: stage 1 = ``features[0:4]`` → ``[N, 24, 56, 56]``; stage 2 = ``features[4:7]`` →
      ``[N, 32, 28, 28]``; stage 3 = ``features[7:14]`` → ``[N, 96, 14, 14]`` (``features[14:]`` and the
      ``classifier`` are dropped). These are the last blocks before each resolution change, the same places as
      ResNet-18's layer1–3.

    The torchvision model is built with random initialisation, then ``state_dict`` (a full torchvision state dict,
    e.g. from ``fsad.weights.load_backbone_weights``) is loaded *strictly* before the unused modules are dropped,
    so a wrong or partial file fails loudly instead of silently leaving random weights.

    Args:
        backbone: ``"resnet18"`` or ``"mobilenet_v2"``.
        state_dict: torchvision state dict for the whole model, or ``None`` for torchvision's random init
            (seed the global RNG first for reproducibility).

    Example:
        >>> import torch
        >>> fe = FeatureExtractor("resnet18")
        >>> [f.shape for f in fe(torch.randn(1, 3, 224, 224))]
        [torch.Size([1, 64, 56, 56]), torch.Size([1, 128, 28, 28]), torch.Size([1, 256, 14, 14])]
    """

    def __init__(self, backbone: str = "resnet18", state_dict: Mapping[str, Tensor] | None = None) -> None:
        super().__init__()
        _check_backbone(backbone)
        self.backbone = backbone
        self.channels: tuple[int, int, int] = STAGE_CHANNELS[backbone]
        self.strides = STAGE_STRIDES
        model = getattr(torchvision.models, backbone)(weights=None)
        if state_dict is not None:
            _load_strict(model, state_dict, backbone)
        if backbone == "resnet18":
            stages = [
                nn.Sequential(OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu,
                                          maxpool=model.maxpool, layer1=model.layer1)),
                nn.Sequential(OrderedDict(layer2=model.layer2)),
                nn.Sequential(OrderedDict(layer3=model.layer3)),
            ]
        else:
            # Slicing an nn.Sequential keeps the original indices as names ("4", "5", "6"), so parameter names
            # still say which torchvision block they came from.
            stages = [model.features[0:4], model.features[4:7], model.features[7:14]]
        self.stages = nn.ModuleList(stages)

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns the three stage feature maps ``[N, C_i, H/s_i, W/s_i]`` for ``s = (4, 8, 16)``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def extra_repr(self) -> str:
        return f"backbone={self.backbone!r}, channels={self.channels}"
