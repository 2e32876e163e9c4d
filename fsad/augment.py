"""Support-set augmentation of RegAD: each support image becomes up to 22 deterministic views.

The views follow the authors' public test script (MediaBrain-SJTU/RegAD, ``test.py`` +
``utils/funcs.py``): the original, 8 small rotations, 8 diagonal translations, a horizontal
flip, a grayscale copy and 3 rotations by multiples of 90°. Every family can be switched off
for the ablations; the original is always kept. Nothing here draws random numbers.

Layout of the output (view-major, like the authors' ``torch.cat`` per family): for ``k`` input
images and ``V`` views, ``out[v*k:(v+1)*k]`` is view ``v`` of all ``k`` images and ``out[:k]``
is the unchanged input. (The authors shuffle the views afterwards; the Gaussian fit does not
depend on sample order, so we keep the order readable.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from data_tools.constants import IMAGENET_MEAN, IMAGENET_STD

AUGMENT_FAMILIES: tuple[str, ...] = ("rotation", "translation", "flip", "gray", "rot90")

# Angles of the small rotations, in the authors' order (RegAD test.py).
ROTATION_ANGLES: tuple[float, ...] = (
    -math.pi / 4,
    -3 * math.pi / 16,
    -math.pi / 8,
    -math.pi / 16,
    math.pi / 16,
    math.pi / 8,
    3 * math.pi / 16,
    math.pi / 4,
)
# Diagonal translations, in the authors' order (RegAD test.py), in the units of
# ``F.affine_grid`` (the image spans [-1, 1], i.e. 2 units). So the authors' offsets 0.2 and
# 0.1 move the content by 0.1 and 0.05 of the image side. (Reading them as "±0.1 and ±0.2 of the
# side" takes the grid offsets for side fractions; we reproduce the code, see docs/design.md.)
TRANSLATION_OFFSETS: tuple[tuple[float, float], ...] = (
    (0.2, 0.2),
    (-0.2, 0.2),
    (-0.2, -0.2),
    (0.2, -0.2),
    (0.1, 0.1),
    (-0.1, 0.1),
    (-0.1, -0.1),
    (0.1, -0.1),
)
ROT90_TURNS: tuple[int, ...] = (1, 2, 3)

_FAMILY_VIEWS = {
    "rotation": len(ROTATION_ANGLES),
    "translation": len(TRANSLATION_OFFSETS),
    "flip": 1,
    "gray": 1,
    "rot90": len(ROT90_TURNS),
}


def _check_families(families: Iterable[str]) -> tuple[str, ...]:
    if isinstance(families, str):
        families = (families,)
    chosen = tuple(families)
    unknown = [f for f in chosen if f not in AUGMENT_FAMILIES]
    if unknown:
        raise ValueError(
            f"Unknown augmentation famil{'y' if len(unknown) == 1 else 'ies'} {unknown}; "
            f"valid choices are {list(AUGMENT_FAMILIES)} (pass an empty list for no augmentation)."
        )
    # Canonical order, duplicates removed, so the output layout does not depend on how the
    # caller spelled the list.
    return tuple(f for f in AUGMENT_FAMILIES if f in chosen)


def views_per_image(families: Iterable[str] = AUGMENT_FAMILIES) -> int:
    """Number of views each support image yields (the original included).

    Example:
        >>> views_per_image()
        22
        >>> views_per_image(["flip", "gray"])
        3
    """
    return 1 + sum(_FAMILY_VIEWS[f] for f in _check_families(families))


def affine_views(images: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Warp every image with every affine matrix, as the authors do, in one ``grid_sample`` call.

    The authors warp with ``F.affine_grid`` + ``F.grid_sample(padding_mode="reflection")``
    (align_corners=False, bilinear). Reflection padding is kept on purpose: the uncovered corners
    are filled with mirrored image content, not with a constant colour, so no artificial edges
    enter the normal model. torchvision's ``rotate``/``affine`` only offer a constant fill,
    which is why this path uses ``grid_sample`` directly.

    Args:
        images: ``[k, 3, S, S]`` images (any normalisation: reflection copies pixels).
        thetas: ``[T, 2, 3]`` matrices mapping output to input grid coordinates.

    Returns:
        ``[T*k, 3, S, S]``, view-major (all images under ``thetas[0]`` first).

    Example:
        >>> affine_views(torch.zeros(2, 3, 32, 32), torch.eye(2, 3)[None]).shape
        torch.Size([2, 3, 32, 32])
    """
    k = images.shape[0]
    t = thetas.shape[0]
    thetas = thetas.to(device=images.device, dtype=images.dtype)
    batch = images.repeat(t, 1, 1, 1)  # view-major: tile the whole batch t times
    theta_batch = thetas.repeat_interleave(k, dim=0)
    grid = F.affine_grid(theta_batch, list(batch.shape), align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rotation_thetas(angles: Sequence[float]) -> torch.Tensor:
    """``[T, 2, 3]`` rotation matrices in the authors' form ``[[cos, -sin, 0], [sin, cos, 0]]``."""
    a = torch.tensor(angles, dtype=torch.float64)
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    return torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1).float()


def translation_thetas(offsets: Sequence[tuple[float, float]]) -> torch.Tensor:
    """``[T, 2, 3]`` translation matrices ``[[1, 0, a], [0, 1, b]]`` (grid units, see TRANSLATION_OFFSETS).

    Sampling the input at ``x + a`` moves the content by ``-a`` grid units = ``-a*S/2`` pixels.
    """
    ab = torch.tensor(offsets, dtype=torch.float32).reshape(-1, 2)
    theta = torch.eye(2, 3).repeat(ab.shape[0], 1, 1)
    theta[:, :, 2] = ab
    return theta


def to_grayscale_normalized(
    images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> torch.Tensor:
    """Grayscale copy of ImageNet-normalised images, returned normalised again.

    The authors feed un-normalised [0, 1] images to ``kornia.color.rgb_to_grayscale`` and repeat
    the channel three times; our supports are normalised, so de-normalise, convert (torchvision,
    ITU-R 601 weights like kornia's), and re-normalise to get the same image.
    """
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    gray = TF.rgb_to_grayscale(images * s + m, num_output_channels=3)
    return (gray - m) / s


def augment_supports(images: torch.Tensor, families: Iterable[str] = AUGMENT_FAMILIES) -> torch.Tensor:
    """Turn ``k`` support images into ``k * views_per_image(families)`` views.

    Args:
        images: ``[k, 3, S, S]`` ImageNet-normalised support images (square).
        families: any subset of :data:`AUGMENT_FAMILIES`; the original view is always included.

    Returns:
        ``[k*V, 3, S, S]`` on the input's device and dtype, view-major: ``out[:k]`` is ``images``;
        then rotations (8), translations (8), hflip (1), gray (1), rot90 ×1, ×2, ×3 — each
        present only if its family is on, always in this order.

    Example:
        >>> augment_supports(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([44, 3, 64, 64])
    """
    chosen = _check_families(families)
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
        raise ValueError(f"augment_supports expects square RGB images shaped [k, 3, S, S], got {tuple(images.shape)}.")
    if images.shape[0] == 0:
        raise ValueError("augment_supports got zero support images; pass at least one.")
    views = [images]
    thetas = []
    if "rotation" in chosen:
        thetas.append(rotation_thetas(ROTATION_ANGLES))
    if "translation" in chosen:
        thetas.append(translation_thetas(TRANSLATION_OFFSETS))
    if thetas:
        views.append(affine_views(images, torch.cat(thetas)))
    if "flip" in chosen:
        views.append(torch.flip(images, dims=(3,)))
    if "gray" in chosen:
        views.append(to_grayscale_normalized(images))
    if "rot90" in chosen:
        # Exact pixel permutations (the authors use kornia.rotate with 90° steps, which is the same
        # permutation up to interpolation rounding; the set {90°, 180°, 270°} is direction-free).
        views.extend(torch.rot90(images, turns, dims=(2, 3)) for turns in ROT90_TURNS)
    return torch.cat(views, dim=0)
