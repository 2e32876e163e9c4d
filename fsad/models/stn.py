"""Spatial transformer (STN) for feature maps: 9 transformation modes, their exact inverse, and warping.

Conventions (used everywhere in the kit):

* θ is a batch of 2×3 affine matrices in the *normalised* coordinates of ``F.affine_grid`` (x, y ∈ [-1, 1],
  ``align_corners=False``). Because the coordinates are normalised, the same θ means the same geometric
  transform at every stage resolution (56, 28, 14 px), which is what lets the model compose the θ of different
  stages.
* ``warp(x, θ)`` *samples* ``x`` at ``θ·p``: ``out(p) = x(θ·p)``. Hence ``warp(warp(x, θ), invert_theta(θ)) ≈ x``
  away from the borders.
* Reflection padding, as in the authors' code (``F.grid_sample(..., padding_mode="reflection")``).

Parameterisations (the learnt vector the localisation net outputs; identity is a constant bias):

================================  ===========================  ==========================================
mode                              parameters                   identity bias
================================  ===========================  ==========================================
translation                       tx, ty                       0, 0
rotation                          angle (radians)              0
scale                             sx, sy (the scales)          1, 1
shear                             shx, shy                     0, 0
rotation_scale                    angle, sx, sy                0, 1, 1
translation_scale                 tx, ty, sx, sy               0, 0, 1, 1
rotation_translation              angle, tx, ty                0, 0, 0
rotation_translation_scale        angle, tx, ty, sx, sy        0, 0, 0, 1, 1
affine                            the 6 entries of θ (rows)    1, 0, 0, 0, 1, 0
================================  ===========================  ==========================================

The linear part is ``R(angle) · [[sx, shx], [shy, sy]]`` (absent parameters take their identity value) and the
translation is ``(tx, ty)``. Scales are used directly (not log-scales) as in the authors' code, so a scale that
reaches 0 makes θ singular; :func:`invert_theta` then raises a clear error.

*Deviation from the authors' code, on purpose:* their ``rotation_scale`` / ``rotation_translation_scale`` build
``[[sx·cos, -sin], [sin, sy·cos]]`` (the scale multiplies the diagonal only), which is not a rotation composed with a
scale. The kit uses the proper composition ``R·S = [[sx·cos, -sy·sin], [sx·sin, sy·cos]]``. Both agree at the
identity and to first order around it (same bias, same initial gradient); they differ only for large angles.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "STN_MODES",
    "MODE_PARAMS",
    "IDENTITY_PARAMS",
    "DEFAULT_STN_MODE",
    "params_to_theta",
    "theta_to_params",
    "invert_theta",
    "compose_theta",
    "warp",
    "is_identity_theta",
    "SpatialTransformer",
]

# Number of learnt parameters per mode (names and counts as in the authors' code, models/stn.py N_PARAMS).
STN_MODES: dict[str, int] = {
    "translation": 2,
    "rotation": 1,
    "scale": 2,
    "shear": 2,
    "rotation_scale": 3,
    "translation_scale": 4,
    "rotation_translation": 3,
    "rotation_translation_scale": 5,
    "affine": 6,
}
# Names of the parameters, in the order the localisation net outputs them (authors' order).
MODE_PARAMS: dict[str, tuple[str, ...]] = {
    "translation": ("tx", "ty"),
    "rotation": ("angle",),
    "scale": ("sx", "sy"),
    "shear": ("shx", "shy"),
    "rotation_scale": ("angle", "sx", "sy"),
    "translation_scale": ("tx", "ty", "sx", "sy"),
    "rotation_translation": ("angle", "tx", "ty"),
    "rotation_translation_scale": ("angle", "tx", "ty", "sx", "sy"),
    "affine": ("a11", "a12", "tx", "a21", "a22", "ty"),
}
_NEUTRAL = {
    "angle": 0.0,
    "tx": 0.0,
    "ty": 0.0,
    "sx": 1.0,
    "sy": 1.0,
    "shx": 0.0,
    "shy": 0.0,
    "a11": 1.0,
    "a12": 0.0,
    "a21": 0.0,
    "a22": 1.0,
}
# Bias of the last FC layer: the parameter vector whose θ is the identity.
IDENTITY_PARAMS: dict[str, tuple[float, ...]] = {
    mode: tuple(_NEUTRAL[name] for name in names) for mode, names in MODE_PARAMS.items()
}
# RegAD paper, Table 6 / authors' train.py default: rotation+scale is best on MVTec (affine on MPDD).
DEFAULT_STN_MODE = "rotation_scale"
# Localisation net widths (authors' models/stn.py STNModule).
LOC_CONV_CHANNELS = (64, 16)
LOC_HIDDEN = 1024


def _check_mode(mode: str) -> int:
    if mode not in STN_MODES:
        raise ValueError(f"unknown STN mode {mode!r}; valid modes: {', '.join(STN_MODES)}")
    return STN_MODES[mode]


def params_to_theta(params: Tensor, mode: str) -> Tensor:
    """Turn a batch of mode parameters into 2×3 affine matrices (vectorised, differentiable).

    Args:
        params: ``[N, STN_MODES[mode]]`` parameters in the order of ``MODE_PARAMS[mode]``.
        mode: one of ``STN_MODES``.

    Returns:
        ``[N, 2, 3]`` θ for ``F.affine_grid``.

    Example:
        >>> params_to_theta(torch.tensor([[0.0, 1.0, 1.0]]), "rotation_scale")  # identity
        tensor([[[1., 0., 0.],
                 [0., 1., 0.]]])
    """
    n_params = _check_mode(mode)
    if params.ndim != 2 or params.shape[1] != n_params:
        raise ValueError(f"mode {mode!r} takes params of shape [N, {n_params}], got {tuple(params.shape)}")
    if mode == "affine":
        return params.reshape(-1, 2, 3)
    named = dict(zip(MODE_PARAMS[mode], params.unbind(dim=1)))
    first = params[:, 0]

    def get(name: str) -> Tensor:
        return named[name] if name in named else torch.full_like(first, _NEUTRAL[name])

    angle, sx, sy, shx, shy = get("angle"), get("sx"), get("sy"), get("shx"), get("shy")
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Linear part R(angle) @ [[sx, shx], [shy, sy]]; absent parameters are neutral.
    row0 = torch.stack([cos * sx - sin * shy, cos * shx - sin * sy, get("tx")], dim=1)
    row1 = torch.stack([sin * sx + cos * shy, sin * shx + cos * sy, get("ty")], dim=1)
    return torch.stack([row0, row1], dim=1)


def theta_to_params(theta: Tensor, mode: str) -> Tensor:
    """Inverse of :func:`params_to_theta` for a θ of that mode (e.g. to read the angle an STN learnt).

    Exact for θ built by ``params_to_theta(params, mode)`` with scales > 0 and angle in (-π, π]. For a θ of
    another family the result is that mode's reading of it (e.g. the angle of its first column).

    Args:
        theta: ``[N, 2, 3]``.
        mode: one of ``STN_MODES``.

    Returns:
        ``[N, STN_MODES[mode]]``.
    """
    _check_mode(mode)
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must have shape [N, 2, 3], got {tuple(theta.shape)}")
    if mode == "affine":
        return theta.reshape(-1, 6)
    m00, m01, tx = theta[:, 0].unbind(dim=1)
    m10, m11, ty = theta[:, 1].unbind(dim=1)
    # Columns of R·diag(sx, sy) are sx·(cos, sin) and sy·(-sin, cos).
    values = {
        "tx": tx,
        "ty": ty,
        "angle": torch.atan2(m10, m00),
        "sx": torch.hypot(m00, m10),
        "sy": torch.hypot(m01, m11),
        "shx": m01,
        "shy": m10,
    }
    if mode == "scale":
        values["sx"], values["sy"] = m00, m11
    return torch.stack([values[name] for name in MODE_PARAMS[mode]], dim=1)


def invert_theta(theta: Tensor) -> Tensor:
    """Exact inverse of a batch of 2×3 affine maps (closed form, vectorised, differentiable).

    For ``y = A x + t`` the inverse is ``x = A⁻¹ y − A⁻¹ t`` with the 2×2 closed-form ``A⁻¹``; this avoids a
    3×3 ``linalg.inv`` per sample (the authors round-trip through NumPy on the CPU for it).

    Args:
        theta: ``[N, 2, 3]``.

    Returns:
        ``[N, 2, 3]`` with ``warp(warp(x, θ), invert_theta(θ)) ≈ x`` away from the borders.

    Raises:
        ValueError: wrong shape, or a (numerically) singular θ — e.g. an STN scale that collapsed to 0.
    """
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        raise ValueError(f"theta must have shape [N, 2, 3], got {tuple(theta.shape)}")
    a, b, tx = theta[:, 0].unbind(dim=1)
    c, d, ty = theta[:, 1].unbind(dim=1)
    det = a * d - b * c
    if bool((det.abs() < 1e-8).any()):
        bad = torch.nonzero(det.abs() < 1e-8).flatten().tolist()
        raise ValueError(
            f"theta is singular (|det| < 1e-8) for batch items {bad}; an STN scale has probably "
            "collapsed to 0 — check the training run (learning rate) or use stn_mode without scale"
        )
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    row0 = torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=1)
    row1 = torch.stack([ic, id_, -(ic * tx + id_ * ty)], dim=1)
    return torch.stack([row0, row1], dim=1)


def compose_theta(first: Tensor, second: Tensor) -> Tensor:
    """θ of ``warp(warp(x, first), second)`` as a single warp: ``warp(x, compose_theta(first, second))``.

    Since ``warp(x, θ)(p) = x(θ p)``, two warps give ``x(first · second · p)``: the homogeneous product
    ``first @ second``. One warp interpolates once instead of twice.

    Args:
        first, second: ``[N, 2, 3]``.

    Returns:
        ``[N, 2, 3]``.
    """
    lin = first[:, :, :2] @ second[:, :, :2]
    trans = first[:, :, :2] @ second[:, :, 2:] + first[:, :, 2:]
    return torch.cat([lin, trans], dim=2)


def warp(x: Tensor, theta: Tensor, padding_mode: str = "reflection") -> Tensor:
    """Resample ``x`` at ``θ·p`` (bilinear, ``align_corners=False``): ``out(p) = x(θ p)``.

    Args:
        x: ``[N, C, H, W]``.
        theta: ``[N, 2, 3]`` (cast to ``x``'s dtype).
        padding_mode: ``"reflection"`` (authors' choice), ``"border"`` or ``"zeros"``.

    Returns:
        ``[N, C, H, W]``.

    Example:
        >>> x = torch.randn(2, 64, 56, 56)
        >>> warp(x, params_to_theta(torch.zeros(2, 2), "translation")).shape
        torch.Size([2, 64, 56, 56])
    """
    if x.ndim != 4:
        raise ValueError(f"warp expects x of shape [N, C, H, W], got {tuple(x.shape)}")
    if theta.shape != (x.shape[0], 2, 3):
        raise ValueError(f"theta must have shape [{x.shape[0]}, 2, 3] to match x, got {tuple(theta.shape)}")
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def is_identity_theta(theta: Tensor) -> bool:
    """True when every θ of the batch is *exactly* the identity ``[[1, 0, 0], [0, 1, 0]]``.

    An untrained STN (zero last-layer weights, identity bias) and the inverse of its θ are exactly the identity,
    so evaluation can skip their warps: ``warp(x, identity)`` equals ``x`` only up to float rounding of the
    sampling grid (~1e-6), while skipping returns ``x`` itself.
    """
    if theta.ndim != 3 or theta.shape[1:] != (2, 3):
        return False
    identity = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=theta.dtype, device=theta.device)
    return bool(torch.equal(theta, identity.expand_as(theta)))


def warp_if_needed(x: Tensor, theta: Tensor, padding_mode: str = "reflection") -> Tensor:
    """:func:`warp`, except that an exactly-identity θ returns ``x`` itself (no copy) when no gradient is needed.

    Used by evaluation paths (no autograd): skipping ``affine_grid`` + ``grid_sample`` there is exact. With
    autograd on, the warp always runs, since an identity θ still has a gradient (the STN is trained through it).
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or theta.requires_grad)
    if not needs_grad and is_identity_theta(theta):
        if theta.shape[0] != x.shape[0]:
            raise ValueError(f"theta must have shape [{x.shape[0]}, 2, 3] to match x, got {tuple(theta.shape)}")
        return x
    return warp(x, theta, padding_mode)


def _pooled_size(size: int) -> int:
    # MaxPool2d(kernel 3, stride 2, padding 1) gives ceil(size / 2); applied twice.
    return math.ceil(math.ceil(size / 2) / 2)


class SpatialTransformer(nn.Module):
    """STN block: a localisation net predicts θ from the feature map, which is then warped by θ.

    Localisation net (authors' models/stn.py): conv3×3(C→64, no bias)–BN–ReLU–MaxPool–conv3×3(64→16)–BN–ReLU–
    MaxPool–flatten–FC(16·s²→1024)–ReLU–FC(1024→n_params), with ``s = ceil(in_size / 4)``. The pools are the
    authors' ``MaxPool2d(kernel_size=3, stride=2, padding=1)`` (halving with ceil), which keeps s ≥ 1 even on a
    2×2 map (32 px input, stage 3) and gives the authors' FC sizes at 224 px (s = 14, 7, 4). The last FC has
    zero weights and the identity bias of ``IDENTITY_PARAMS[mode]``, so the block is the identity at
    initialisation.

    Args:
        in_channels: channels C of the feature map.
        in_size: its spatial size (square), e.g. 56 for ResNet-18 layer1 at 224 px.
        mode: one of ``STN_MODES``.

    Example:
        >>> stn = SpatialTransformer(64, 56)
        >>> warped, theta = stn(torch.randn(2, 64, 56, 56))
        >>> warped.shape, theta.shape
        (torch.Size([2, 64, 56, 56]), torch.Size([2, 2, 3]))
    """

    def __init__(self, in_channels: int, in_size: int, mode: str = DEFAULT_STN_MODE) -> None:
        super().__init__()
        n_params = _check_mode(mode)
        if in_channels < 1 or in_size < 1:
            raise ValueError(f"in_channels and in_size must be positive, got {in_channels}, {in_size}")
        self.mode = mode
        self.in_size = in_size
        c1, c2 = LOC_CONV_CHANNELS
        self.localization = nn.Sequential(
            nn.Conv2d(in_channels, c1, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(
            nn.Linear(c2 * _pooled_size(in_size) ** 2, LOC_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Linear(LOC_HIDDEN, n_params),
        )
        self.reset_identity()

    def reset_identity(self) -> None:
        """Zero the last FC's weights and set its bias to the identity parameters."""
        last = self.fc[-1]
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.copy_(torch.tensor(IDENTITY_PARAMS[self.mode]))

    def _constant_params(self) -> Tensor | None:
        """The last FC's bias if its weights are all zero (θ then does not depend on the input), else None."""
        last = self.fc[-1]
        if bool(torch.count_nonzero(last.weight) == 0):
            return last.bias
        return None

    def predict_theta(self, x: Tensor) -> Tensor:
        """θ ``[N, 2, 3]`` for a feature map ``x`` ``[N, C, in_size, in_size]``.

        In eval mode without autograd, an STN whose last FC has all-zero weights (untrained: the identity at
        init) outputs exactly its bias whatever the input (for finite features), so the localisation net —
        about 20 GFLOP for 176 layer1 maps at 224 px — is skipped; θ is the same. In training mode it always
        runs: BatchNorm updates its running statistics and the zero weights still receive a gradient.
        """
        if x.ndim != 4 or x.shape[-2:] != (self.in_size, self.in_size):
            raise ValueError(
                f"SpatialTransformer built for {self.in_size}×{self.in_size} maps got input "
                f"{tuple(x.shape)}; rebuild the model with the image_size of your inputs"
            )
        if not self.training and not torch.is_grad_enabled():
            bias = self._constant_params()
            if bias is not None:
                return params_to_theta(bias.detach().to(x.dtype).expand(x.shape[0], -1), self.mode)
        return params_to_theta(self.fc(self.localization(x)), self.mode)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns ``(warp(x, θ), θ)`` (without autograd, an exactly-identity θ returns ``x`` itself).

        The warped map keeps ``x``'s ``channels_last`` memory format (``grid_sample`` returns NCHW), so the
        next backbone stage keeps oneDNN's faster channels-last convolutions. Values are unaffected.
        """
        theta = self.predict_theta(x)
        warped = warp_if_needed(x, theta)
        if (
            warped is not x
            and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            warped = warped.contiguous(memory_format=torch.channels_last)
        return warped, theta

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, in_size={self.in_size}"
