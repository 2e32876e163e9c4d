"""Tests for fsad.models.attention: ZPool, gates, TAM, MAM, build_attention, attention_maps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fsad.models.attention import (
    ATTENTION_KINDS,
    AttentionGate,
    ChannelGate,
    MultidimensionalAttention,
    TripletAttention,
    ZPool,
    attention_maps,
    build_attention,
)


def _randomise_bn(module: nn.Module, seed: int) -> None:
    """Give every BN non-trivial running stats and affine params so references must use them."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(1, generator=g))
            m.running_var.copy_(torch.rand(1, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(1, generator=g))
                m.bias.copy_(torch.randn(1, generator=g))


def _bn_eval(z: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    return (z - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


def _conv2d_ref(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """'same' 2-D cross-correlation via unfold + einsum (independent of F.conv2d)."""
    k = w.shape[-1]
    zp = torch.nn.functional.pad(z, (k // 2,) * 4)
    patches = zp.unfold(2, k, 1).unfold(3, k, 1)  # [N,2,A,B,k,k]
    return torch.einsum("ncabij,ocij->noab", patches, w)


def _zpool_ref(x: torch.Tensor, dim: int) -> torch.Tensor:
    return torch.stack([x.max(dim=dim).values, x.mean(dim=dim)], dim=1)


def _gate_ref(z2: torch.Tensor, gate: AttentionGate) -> torch.Tensor:
    return torch.sigmoid(_bn_eval(_conv2d_ref(z2, gate.conv.weight), gate.bn))


def test_zpool_values():
    x = torch.tensor([[[[1.0, -2.0]], [[3.0, 0.0]], [[-1.0, 5.0]]]])  # [1,3,1,2]
    out = ZPool()(x)
    assert out.shape == (1, 2, 1, 2)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([[3.0, 5.0], [1.0, 1.0]]))


@pytest.mark.parametrize("kind", ["tam", "mam"])
def test_shape_preserved(kind):
    x = torch.randn(2, 3, 17, 23)
    assert build_attention(kind, 3)(x).shape == x.shape


@pytest.mark.parametrize("cls", [TripletAttention, MultidimensionalAttention])
def test_zero_conv_gives_half_in_eval(cls):
    torch.manual_seed(0)
    m = cls(3).eval()
    for mod in m.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d)):
            nn.init.zeros_(mod.weight)
    x = torch.randn(2, 3, 9, 11)
    # default BN: running mean 0, var 1, weight 1, bias 0 -> gate sigmoid(0 / sqrt(1+eps)) = 0.5
    torch.testing.assert_close(m(x), 0.5 * x)
    for g in attention_maps(m, x).values():
        torch.testing.assert_close(g, torch.full_like(g, 0.5))


def test_branches_match_permute_reference():
    torch.manual_seed(1)
    m = TripletAttention(3)
    _randomise_bn(m, seed=1)
    m.eval()
    n, c, h, w = 2, 3, 5, 6
    x = torch.randn(n, c, h, w)
    gates = m.gates(x)
    # cw: pool over H -> [N,2,C,W]; hc: pool over W -> [N,2,H,C]; hw: pool over C -> [N,2,H,W]
    ref_cw = _gate_ref(_zpool_ref(x, dim=2), m.cw)  # [N,1,C,W]
    ref_hc = _gate_ref(_zpool_ref(x, dim=3).transpose(2, 3), m.hc)  # [N,1,H,C]
    ref_hw = _gate_ref(_zpool_ref(x, dim=1), m.hw)  # [N,1,H,W]
    torch.testing.assert_close(gates["cw"], ref_cw[:, 0, :, None, :])
    torch.testing.assert_close(gates["hc"], ref_hc[:, 0].transpose(1, 2)[:, :, :, None])
    torch.testing.assert_close(gates["hw"], ref_hw)
    expected = (x * ref_cw[:, 0, :, None, :] + x * ref_hc[:, 0].transpose(1, 2)[:, :, :, None] + x * ref_hw) / 3
    torch.testing.assert_close(m(x), expected)


def test_channel_branch_matches_reference():
    torch.manual_seed(2)
    gate = ChannelGate()
    _randomise_bn(gate, seed=2)
    gate.eval()
    x = torch.randn(2, 5, 4, 3)
    z = torch.stack([x.amax(dim=(2, 3)), x.mean(dim=(2, 3))], dim=1)  # [N,2,C]
    w = gate.conv.weight  # [1,2,7]
    zp = torch.nn.functional.pad(z, (3, 3))
    conv = torch.einsum("ncli,oci->nol", zp.unfold(2, 7, 1), w)  # [N,1,C]
    ref = torch.sigmoid(_bn_eval(conv, gate.bn))[:, 0, :, None, None]
    torch.testing.assert_close(gate.gate(x), ref)
    torch.testing.assert_close(gate(x), x * ref)
    # cross-channel interaction: channel 0's gate depends on channel 1's content
    x2 = x.clone()
    x2[:, 1] += 3.0
    assert not torch.allclose(gate.gate(x2)[:, 0], gate.gate(x)[:, 0])


def test_mam_is_tam_plus_channel_branch():
    torch.manual_seed(3)
    mam = MultidimensionalAttention(3)
    _randomise_bn(mam, seed=3)
    tam = TripletAttention(3)
    tam.load_state_dict({k: v for k, v in mam.state_dict().items() if not k.startswith("c.")})
    mam.eval()
    tam.eval()
    x = torch.randn(2, 3, 8, 7)
    # Force the channel gate to 1: zero conv, BN output 0 -> sigmoid 0 = 0.5; bias so BN output is large.
    nn.init.zeros_(mam.c.conv.weight)
    with torch.no_grad():
        mam.c.bn.bias.fill_(50.0)  # sigmoid(50) == 1 in float32
    torch.testing.assert_close(mam(x), 0.75 * tam(x) + 0.25 * x)
    # and in general: MAM = 3/4 TAM + 1/4 x * channel gate
    _randomise_bn(mam.c, seed=4)
    nn.init.normal_(mam.c.conv.weight)
    g_c = mam.c.gate(x)
    assert g_c.shape == (2, 3, 1, 1)
    torch.testing.assert_close(mam(x), 0.75 * tam(x) + 0.25 * x * g_c)


@pytest.mark.parametrize("kind", ["tam", "mam"])
def test_gradient_reaches_all_convs(kind):
    torch.manual_seed(5)
    m = build_attention(kind, 3).train()
    x = torch.randn(2, 3, 12, 12, requires_grad=True)
    (m(x) * torch.randn(2, 3, 12, 12)).sum().backward()
    convs = [mod for mod in m.modules() if isinstance(mod, (nn.Conv1d, nn.Conv2d))]
    assert len(convs) == (4 if kind == "mam" else 3)
    for conv in convs:
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0
    assert x.grad.abs().sum() > 0


def test_forward_is_pure():
    m = MultidimensionalAttention(3).eval()
    x = torch.randn(1, 3, 8, 8)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    a = m(x)
    b = m(x)
    torch.testing.assert_close(a, b)
    assert list(m.state_dict()) == list(state)  # no stored gates, nothing new persisted
    assert not any(isinstance(v, torch.Tensor) and v.shape[-2:] == (8, 8) for v in vars(m).values())


def test_attention_maps_shapes_and_range():
    x = torch.randn(2, 3, 10, 12)
    maps = attention_maps(build_attention("mam", 3).eval(), x)
    assert {k: tuple(v.shape) for k, v in maps.items()} == {
        "c": (2, 3, 1, 1),
        "cw": (2, 3, 1, 12),
        "hc": (2, 3, 10, 1),
        "hw": (2, 1, 10, 12),
    }
    for v in maps.values():
        assert not v.requires_grad and (v > 0).all() and (v < 1).all()
    assert attention_maps(build_attention("none", 3), x) == {}
    with pytest.raises(TypeError, match="build_attention"):
        attention_maps(nn.Conv2d(3, 3, 1), x)


def test_build_attention_kinds_and_errors():
    assert isinstance(build_attention("none", 3), nn.Identity)
    assert type(build_attention("tam", 3)) is TripletAttention
    assert isinstance(build_attention("mam", 3), MultidimensionalAttention)
    assert ATTENTION_KINDS == ("none", "tam", "mam")
    with pytest.raises(ValueError, match="none, tam, mam"):
        build_attention("cbam", 3)
    with pytest.raises(ValueError, match="channels"):
        build_attention("tam", 0)
    with pytest.raises(ValueError, match="built for 3 channels but got 4"):
        build_attention("mam", 3)(torch.randn(1, 4, 8, 8))
    with pytest.raises(ValueError, match="4-D"):
        build_attention("tam", 3)(torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="odd"):
        AttentionGate(kernel_size=4)
