"""From per-position distances to image-sized anomaly maps and image scores.

The authors (RegAD ``test.py``, as PaDiM) upsample the distance map bilinearly to the input
size (``align_corners=False``) and then smooth each image with
``scipy.ndimage.gaussian_filter(sigma=4)``; the image score is the map's maximum. Here the blur is
a separable convolution over the whole batch that reproduces scipy's filter *exactly*, borders
included: scipy's default kernel (radius ``int(4*sigma + 0.5)``, i.e. truncate=4.0) and its
default ``mode="reflect"`` border, which is the half-sample symmetric extension
``d c b a | a b c d | d c b a``. ``torchvision``'s ``gaussian_blur`` would be the library choice,
but it pads with ``"reflect"`` in torch's sense (``d c b | a b c d``, edge not repeated), which
changes the values within ``radius`` pixels of the border — exactly where the maximum (the image
score) often sits — so we gather the symmetric padding ourselves and convolve with ``conv2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Gaussian smoothing of the upsampled map: sigma = 4 px (RegAD/PaDiM test code,
# ``gaussian_filter(score_map[i], sigma=4)``), scipy's default truncate = 4.0.
ANOMALY_MAP_SIGMA = 4.0
GAUSSIAN_TRUNCATE = 4.0


def _symmetric_index(n: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices of a length-n axis padded by `radius` with scipy's 'reflect' (half-sample symmetric)."""
    idx = torch.arange(-radius, n + radius, device=device) % (2 * n)  # period 2n covers any radius
    return torch.where(idx >= n, 2 * n - 1 - idx, idx)


def gaussian_kernel1d(
    sigma: float, truncate: float = GAUSSIAN_TRUNCATE, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian kernel: radius ``int(truncate*sigma + 0.5)``, normalised to sum 1."""
    radius = int(truncate * float(sigma) + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (x / float(sigma)) ** 2)
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur_maps(
    maps: torch.Tensor, sigma: float = ANOMALY_MAP_SIGMA, truncate: float = GAUSSIAN_TRUNCATE
) -> torch.Tensor:
    """Blur a batch of maps like ``scipy.ndimage.gaussian_filter(map, sigma)`` does to each one.

    Args:
        maps: ``[M, H, W]`` float maps.
        sigma: standard deviation in pixels; 0 returns the maps unchanged.
        truncate: kernel radius in sigmas (scipy's default 4.0).

    Returns:
        ``[M, H, W]`` blurred maps, same dtype/device.

    Example:
        >>> gaussian_blur_maps(torch.rand(3, 64, 64)).shape
        torch.Size([3, 64, 64])
    """
    if maps.ndim != 3:
        raise ValueError(f"gaussian_blur_maps expects maps shaped [M, H, W], got {tuple(maps.shape)}.")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0 pixels, got {sigma}.")
    if sigma == 0:
        return maps
    dtype = maps.dtype if maps.is_floating_point() else torch.float32
    kernel = gaussian_kernel1d(sigma, truncate, dtype).to(maps.device)
    radius = (kernel.numel() - 1) // 2
    _, h, w = maps.shape
    x = maps.to(dtype).unsqueeze(1)  # [M, 1, H, W]
    x = x.index_select(3, _symmetric_index(w, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, 1, -1))
    x = x.index_select(2, _symmetric_index(h, radius, maps.device))
    x = F.conv2d(x, kernel.view(1, 1, -1, 1))
    return x.squeeze(1)


def anomaly_maps(
    distances: torch.Tensor, image_size: int | tuple[int, int], sigma: float = ANOMALY_MAP_SIGMA
) -> torch.Tensor:
    """Upsample per-position distances to the image size and smooth them.

    Args:
        distances: ``[M, h, w]`` Mahalanobis distances (e.g. ``[M, 56, 56]``).
        image_size: output side ``S`` or ``(H, W)``.
        sigma: Gaussian blur in output pixels (paper default 4).

    Returns:
        ``[M, S, S]`` anomaly maps (bilinear, ``align_corners=False``, then the scipy-equivalent blur).

    Example:
        >>> anomaly_maps(torch.rand(2, 56, 56), 224).shape
        torch.Size([2, 224, 224])
    """
    if distances.ndim != 3:
        raise ValueError(f"anomaly_maps expects distances shaped [M, h, w], got {tuple(distances.shape)}.")
    size = (int(image_size), int(image_size)) if isinstance(image_size, (int, float)) else tuple(map(int, image_size))
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or (H, W), got {image_size!r}.")
    x = distances.float() if not distances.is_floating_point() else distances
    up = F.interpolate(x.unsqueeze(1), size=size, mode="bilinear", align_corners=False).squeeze(1)
    return gaussian_blur_maps(up, sigma)


def image_scores(maps: torch.Tensor) -> torch.Tensor:
    """Image-level anomaly score = maximum of each map. ``[M, ...]`` -> ``[M]``."""
    if maps.ndim < 2:
        raise ValueError(f"image_scores expects maps shaped [M, H, W], got {tuple(maps.shape)}.")
    return maps.flatten(1).amax(dim=1)


__all__ = ["ANOMALY_MAP_SIGMA", "anomaly_maps", "gaussian_blur_maps", "gaussian_kernel1d", "image_scores"]
