"""Three-stage CNN feature extractor for RegAD, and the backbone table (ResNet-18, MobileNetV2, registered ones)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torchvision
from torch import Tensor, nn

__all__ = [
    "BACKBONE_TABLE",
    "BackboneSpec",
    "STAGE_CHANNELS",
    "STAGE_STRIDES",
    "FeatureExtractor",
    "backbone_names",
    "backbone_spec",
    "register_backbone",
]

# Downsampling of each stage's output w.r.t. the input image (the same for both shipped backbones).
STAGE_STRIDES = (4, 8, 16)


@dataclass(frozen=True)
class BackboneSpec:
    """One row of the backbone table: everything the model needs to know about a feature extractor.

    Args:
        name: the ``--backbone`` value, recorded in results and checkpoints.
        build: returns the whole torchvision-style model with random initialisation (weights load into it
            strictly, before the unused modules are dropped).
        split: the model's first three stages as modules, applied in sequence.
        channels: output channels of the three stages (they size the STNs and the Siamese heads).
        strides: downsampling of each stage's output w.r.t. the input image.
    """

    name: str
    build: Callable[[], nn.Module]
    split: Callable[[nn.Module], Sequence[nn.Module]]
    channels: tuple[int, int, int]
    strides: tuple[int, int, int] = STAGE_STRIDES


def _resnet_stages(model: nn.Module) -> list[nn.Module]:
    return [
        nn.Sequential(
            OrderedDict(conv1=model.conv1, bn1=model.bn1, relu=model.relu, maxpool=model.maxpool, layer1=model.layer1)
        ),
        nn.Sequential(OrderedDict(layer2=model.layer2)),
        nn.Sequential(OrderedDict(layer3=model.layer3)),
    ]


def _mobilenet_v2_stages(model: nn.Module) -> list[nn.Module]:
    # Slicing an nn.Sequential keeps the original indices as names ("4", "5", "6"), so parameter names still
    # say which torchvision block they came from.
    return [model.features[0:4], model.features[4:7], model.features[7:14]]


# The backbone table: a new backbone is one row here (plus, if it has genuine ImageNet weights, one row in
# fsad.weights.IMAGENET_SOURCES). Stage choices: RegAD Sec. 4.1 keeps ResNet-18's first three blocks
# (C1–C3); for MobileNetV2 the last blocks before each resolution change, the same places.
BACKBONE_TABLE: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in (
        BackboneSpec("resnet18", lambda: torchvision.models.resnet18(weights=None), _resnet_stages, (64, 128, 256)),
        BackboneSpec(
            "mobilenet_v2", lambda: torchvision.models.mobilenet_v2(weights=None), _mobilenet_v2_stages, (24, 32, 96)
        ),
    )
}


def register_backbone(spec: BackboneSpec, *, replace: bool = False) -> None:
    """Add a row to :data:`BACKBONE_TABLE` (e.g. from a course's own module, before building parsers)."""
    if spec.name in BACKBONE_TABLE and not replace:
        raise ValueError(f"backbone {spec.name!r} is already registered; pass replace=True to redefine it")
    if len(spec.channels) != 3 or len(spec.strides) != 3:
        raise ValueError(f"backbone {spec.name!r}: channels and strides need one entry per stage (three)")
    BACKBONE_TABLE[spec.name] = spec


def backbone_names() -> tuple[str, ...]:
    """The registered backbones, in table order (the CLI's ``--backbone`` choices)."""
    return tuple(BACKBONE_TABLE)


def backbone_spec(name: str) -> BackboneSpec:
    """The table row for ``name``; a clear error listing the valid names otherwise."""
    try:
        return BACKBONE_TABLE[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown backbone {name!r}; valid backbones: {', '.join(BACKBONE_TABLE)}") from None


class _StageChannels(Mapping):
    """Read-only live view name -> stage channels of :data:`BACKBONE_TABLE` (registered rows included)."""

    def __getitem__(self, name: str) -> tuple[int, int, int]:
        return BACKBONE_TABLE[name].channels

    def __iter__(self) -> Iterator[str]:
        return iter(BACKBONE_TABLE)

    def __len__(self) -> int:
        return len(BACKBONE_TABLE)


# Output channels of the three stages, per backbone (a view of the table).
STAGE_CHANNELS: Mapping[str, tuple[int, int, int]] = _StageChannels()


def _load_strict(model: nn.Module, state_dict: Mapping[str, Tensor], backbone: str) -> None:
    missing, unexpected = [], []
    try:
        result = model.load_state_dict(state_dict, strict=False)
        missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    except RuntimeError as err:  # shape mismatches raise even with strict=False
        raise ValueError(
            f"state_dict is not a torchvision {backbone} state dict: {err}. Get one from "
            f"fsad.weights.load_backbone_weights({backbone!r}) or torchvision.models.{backbone}()"
            ".state_dict()"
        ) from err
    if missing or unexpected:
        raise ValueError(
            f"state_dict is not a torchvision {backbone} state dict: missing keys {missing[:5]}"
            f"{'…' if len(missing) > 5 else ''} ({len(missing)}), unexpected keys {unexpected[:5]}"
            f"{'…' if len(unexpected) > 5 else ''} ({len(unexpected)}). Get one from "
            f"fsad.weights.load_backbone_weights({backbone!r}) or torchvision.models.{backbone}().state_dict()"
        )


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
        backbone: a name in :data:`BACKBONE_TABLE` (``"resnet18"``, ``"mobilenet_v2"``, or a registered one).
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
        spec = backbone_spec(backbone)
        self.backbone = backbone
        self.channels: tuple[int, int, int] = tuple(spec.channels)
        self.strides: tuple[int, int, int] = tuple(spec.strides)
        model = spec.build()
        if state_dict is not None:
            _load_strict(model, state_dict, backbone)
        self.stages = nn.ModuleList(spec.split(model))

    def forward(self, x: Tensor) -> list[Tensor]:
        """Returns the three stage feature maps ``[N, C_i, H/s_i, W/s_i]`` for ``s = (4, 8, 16)``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features

    def extra_repr(self) -> str:
        return f"backbone={self.backbone!r}, channels={self.channels}"
