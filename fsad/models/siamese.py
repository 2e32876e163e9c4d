"""SimSiam-style encoder/predictor heads on the last stage, and the symmetric registration loss.

Architecture follows the authors' public code (MediaBrain-SJTU/RegAD, models/siamese.py), which the paper only
summarises as "three 1×1 convolutional layers" / "two 1×1 convolutional layers":

* encoder: conv1×1(C→C)–BN–ReLU–conv1×1(C→C)–BN–ReLU–conv1×1(C→C); the authors define a third BN but do not
  use it (``out_bn=True`` adds it, as in SimSiam's projector);
* predictor: conv1×1(C→C)–BN–ReLU–conv1×1(C→C); the authors keep the full width (``hidden=C``), SimSiam uses a
  4× bottleneck (``hidden=C // 4``).

All convolutions are bias-free as in the authors' code. No pooling anywhere: the loss is per spatial position.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SiameseEncoder", "SiamesePredictor", "negative_cosine", "registration_loss"]


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)


class SiameseEncoder(nn.Module):
    """Projection head ``z = encoder(f3)`` (three convolutions, spatial size preserved).

    Args:
        in_channels: channels C of the last stage (256 for ResNet-18, 96 for MobileNetV2); output has C too.
        out_bn: add BN after the last conv (SimSiam projector); the authors' code has none.
        dcn: make the first conv a 3×3 modulated deformable conv (RCM-FSAD's DCNv2 in the Siamese encoder,
            ``fsad.models.deform.ModulatedDeformConv2d`` with padding 1, bias-free like the conv it replaces).

    Example:
        >>> import torch
        >>> SiameseEncoder(256)(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 256, 14, 14])
    """

    def __init__(self, in_channels: int, out_bn: bool = False, dcn: bool = False) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        c = in_channels
        if dcn:
            from fsad.models.deform import ModulatedDeformConv2d  # lazy: only the RCM-FSAD ablation needs it

            conv1: nn.Module = ModulatedDeformConv2d(c, c, kernel_size=3, padding=1, bias=False)
        else:
            conv1 = _conv1x1(c, c)
        layers: list[tuple[str, nn.Module]] = [
            ("conv1", conv1),
            ("bn1", nn.BatchNorm2d(c)),
            ("relu1", nn.ReLU(inplace=True)),
            ("conv2", _conv1x1(c, c)),
            ("bn2", nn.BatchNorm2d(c)),
            ("relu2", nn.ReLU(inplace=True)),
            ("conv3", _conv1x1(c, c)),
        ]
        if out_bn:
            layers.append(("bn3", nn.BatchNorm2d(c)))
        self.net = nn.Sequential(OrderedDict(layers))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class SiamesePredictor(nn.Module):
    """Prediction head ``p = predictor(z)``: conv1×1(C→hidden)–BN–ReLU–conv1×1(hidden→C).

    Args:
        in_channels: C.
        hidden: hidden width; ``None`` = C as in the authors' code (SimSiam's bottleneck would be ``C // 4``).

    Example:
        >>> import torch
        >>> SiamesePredictor(256)(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 256, 14, 14])
    """

    def __init__(self, in_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = in_channels if hidden is None else hidden
        if in_channels < 1 or hidden < 1:
            raise ValueError(f"in_channels and hidden must be >= 1, got {in_channels}, {hidden}")
        self.net = nn.Sequential(
            OrderedDict(
                [
                    ("conv1", _conv1x1(in_channels, hidden)),
                    ("bn1", nn.BatchNorm2d(hidden)),
                    ("relu1", nn.ReLU(inplace=True)),
                    ("conv2", _conv1x1(hidden, in_channels)),
                ]
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def negative_cosine(p: Tensor, z: Tensor, reduction: str = "mean") -> Tensor:
    """SimSiam's D(p, z): minus the cosine similarity along channels, with a stop-gradient on ``z``.

    RegAD computes it at every spatial position and averages (paper Eq. 3 and its discussion; authors'
    ``CosLoss``, which uses ``nn.CosineSimilarity(dim=1)`` with its eps = 1e-8 norm clamp).

    Args:
        p: predictor output ``[N, C, H, W]`` (or ``[N, C]``).
        z: encoder output of the other branch, same shape; detached inside (no gradient reaches it).
        reduction: ``"mean"`` → scalar; ``"none"`` → ``[N, H, W]`` map (the authors' test-time loss map).

    Returns:
        scalar in [-1, 1] (or the per-position map).

    Example:
        >>> import torch
        >>> p = torch.randn(2, 256, 14, 14)
        >>> round(negative_cosine(p, p).item(), 4)  # identical features -> -1
        -1.0
    """
    if p.shape != z.shape:
        raise ValueError(f"p and z must have the same shape, got {tuple(p.shape)} and {tuple(z.shape)}")
    if p.ndim < 2:
        raise ValueError(f"p and z need a channel dimension (dim 1), got shape {tuple(p.shape)}")
    neg = -F.cosine_similarity(p, z.detach(), dim=1)
    if reduction == "mean":
        return neg.mean()
    if reduction == "none":
        return neg
    raise ValueError(f"unknown reduction {reduction!r}; valid: 'mean', 'none'")


def registration_loss(p_a: Tensor, p_b: Tensor, z_a: Tensor, z_b: Tensor) -> Tensor:
    """Symmetric feature-registration loss ``½ D(p_a, z_b) + ½ D(p_b, z_a)`` (RegAD Eq. 4, SimSiam).

    Args:
        p_a, p_b: predictor outputs of the two images, ``[N, C, H, W]``.
        z_a, z_b: encoder outputs of the two images (stop-gradient applied inside).

    Returns:
        scalar in [-1, 1]; -1 means perfectly registered features.
    """
    return 0.5 * negative_cosine(p_a, z_b) + 0.5 * negative_cosine(p_b, z_a)
