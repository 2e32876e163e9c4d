"""Tests for fsad.models.stn: parameterisations, exact inverses, warping convention, identity init, gradients."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fsad.models.stn import (
    IDENTITY_PARAMS,
    MODE_PARAMS,
    STN_MODES,
    SpatialTransformer,
    compose_theta,
    invert_theta,
    params_to_theta,
    theta_to_params,
    warp,
)

IDENTITY = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])


def random_params(mode: str, n: int, seed: int, strength: float = 1.0) -> torch.Tensor:
    """Random but well-conditioned parameters: angles/translations/shears around 0, scales around 1."""
    g = torch.Generator().manual_seed(seed)
    spread = {
        "angle": 0.6,
        "tx": 0.2,
        "ty": 0.2,
        "sx": 0.3,
        "sy": 0.3,
        "shx": 0.3,
        "shy": 0.3,
        "a11": 0.2,
        "a12": 0.2,
        "a21": 0.2,
        "a22": 0.2,
    }
    cols = []
    for name, neutral in zip(MODE_PARAMS[mode], IDENTITY_PARAMS[mode]):
        cols.append(neutral + strength * spread[name] * (2 * torch.rand(n, generator=g) - 1))
    return torch.stack(cols, dim=1)


def smooth_field(n: int, c: int, size: int, seed: int) -> torch.Tensor:
    """Low-frequency random field (sum of a few sinusoids) so bilinear resampling errors stay small."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    out = torch.zeros(n, c, size, size)
    for _ in range(4):
        freq = 1.5 * torch.rand(n, c, 2, generator=g) + 0.5
        phase = 2 * math.pi * torch.rand(n, c, 1, 1, generator=g)
        out += torch.sin(math.pi * (freq[..., 0, None, None] * xs + freq[..., 1, None, None] * ys) + phase)
    return out / 4


def homogeneous(theta: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=theta.dtype).expand(theta.shape[0], 1, 3)
    return torch.cat([theta, bottom], dim=1)


# ---------------------------------------------------------------- parameterisations
def test_mode_table_is_consistent() -> None:
    assert set(STN_MODES) == set(MODE_PARAMS) == set(IDENTITY_PARAMS)
    assert len(STN_MODES) == 9
    for mode, n in STN_MODES.items():
        assert len(MODE_PARAMS[mode]) == n == len(IDENTITY_PARAMS[mode])
        theta = params_to_theta(torch.tensor([IDENTITY_PARAMS[mode]]), mode)
        torch.testing.assert_close(theta[0], IDENTITY, atol=0, rtol=0)


def test_params_to_theta_hand_computed_values() -> None:
    half_pi = math.pi / 2
    cases = {
        "translation": ([0.1, -0.2], [[1, 0, 0.1], [0, 1, -0.2]]),
        "rotation": ([half_pi], [[0, -1, 0], [1, 0, 0]]),
        "scale": ([2.0, 3.0], [[2, 0, 0], [0, 3, 0]]),
        "shear": ([0.5, -0.25], [[1, 0.5, 0], [-0.25, 1, 0]]),
        # R(pi/2) @ diag(2, 3) = [[0, -3], [2, 0]]
        "rotation_scale": ([half_pi, 2.0, 3.0], [[0, -3, 0], [2, 0, 0]]),
        "translation_scale": ([0.1, 0.2, 2.0, 3.0], [[2, 0, 0.1], [0, 3, 0.2]]),
        "rotation_translation": ([half_pi, 0.1, 0.2], [[0, -1, 0.1], [1, 0, 0.2]]),
        "rotation_translation_scale": ([half_pi, 0.1, 0.2, 2.0, 3.0], [[0, -3, 0.1], [2, 0, 0.2]]),
        "affine": ([1, 2, 3, 4, 5, 6], [[1, 2, 3], [4, 5, 6]]),
    }
    for mode, (params, expected) in cases.items():
        theta = params_to_theta(torch.tensor([params], dtype=torch.float64), mode)
        torch.testing.assert_close(theta[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0, msg=mode)


@pytest.mark.parametrize("mode", list(STN_MODES))
def test_params_theta_round_trip(mode: str) -> None:
    params = random_params(mode, 16, seed=1).double()
    back = theta_to_params(params_to_theta(params, mode), mode)
    torch.testing.assert_close(back, params, atol=1e-12, rtol=0)


@pytest.mark.parametrize("mode", list(STN_MODES))
def test_each_mode_has_exactly_its_degrees_of_freedom(mode: str) -> None:
    params = random_params(mode, 8, seed=2).double()
    theta = params_to_theta(params, mode)
    lin, trans = theta[:, :, :2], theta[:, :, 2]
    names = set(MODE_PARAMS[mode])
    if mode != "affine":
        if not names & {"tx", "ty"}:
            assert torch.count_nonzero(trans) == 0, "mode without translation must not translate"
        else:
            assert torch.count_nonzero(trans) > 0
        if "angle" in names and not names & {"sx", "sy"}:  # pure rotation: orthonormal, det +1
            torch.testing.assert_close(lin @ lin.transpose(1, 2), torch.eye(2, dtype=lin.dtype).expand(8, 2, 2))
            torch.testing.assert_close(torch.linalg.det(lin), torch.ones(8, dtype=lin.dtype))
        if "angle" in names and names & {"sx", "sy"}:  # rotation·scale: orthogonal columns, det sx·sy
            col_dot = (lin[:, :, 0] * lin[:, :, 1]).sum(dim=1)
            torch.testing.assert_close(col_dot, torch.zeros(8, dtype=lin.dtype), atol=1e-12, rtol=0)
        if not names & {"angle", "sx", "sy", "shx", "shy"}:
            torch.testing.assert_close(lin, torch.eye(2, dtype=lin.dtype).expand(8, 2, 2), atol=0, rtol=0)
        if mode in {"scale", "translation_scale"}:
            assert torch.count_nonzero(lin[:, 0, 1]) == 0 and torch.count_nonzero(lin[:, 1, 0]) == 0
        if mode == "shear":
            assert torch.all(lin[:, 0, 0] == 1) and torch.all(lin[:, 1, 1] == 1)
    # The map params -> theta has full rank n_params: every parameter is a distinct degree of freedom.
    jac = torch.autograd.functional.jacobian(lambda p: params_to_theta(p[None], mode)[0].flatten(), params[0])
    assert torch.linalg.matrix_rank(jac).item() == STN_MODES[mode]


def test_params_to_theta_is_vectorised_and_differentiable() -> None:
    params = random_params("rotation_translation_scale", 5, seed=3).requires_grad_(True)
    theta = params_to_theta(params, "rotation_translation_scale")
    assert theta.shape == (5, 2, 3)
    theta.sum().backward()
    assert params.grad is not None and torch.isfinite(params.grad).all()


def test_invalid_mode_and_shapes_give_clear_errors() -> None:
    with pytest.raises(ValueError, match="valid modes: translation, rotation"):
        params_to_theta(torch.zeros(1, 2), "perspective")
    with pytest.raises(ValueError, match=r"\[N, 3\]"):
        params_to_theta(torch.zeros(1, 2), "rotation_scale")
    with pytest.raises(ValueError, match="valid modes"):
        SpatialTransformer(8, 16, mode="rotate")
    with pytest.raises(ValueError, match=r"\[N, 2, 3\]"):
        invert_theta(torch.zeros(2, 3, 3))


# ---------------------------------------------------------------- inverse
@pytest.mark.parametrize("mode", list(STN_MODES))
def test_invert_theta_composes_to_identity(mode: str) -> None:
    theta = params_to_theta(random_params(mode, 16, seed=4, strength=2.0).double(), mode)
    inv = invert_theta(theta)
    eye = IDENTITY.double().expand(16, 2, 3)
    torch.testing.assert_close(compose_theta(theta, inv), eye, atol=1e-12, rtol=0)
    torch.testing.assert_close(compose_theta(inv, theta), eye, atol=1e-12, rtol=0)
    # Same as the 3×3 homogeneous inverse (what the authors compute with np.linalg.inv).
    torch.testing.assert_close(inv, torch.linalg.inv(homogeneous(theta))[:, :2], atol=1e-12, rtol=0)


def test_invert_theta_rejects_singular_theta() -> None:
    theta = params_to_theta(torch.tensor([[1.0, 1.0], [0.0, 1.0]]), "scale")  # second item: sx = 0
    with pytest.raises(ValueError, match=r"singular.*\[1\]"):
        invert_theta(theta)


def test_compose_theta_matches_two_warps() -> None:
    x = smooth_field(2, 3, 64, seed=5)
    a = params_to_theta(random_params("affine", 2, seed=6), "affine")
    b = params_to_theta(random_params("rotation_translation_scale", 2, seed=7), "rotation_translation_scale")
    two = warp(warp(x, a), b)
    crop = slice(16, 48)
    error = (two - warp(x, compose_theta(a, b)))[..., crop, crop].abs().max()
    wrong_order = (two - warp(x, compose_theta(b, a)))[..., crop, crop].abs().max()
    assert error < 0.01
    assert wrong_order > 10 * error


# ---------------------------------------------------------------- warping
def test_warp_convention_translation_by_one_pixel() -> None:
    # out(p) = x(θ p): tx = +2/W (one pixel in normalised coords) samples the right neighbour.
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    theta = params_to_theta(torch.tensor([[2 / 8, 0.0]]), "translation")
    out = warp(x, theta)
    torch.testing.assert_close(out[..., :, :-1], x[..., :, 1:], atol=1e-4, rtol=0)
    # Reflection padding (the authors' choice) at the right border, zeros when asked.
    torch.testing.assert_close(out[..., :, -1], x[..., :, -1], atol=1e-4, rtol=0)
    assert warp(x, theta, padding_mode="zeros")[..., :, -1].abs().max() < 1e-4


def test_warp_identity_is_exact() -> None:
    x = torch.randn(3, 4, 14, 14)
    torch.testing.assert_close(warp(x, IDENTITY.expand(3, 2, 3)), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("mode", list(STN_MODES))
def test_inverse_warp_recovers_features_away_from_borders(mode: str) -> None:
    size = 48
    x = smooth_field(4, 3, size, seed=8)
    theta = params_to_theta(random_params(mode, 4, seed=9), mode)
    warped = warp(x, theta)
    restored = warp(warped, invert_theta(theta))
    crop = slice(size // 4, size - size // 4)  # 25 % border
    error = (restored - x)[..., crop, crop].abs().max().item()
    assert error < 0.03, f"{mode}: inverse warp error {error}"
    # Control: the forward warp really moved things (so the check above can fail).
    moved = (warped - x)[..., crop, crop].abs().max().item()
    assert moved > 10 * error, f"{mode}: θ too close to identity for a meaningful test"


# ---------------------------------------------------------------- module
@pytest.mark.parametrize("mode", list(STN_MODES))
def test_spatial_transformer_is_identity_at_init(mode: str) -> None:
    torch.manual_seed(0)
    stn = SpatialTransformer(in_channels=8, in_size=14, mode=mode)
    x = torch.randn(3, 8, 14, 14)
    for train in (True, False):
        stn.train(train)
        warped, theta = stn(x)
        torch.testing.assert_close(warped, x, atol=1e-5, rtol=0)
        torch.testing.assert_close(theta, IDENTITY.expand(3, 2, 3), atol=0, rtol=0)
    assert stn.fc[-1].out_features == STN_MODES[mode]


@pytest.mark.parametrize(("in_size", "pooled"), [(56, 14), (28, 7), (14, 4), (2, 1)])
def test_localisation_fc_size_matches_authors(in_size: int, pooled: int) -> None:
    # Authors' FC input at 224 px: 16·14², 16·7², 16·4² (two MaxPool(3, 2, 1)); 2×2 maps (32 px input) still work.
    stn = SpatialTransformer(4, in_size, "rotation")
    assert stn.fc[0].in_features == 16 * pooled**2
    assert stn(torch.randn(2, 4, in_size, in_size))[0].shape == (2, 4, in_size, in_size)


def test_spatial_transformer_rejects_wrong_input_size() -> None:
    stn = SpatialTransformer(8, 14)
    with pytest.raises(ValueError, match="built for 14×14.*image_size"):
        stn(torch.randn(1, 8, 28, 28))


def test_gradient_reaches_localisation_net() -> None:
    torch.manual_seed(0)
    stn = SpatialTransformer(4, 16, "rotation_scale")
    x = torch.randn(2, 4, 16, 16)
    target = torch.randn(2, 4, 16, 16)
    F.mse_loss(stn(x)[0], target).backward()
    # At init only the zero-initialised last layer can receive gradient (upstream is multiplied by W = 0).
    assert stn.fc[-1].weight.grad.abs().sum() > 0
    assert stn.fc[-1].bias.grad.abs().sum() > 0
    stn.zero_grad()
    with torch.no_grad():
        stn.fc[-1].weight.normal_(0, 1e-3)
    F.mse_loss(stn(x)[0], target).backward()
    for name, param in stn.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
