"""Anomaly maps: upsampling, the scipy-identical blur (borders included), image scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from fsad.anomaly_map import anomaly_maps, gaussian_blur_maps, gaussian_kernel1d, image_scores


def test_blur_equals_scipy_everywhere_including_borders():
    maps = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0)) * 10
    ours = gaussian_blur_maps(maps, sigma=4.0).numpy()
    for i in range(3):
        ref = gaussian_filter(maps[i].double().numpy(), sigma=4)  # scipy default mode='reflect'
        np.testing.assert_allclose(ours[i], ref, rtol=1e-5, atol=1e-5)


def test_blur_radius_larger_than_image_still_matches_scipy():
    # 33-tap kernel on a 10 px map: the symmetric extension must wrap more than once.
    maps = torch.rand(2, 10, 12, generator=torch.Generator().manual_seed(1))
    ours = gaussian_blur_maps(maps, sigma=4.0).numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i], gaussian_filter(maps[i].double().numpy(), 4), rtol=1e-5, atol=1e-6)


def test_torch_reflect_padding_would_differ_at_the_border():
    # Why we do not use torchvision's gaussian_blur: its 'reflect' padding skips the edge pixel.
    from torchvision.transforms.functional import gaussian_blur

    maps = torch.zeros(1, 40, 40)
    maps[0, :, 0] = 100.0  # bright first column
    ours = gaussian_blur_maps(maps, 4.0)
    tv = gaussian_blur(maps.unsqueeze(1), kernel_size=33, sigma=4.0).squeeze(1)
    ref = torch.from_numpy(gaussian_filter(maps[0].double().numpy(), 4)).float()
    torch.testing.assert_close(ours[0], ref, rtol=1e-5, atol=1e-5)
    assert (tv[0, :, 0] - ref[:, 0]).abs().max() > 1.0
    torch.testing.assert_close(tv[0, :, 20:], ref[:, 20:], rtol=1e-5, atol=1e-5)  # interior agrees


def test_kernel_matches_scipy_radius_and_sum():
    k = gaussian_kernel1d(4.0)
    assert k.numel() == 33  # radius int(4*4 + 0.5) = 16
    assert k.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert k.argmax().item() == 16


def test_anomaly_maps_equals_authors_pipeline():
    dist = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(2)) * 5
    ours = anomaly_maps(dist, 28)
    assert ours.shape == (2, 28, 28)
    up = F.interpolate(dist.unsqueeze(1), size=28, mode="bilinear", align_corners=False).squeeze(1).numpy()
    for i in range(2):
        np.testing.assert_allclose(ours[i].numpy(), gaussian_filter(up[i], sigma=4), rtol=1e-5, atol=1e-5)
    assert anomaly_maps(dist, (14, 21), sigma=0).shape == (2, 14, 21)


def test_constant_map_stays_constant_and_image_scores_are_max():
    maps = torch.full((2, 16, 16), 3.0)
    torch.testing.assert_close(gaussian_blur_maps(maps, 4.0), maps)
    m = torch.zeros(3, 5, 5)
    m[0, 1, 2] = 4.0
    m[1, 4, 4] = 2.0
    m[2] -= 1.0
    assert image_scores(m).tolist() == [4.0, 2.0, -1.0]


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\[M, h, w\]"):
        anomaly_maps(torch.rand(7, 7), 28)
    with pytest.raises(ValueError, match="image_size"):
        anomaly_maps(torch.rand(1, 7, 7), 0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur_maps(torch.rand(1, 7, 7), -1.0)
    with pytest.raises(ValueError, match=r"\[M, H, W\]"):
        image_scores(torch.rand(5))
