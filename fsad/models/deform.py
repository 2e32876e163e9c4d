"""Modulated deformable convolution (DCNv2, Zhu et al., CVPR 2019) for the RCM-FSAD Siamese encoder."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d

# Kernel of the offset/mask predictor (the DCNv2 paper predicts offsets with a conv over the
# same input; a 3x3 window gives even a 1x1 deformable conv some context to decide where to look).
PREDICTOR_KERNEL_SIZE = 3
# mask = MASK_SCALE * sigmoid(logit): with zero-initialised logits the mask is exactly 1 (see class docstring).
MASK_SCALE = 2.0


class ModulatedDeformConv2d(nn.Module):
    """DCNv2: convolution with learned per-tap offsets and modulation mask.

    ``y(p) = sum_k w_k · m_k(p) · x(p + p_k + Δp_k(p)) + b`` computed by
    ``torchvision.ops.deform_conv2d(..., mask=...)`` (no hand-rolled sampling).

    Offsets and mask come from a predictor conv over the same input with
    ``3·k·k`` output channels: the first ``2·k·k`` are the offsets in torchvision's layout
    (for tap ``t``: channel ``2t`` = Δy, ``2t+1`` = Δx, in input pixels), the last ``k·k`` are
    mask logits.

    Choices (documented because they depart from mmcv's ``ModulatedDeformConv2dPack``):

    * *Mask = 2·sigmoid(logit)*, range (0, 2). The DCNv2 paper and mmcv use sigmoid (range
      [0, 1], 0.5 at a zero init). We want the module to equal ``nn.Conv2d`` with the same
      weights at initialisation (so adding DCN to RegAD starts from the plain model, and a
      pretrained conv's weights can be reused via :meth:`from_conv`), hence the factor 2.
    * *Zero-initialised predictor* (weights and bias): offsets 0 and mask 1 at init, so the
      output equals the ordinary convolution. Gradients still reach the predictor: the
      gradient w.r.t. its weights is (input patch) × (dL/d offset or mask), which is
      non-zero in general (tested).
    * *Predictor geometry*: 3×3 kernel, the main conv's stride, dilation 1, and padding
      ``padding - dilation·(k-1)/2 + 1`` so its window is centred on the main conv's window
      and its output grid matches. When that is impossible (even kernel or negative
      padding) the predictor falls back to the main conv's own kernel/stride/padding/
      dilation (mmcv's convention), which always matches.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: main kernel size (int or pair).
        stride, padding, dilation: as in ``nn.Conv2d`` (int or pair).
        bias: add a learnable bias.

    Example:
        >>> dcn = ModulatedDeformConv2d(256, 128, 1)
        >>> dcn(torch.randn(2, 256, 14, 14)).shape
        torch.Size([2, 128, 14, 14])
        >>> dcn.offsets_and_mask(torch.randn(2, 256, 14, 14))[0].shape  # 2*k*k offset channels
        torch.Size([2, 2, 14, 14])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1; got {in_channels}, {out_channels}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = _pair(kernel_size)
        self.stride = _pair(stride)
        self.padding = _pair(padding)
        self.dilation = _pair(dilation)
        for name, value, low in (
            ("kernel_size", self.kernel_size, 1),
            ("stride", self.stride, 1),
            ("padding", self.padding, 0),
            ("dilation", self.dilation, 1),
        ):
            if min(value) < low:
                raise ValueError(f"{name} must be >= {low}; got {value}")
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.offset_mask = nn.Conv2d(in_channels, 3 * kh * kw, **self._predictor_geometry())
        self.reset_parameters()

    def _predictor_geometry(self) -> dict:
        pads = []
        for k, p, d in zip(self.kernel_size, self.padding, self.dilation):
            span = d * (k - 1)
            pads.append(p - span // 2 + PREDICTOR_KERNEL_SIZE // 2 if span % 2 == 0 else -1)
        if min(pads) >= 0:
            return {"kernel_size": PREDICTOR_KERNEL_SIZE, "stride": self.stride, "padding": tuple(pads)}
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
        }

    def reset_parameters(self) -> None:
        """Main weights as ``nn.Conv2d`` initialises them; predictor zeroed (offset 0, mask 1)."""
        # Same init as nn.Conv2d.reset_parameters, so swapping a Conv2d for this module changes nothing.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> ModulatedDeformConv2d:
        """DCNv2 with a copy of ``conv``'s weight/bias; equal to ``conv`` until trained.

        Raises:
            ValueError: grouped convs or non-zero padding modes (not supported here).
        """
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(
                "from_conv supports groups=1, padding_mode='zeros' and integer padding; got "
                f"groups={conv.groups}, padding_mode={conv.padding_mode!r}, padding={conv.padding!r}"
            )
        dcn = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            dcn.weight.copy_(conv.weight)
            if conv.bias is not None:
                dcn.bias.copy_(conv.bias)
        return dcn.to(conv.weight.device, conv.weight.dtype)

    def offsets_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Predicted offsets ``[N,2kk,Ho,Wo]`` (Δy, Δx per tap, pixels) and mask ``[N,kk,Ho,Wo]`` in (0, 2)."""
        out = self.offset_mask(x)
        n_taps = self.kernel_size[0] * self.kernel_size[1]
        offset, logits = out.split([2 * n_taps, n_taps], dim=1)
        return offset, MASK_SCALE * torch.sigmoid(logits)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{type(self).__name__} expects [N,{self.in_channels},H,W]; got {tuple(x.shape)}")
        offset, mask = self.offsets_and_mask(x)
        return deform_conv2d(
            x,
            offset,
            self.weight,
            self.bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            mask=mask,
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, bias={self.bias is not None}"
        )
