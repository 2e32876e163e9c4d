"""Tests for fsad.models.deform.ModulatedDeformConv2d (DCNv2 via torchvision.ops.deform_conv2d)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fsad.models.deform import ModulatedDeformConv2d


def _pair_with_conv(k: int, stride: int, padding: int, dilation: int = 1, seed: int = 0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(4, 5, k, stride=stride, padding=padding, dilation=dilation)
    return conv, ModulatedDeformConv2d.from_conv(conv)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
def test_equals_conv2d_at_init(k, stride, padding):
    conv, dcn = _pair_with_conv(k, stride, padding)
    x = torch.randn(2, 4, 9, 10)
    out = dcn(x)
    ref = conv(x)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    offset, mask = dcn.offsets_and_mask(x)
    assert offset.shape == (2, 2 * k * k, *ref.shape[-2:]) and mask.shape == (2, k * k, *ref.shape[-2:])
    assert (offset == 0).all() and (mask == 1).all()


@pytest.mark.parametrize("k,padding,dilation", [(2, 0, 1), (3, 0, 2), (5, 0, 1)])
def test_predictor_geometry_fallback_still_matches(k, padding, dilation):
    # even kernel / negative predictor padding -> predictor uses the main conv's geometry
    conv, dcn = _pair_with_conv(k, 1, padding, dilation)
    x = torch.randn(1, 4, 11, 11)
    torch.testing.assert_close(dcn(x), conv(x), atol=1e-5, rtol=1e-5)


def test_own_init_matches_conv_init_statistics_and_no_bias():
    dcn = ModulatedDeformConv2d(8, 6, 3, padding=1, bias=False)
    assert dcn.bias is None
    bound = 1 / math.sqrt(8 * 9)  # kaiming_uniform(a=sqrt 5) bound, as nn.Conv2d
    assert dcn.weight.abs().max() <= bound + 1e-7
    conv = nn.Conv2d(8, 6, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(dcn.weight)
    x = torch.randn(1, 8, 7, 7)
    torch.testing.assert_close(dcn(x), conv(x), atol=1e-5, rtol=1e-5)


def test_gradients_reach_offset_and_mask_predictor():
    torch.manual_seed(1)
    dcn = ModulatedDeformConv2d(4, 6, 3, padding=1)
    x = torch.randn(2, 4, 8, 8)
    target = torch.randn(2, 6, 8, 8)
    nn.functional.mse_loss(dcn(x), target).backward()
    grad = dcn.offset_mask.weight.grad
    assert grad is not None
    n_taps = 9
    assert grad[: 2 * n_taps].abs().sum() > 0, "no gradient reaches the offset channels"
    assert grad[2 * n_taps :].abs().sum() > 0, "no gradient reaches the mask channels"
    assert dcn.offset_mask.bias.grad.abs().sum() > 0
    assert dcn.weight.grad.abs().sum() > 0


def _set_offset_bias(dcn: ModulatedDeformConv2d, dy: float, dx: float) -> None:
    n_taps = dcn.kernel_size[0] * dcn.kernel_size[1]
    with torch.no_grad():
        dcn.offset_mask.bias[0 : 2 * n_taps : 2] = dy
        dcn.offset_mask.bias[1 : 2 * n_taps : 2] = dx


def test_offset_shifts_sampling():
    conv, dcn = _pair_with_conv(3, 1, 1, seed=2)
    x = torch.randn(1, 4, 8, 9)
    ref = conv(x)
    _set_offset_bias(dcn, dy=0.0, dx=1.0)  # every tap samples one pixel to the right
    out = dcn(x)
    torch.testing.assert_close(out[..., :-1], ref[..., 1:], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, ref, atol=1e-3)
    _set_offset_bias(dcn, dy=1.0, dx=0.0)  # one pixel down: pins torchvision's (dy, dx) layout
    torch.testing.assert_close(dcn(x)[..., :-1, :], ref[..., 1:, :], atol=1e-5, rtol=1e-5)
    _set_offset_bias(dcn, dy=0.5, dx=0.0)  # half a pixel: bilinear average of the two neighbours' convs
    torch.testing.assert_close(dcn(x)[..., :-1, :], 0.5 * (ref[..., :-1, :] + ref[..., 1:, :]), atol=1e-5, rtol=1e-5)


def test_mask_modulates_taps():
    conv, dcn = _pair_with_conv(3, 1, 1, seed=3)
    x = torch.randn(1, 4, 6, 6)
    with torch.no_grad():
        dcn.offset_mask.bias[18:] = math.log(1 / 3)  # logit with 2*sigmoid = 0.5
    offset, mask = dcn.offsets_and_mask(x)
    torch.testing.assert_close(mask, torch.full_like(mask, 0.5))
    expected = 0.5 * (conv(x) - conv.bias[:, None, None]) + conv.bias[:, None, None]
    torch.testing.assert_close(dcn(x), expected, atol=1e-5, rtol=1e-5)


def test_errors():
    with pytest.raises(ValueError, match="stride"):
        ModulatedDeformConv2d(4, 4, 3, stride=0)
    with pytest.raises(ValueError, match="in_channels"):
        ModulatedDeformConv2d(0, 4, 3)
    with pytest.raises(ValueError, match=r"\[N,4,H,W\]"):
        ModulatedDeformConv2d(4, 4, 3)(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="groups"):
        ModulatedDeformConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))
