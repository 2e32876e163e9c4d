"""Support augmentation: view counts, layout, and what each view does to pixels."""

from __future__ import annotations

import pytest
import torch

from data_tools.constants import IMAGENET_MEAN, IMAGENET_STD
from fsad.augment import (
    AUGMENT_FAMILIES,
    affine_views,
    augment_supports,
    translation_thetas,
    views_per_image,
)

S = 40  # translation offset 0.2 grid units = 0.1 * S = 4 px, an integer shift


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))


def _offset(families: tuple[str, ...], family: str) -> int:
    """Index of the first view of `family` in the view-major layout."""
    sizes = {"rotation": 8, "translation": 8, "flip": 1, "gray": 1, "rot90": 3}
    return 1 + sum(
        sizes[f]
        for f in AUGMENT_FAMILIES
        if f in families and AUGMENT_FAMILIES.index(f) < AUGMENT_FAMILIES.index(family)
    )


def test_counts_all_and_per_family(images):
    assert views_per_image() == 22
    assert augment_supports(images).shape == (2 * 22, 3, S, S)
    expected = {"rotation": 9, "translation": 9, "flip": 2, "gray": 2, "rot90": 4}
    for family, v in expected.items():
        assert views_per_image([family]) == v
        assert augment_supports(images, [family]).shape[0] == 2 * v
    assert views_per_image([]) == 1
    assert torch.equal(augment_supports(images, []), images)


def test_original_first_and_unchanged(images):
    out = augment_supports(images)
    assert torch.equal(out[:2], images)


def test_hflip_view(images):
    fams = AUGMENT_FAMILIES
    i = _offset(fams, "flip")
    out = augment_supports(images)
    assert torch.equal(out[2 * i : 2 * i + 2], images.flip(-1))


def test_gray_view_has_equal_channels_after_denormalising(images):
    i = _offset(AUGMENT_FAMILIES, "gray")
    view = augment_supports(images)[2 * i : 2 * i + 2]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    raw = view * std + mean
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)
    rgb = images * std + mean
    expected = 0.2989 * rgb[:, 0] + 0.587 * rgb[:, 1] + 0.114 * rgb[:, 2]
    torch.testing.assert_close(raw[:, 0], expected, atol=1e-3, rtol=0)


def test_rot90_views_compose_to_identity(images):
    i = _offset(AUGMENT_FAMILIES, "rot90")
    out = augment_supports(images)
    r1, r2, r3 = (out[2 * (i + j) : 2 * (i + j) + 2] for j in range(3))
    assert torch.equal(torch.rot90(r1, 3, dims=(2, 3)), images)
    assert torch.equal(torch.rot90(r1, 1, dims=(2, 3)), r2)
    assert torch.equal(torch.rot90(r2, 1, dims=(2, 3)), r3)
    assert not torch.equal(r1, images)


def _dot() -> torch.Tensor:
    img = torch.zeros(1, 3, S, S)
    img[:, :, 20, 20] = 10.0
    return img


def test_translation_moves_content_by_a_tenth_of_the_side():
    # Grid offset 0.2 (the authors' largest) = 0.1 of the side; sampling at x+a moves content by -a.
    moved = affine_views(_dot(), translation_thetas([(0.2, 0.2), (-0.2, 0.1)]))
    shift = int(0.1 * S)
    assert moved[0, 0].argmax().item() == (20 - shift) * S + (20 - shift)
    assert moved[0, 0].max().item() == pytest.approx(10.0, abs=1e-4)
    assert moved[1, 0].argmax().item() == (20 - shift // 2) * S + (20 + shift)


def test_translation_family_contains_the_authors_eight_shifts():
    i = _offset(AUGMENT_FAMILIES, "translation")
    out = augment_supports(_dot())
    peaks = [divmod(out[i + j, 0].argmax().item(), S) for j in range(8)]
    assert peaks == [(16, 16), (16, 24), (24, 24), (24, 16), (18, 18), (18, 22), (22, 22), (22, 18)]


def test_rotations_keep_the_centre_and_fill_by_reflection():
    img = torch.zeros(1, 3, S, S)
    img[:, :, 18:22, 18:22] = 1.0  # centred square
    out = augment_supports(img, ["rotation"])
    assert out.shape[0] == 9
    # The centre stays put under rotation about the image centre.
    assert torch.all(out[1:, :, 19:21, 19:21] > 0.5)
    # Reflection padding: a constant image stays constant (a constant fill would put zeros
    # into the corners that leave the frame), for rotations and translations alike.
    flat = torch.full((1, 3, S, S), 3.0)
    views = augment_supports(flat, ["rotation", "translation"])
    torch.testing.assert_close(views, torch.full_like(views, 3.0))


def test_deterministic_and_device_dtype(images):
    a = augment_supports(images)
    b = augment_supports(images.clone())
    assert torch.equal(a, b)
    assert augment_supports(images.double()).dtype == torch.float64


def test_bad_input_errors(images):
    with pytest.raises(ValueError, match="valid choices"):
        augment_supports(images, ["rotate"])
    with pytest.raises(ValueError, match=r"\[k, 3, S, S\]"):
        augment_supports(images[:, :, :, :10])
    with pytest.raises(ValueError, match=r"\[k, 3, S, S\]"):
        augment_supports(images[0])
    with pytest.raises(ValueError, match="zero support"):
        augment_supports(images[:0])
