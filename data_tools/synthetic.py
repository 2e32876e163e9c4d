"""Procedural defect dataset in MVTec AD's exact folder layout (the kit's embedded default data).

Four categories, drawn with NumPy + Pillow only:

* ``weave``   (texture) — plain-woven linen/hessian; defects ``hole``, ``stain``, ``thread``.
* ``marble``  (texture) — veined stone; defects ``crack``, ``stain``, ``chip``.
* ``washer``  (object)  — a turned tab washer centred on a dark plate; defects ``scratch``,
  ``color``, ``missing``.
* ``bracket`` (object)  — a painted L-bracket with holes on a cloth background, placed with a
  random rotation (±15°) and shift (±8 % of the side) like MPDD's misaligned parts, so a
  spatial transformer has something to learn; defects ``hole``, ``scratch``, ``missing``.

Normal images vary (texture phase, per-image lighting gradient, colour jitter, sensor noise);
defects change only the pixels of their mask, which is drawn from the same geometry, so masks
are exact: render the same sample without its defect and the images differ exactly inside it.

Layout (identical to MVTec AD)::

    <root>/<category>/train/good/000.png ...
    <root>/<category>/test/good/000.png ...
    <root>/<category>/test/<defect>/000.png ...
    <root>/<category>/ground_truth/<defect>/000_mask.png   (single channel, 0/255)
    <root>/SYNTHETIC.json                                   (seed, options, generator version)

Determinism: every image draws from ``np.random.SeedSequence([seed, crc32(category),
crc32(split), index])``, and PNGs are written without timestamps or text chunks, so the same
seed gives byte-identical files.

Example:
    >>> root = generate_synthetic_dataset("/tmp/syn", seed=0, image_size=64, n_train=4,
    ...                                   n_test_good=2, n_test_per_defect=1)
    >>> sorted(p.name for p in (root / "washer" / "test").iterdir())
    ['color', 'good', 'missing', 'scratch']
    >>> image, mask = render_sample("washer", seed=0, split="test/scratch", index=0,
    ...                             defect="scratch", image_size=64)
    >>> image.shape, image.dtype, mask.shape, mask.dtype
    ((64, 64, 3), dtype('uint8'), (64, 64), dtype('bool'))
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fsad.errors import ConfigError, FsadError, MissingFileError, OutputExistsError

#: Bump whenever the pictures change for a given seed (recorded in SYNTHETIC.json; a
#: different version makes :func:`ensure_synthetic_dataset` regenerate).
GENERATOR_VERSION = "data_tools.synthetic v1"

SYNTHETIC_CATEGORIES: tuple[str, ...] = ("weave", "marble", "washer", "bracket")
TEXTURE_CATEGORIES: tuple[str, ...] = ("weave", "marble")
OBJECT_CATEGORIES: tuple[str, ...] = ("washer", "bracket")
#: Categories whose part is placed with a random rotation/translation (MPDD-like misalignment).
MISALIGNED_CATEGORIES: tuple[str, ...] = ("bracket",)
DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "weave": ("hole", "stain", "thread"),
    "marble": ("crack", "stain", "chip"),
    "washer": ("scratch", "color", "missing"),
    "bracket": ("hole", "scratch", "missing"),
}

#: Misalignment of the bracket: rotation ±15° and translation ±8 % of the side
#: (MPDD's parts are placed by hand, at visibly varying angles and positions).
MAX_ROTATION_DEG = 15.0
MAX_SHIFT_FRAC = 0.08

DEFAULT_IMAGE_SIZE = 256
DEFAULT_N_TRAIN = 32
DEFAULT_N_TEST_GOOD = 8
DEFAULT_N_TEST_PER_DEFECT = 4
SYNTHETIC_INFO_FILE = "SYNTHETIC.json"
#: Written into the output root before the first category: a folder holding it was made by this generator, so
#: its category folders may be replaced. A non-empty folder without it (or SYNTHETIC.json) is refused unless
#: ``overwrite=True`` (``--overwrite``): the generator never deletes what it did not write.
SYNTHETIC_MARKER_FILE = ".fsad-synthetic"
MIN_IMAGE_SIZE = 32


# --------------------------------------------------------------------------------------
# Small drawing helpers
# --------------------------------------------------------------------------------------
def _smooth_noise(rng: np.random.Generator, size: int, cells: int | tuple[int, int]) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a ``cells``-sized Gaussian grid, bicubic-upsampled.

    Pillow's float ("F") resize is used rather than scipy.ndimage.zoom because it is ~10× faster
    for these sizes and equally deterministic.
    """
    cy, cx = (cells, cells) if isinstance(cells, int) else cells
    grid = rng.standard_normal((max(cy, 1) + 1, max(cx, 1) + 1)).astype(np.float32)
    field = Image.fromarray(grid, mode="F").resize((size, size), Image.BICUBIC)
    return np.asarray(field, dtype=np.float32) * 0.7


def _fbm(
    rng: np.random.Generator, size: int, base_cells: int = 3, octaves: int = 4, persistence: float = 0.5
) -> np.ndarray:
    """Fractal (multi-octave) smooth noise, roughly zero-mean with std ~0.5."""
    total = np.zeros((size, size), np.float32)
    amp = 1.0
    for octave in range(octaves):
        cells = min(base_cells * 2**octave, size)
        total += amp * _smooth_noise(rng, size, cells)
        amp *= persistence
    return total


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) in pixels, shape (S, S) each."""
    coords = np.arange(size, dtype=np.float32) + 0.5
    return np.meshgrid(coords, coords)


def _blob_polygon(
    rng: np.random.Generator, cx: float, cy: float, radius: float, roughness: float = 0.25, n_points: int = 56
) -> list[tuple[float, float]]:
    """Irregular closed outline: a circle whose radius is a random low-order Fourier series."""
    theta = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    r = np.ones_like(theta)
    for k in range(2, 7):
        r += rng.uniform(0, roughness / (k - 0.8)) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    r = radius * np.clip(r, 0.35, None)
    return list(zip((cx + r * np.cos(theta)).tolist(), (cy + r * np.sin(theta)).tolist()))


def _raster_polygon(size: int, points: Sequence[tuple[float, float]]) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon(points, fill=255)
    return np.asarray(canvas) > 0


def _raster_line(size: int, points: Sequence[tuple[float, float]], width: int) -> np.ndarray:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).line(points, fill=255, width=width, joint="curve")
    return np.asarray(canvas) > 0


def _bezier(p0, p1, p2, n: int = 24) -> list[tuple[float, float]]:
    t = np.linspace(0, 1, n)[:, None]
    pts = (1 - t) ** 2 * np.asarray(p0) + 2 * (1 - t) * t * np.asarray(p1) + t**2 * np.asarray(p2)
    return [tuple(p) for p in pts.tolist()]


def _random_curve(
    rng: np.random.Generator, start: tuple[float, float], angle: float, length: float, bend: float = 0.25
) -> list[tuple[float, float]]:
    """A gently bent stroke (quadratic Bezier) of about ``length`` pixels."""
    end = (start[0] + length * math.cos(angle), start[1] + length * math.sin(angle))
    mid = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2)
    off = rng.uniform(-bend, bend) * length
    ctrl = (mid[0] - off * math.sin(angle), mid[1] + off * math.cos(angle))
    return _bezier(start, ctrl, end)


def _jagged_path(
    rng: np.random.Generator, start: tuple[float, float], angle: float, step: float, n_steps: int, wiggle: float = 0.6
) -> list[tuple[float, float]]:
    pts = [start]
    heading = angle
    for _ in range(n_steps):
        heading = angle + 0.6 * (heading - angle) + rng.uniform(-wiggle, wiggle)
        x, y = pts[-1]
        pts.append((x + step * math.cos(heading), y + step * math.sin(heading)))
    return pts


def _line_width(size: int, frac: float) -> int:
    return max(1, int(round(size * frac)))


def _rounded_box_sdf(
    px: np.ndarray, py: np.ndarray, cx: float, cy: float, hx: float, hy: float, r: float
) -> np.ndarray:
    """Signed distance to a rounded rectangle (negative inside); Inigo Quilez's formula."""
    qx = np.abs(px - cx) - hx + r
    qy = np.abs(py - cy) - hy + r
    outside = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0))
    return outside + np.minimum(np.maximum(qx, qy), 0) - r


def _bevel_shading(sdf_px: np.ndarray, light: np.ndarray, width: float, strength: float) -> np.ndarray:
    """Brightness change of a raised part's rounded rim lit from ``light`` (unit 2-vector)."""
    gy, gx = np.gradient(sdf_px)
    norm = np.hypot(gx, gy) + 1e-6
    facing = (gx * light[0] + gy * light[1]) / norm  # outward normal · light
    band = np.clip(1.0 + sdf_px / width, 0.0, 1.0) * (sdf_px <= 0)  # 1 at the edge, 0 inside
    return 1.0 + strength * band * facing


# --------------------------------------------------------------------------------------
# Sample rendering
# --------------------------------------------------------------------------------------
@dataclass
class _Scene:
    """What a defect needs to know about the clean rendering of one sample."""

    image: np.ndarray  # float32 (S, S, 3) in ~[0, 1], before lighting/noise
    background: np.ndarray  # float32 (S, S, 3): what shows where the part is absent
    part_alpha: np.ndarray  # float32 (S, S): coverage of the part (all ones for textures)
    center: tuple[float, float]  # part centre in pixels
    angle: float  # part rotation in radians
    size: int

    def to_image(self, px: float, py: float) -> tuple[float, float]:
        """Part-frame point (units of the side) -> image pixels."""
        c, s = math.cos(self.angle), math.sin(self.angle)
        return (self.center[0] + (c * px - s * py) * self.size, self.center[1] + (s * px + c * py) * self.size)


def _part_coords(size: int, center: tuple[float, float], angle: float) -> tuple[np.ndarray, np.ndarray]:
    """Image pixels -> part frame (units of the side, origin at the part centre)."""
    x, y = _grid(size)
    dx, dy = (x - center[0]) / size, (y - center[1]) / size
    c, s = math.cos(angle), math.sin(angle)
    return c * dx + s * dy, -s * dx + c * dy


def _render_weave(rng: np.random.Generator, size: int) -> _Scene:
    x, y = _grid(size)
    period = size / 14.0 * rng.uniform(0.98, 1.02)
    u = (x + rng.uniform(0, 2 * period)) / period
    v = (y + rng.uniform(0, 2 * period)) / period
    iu, iv = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    fu, fv = u - iu, v - iv
    warp_on_top = (iu + iv) % 2 == 0
    # Thread cross-section (bright centre, dark gaps) and the arch where it dives under.
    prof_warp = np.sin(np.pi * fu) ** 0.7 * (0.78 + 0.22 * np.sin(np.pi * fv))
    prof_weft = np.sin(np.pi * fv) ** 0.7 * (0.78 + 0.22 * np.sin(np.pi * fu))
    # Each thread has its own thickness/brightness (slub yarn).
    col_var = 1.0 + 0.07 * rng.standard_normal(iu.max() - iu.min() + 1).astype(np.float32)
    row_var = 1.0 + 0.07 * rng.standard_normal(iv.max() - iv.min() + 1).astype(np.float32)
    fibre = 0.06 * _smooth_noise(rng, size, max(size // 3, 2))
    prof = np.where(warp_on_top, prof_warp * col_var[iu - iu.min()], prof_weft * row_var[iv - iv.min()])
    prof = np.clip(prof + fibre, 0, 1.2)[..., None]
    warp_rgb = np.array([0.74, 0.62, 0.44], np.float32) * rng.uniform(0.97, 1.03)
    weft_rgb = np.array([0.68, 0.57, 0.40], np.float32) * rng.uniform(0.97, 1.03)
    thread = np.where(warp_on_top[..., None], warp_rgb, weft_rgb)
    gap = np.array([0.14, 0.11, 0.08], np.float32)
    cloud = 1.0 + 0.05 * _fbm(rng, size, 2, 3)[..., None]
    image = (gap * (1 - prof) + thread * prof) * cloud
    background = np.broadcast_to(np.array([0.05, 0.045, 0.04], np.float32), image.shape).copy()
    return _Scene(
        image.astype(np.float32), background, np.ones((size, size), np.float32), (size / 2, size / 2), 0.0, size
    )


def _render_marble(rng: np.random.Generator, size: int) -> _Scene:
    x, y = _grid(size)
    angle = math.radians(28 + rng.uniform(-4, 4))
    t = (x * math.cos(angle) + y * math.sin(angle)) / size
    turb = _fbm(rng, size, 2, 5)
    # Low turbulence amplitude keeps veins as long, wandering bands (high values give contour lines).
    s1 = np.sin(2 * np.pi * (1.8 * t + 0.32 * turb) + rng.uniform(0, 2 * np.pi))
    s2 = np.sin(2 * np.pi * (4.5 * t + 0.45 * _fbm(rng, size, 3, 4)) + rng.uniform(0, 2 * np.pi))
    veins = np.clip(0.75 * (1 - np.abs(s1)) ** 7 + 0.3 * (1 - np.abs(s2)) ** 20, 0, 1)[..., None]
    base = np.array([0.90, 0.89, 0.86], np.float32) * (1 + 0.05 * _fbm(rng, size, 2, 4))[..., None]
    vein_rgb = np.array([0.33, 0.36, 0.35], np.float32)
    image = base * (1 - veins) + vein_rgb * veins
    background = np.broadcast_to(np.array([0.42, 0.40, 0.38], np.float32), image.shape).copy()
    return _Scene(
        image.astype(np.float32), background, np.ones((size, size), np.float32), (size / 2, size / 2), 0.0, size
    )


# Washer geometry in units of the side: outer/inner radius and the key tab in the bore.
_WASHER_R_OUT, _WASHER_R_IN = 0.33, 0.14
_WASHER_TAB = (0.0, -0.125, 0.028, 0.035)  # centre x, y, half width, half height


def _washer_sdf(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    rr = np.hypot(px, py)
    bore = np.maximum(rr - _WASHER_R_IN, -_rounded_box_sdf(px, py, *_WASHER_TAB, 0.006))
    return np.maximum(rr - _WASHER_R_OUT, -bore)


def _drop_shadow(alpha: np.ndarray, size: int, strength: float) -> np.ndarray:
    sigma = max(size * 0.012, 0.8)
    shift = (size * 0.018, size * 0.012)
    shadow = ndimage.shift(ndimage.gaussian_filter(alpha, sigma), shift, order=1, mode="constant")
    return 1.0 - strength * np.clip(shadow, 0, 1)


def _render_washer(rng: np.random.Generator, size: int) -> _Scene:
    # Aligned like MVTec's objects: the washer sits centred, within ±2° and ±1 % of the side.
    center = (size * (0.5 + rng.uniform(-0.01, 0.01)), size * (0.5 + rng.uniform(-0.01, 0.01)))
    angle = math.radians(rng.uniform(-2, 2))
    px, py = _part_coords(size, center, angle)
    sdf = _washer_sdf(px, py) * size
    alpha = np.clip(0.5 - sdf, 0, 1).astype(np.float32)
    light_angle = math.radians(-130 + rng.uniform(-10, 10))
    light = np.array([math.cos(light_angle), math.sin(light_angle)], np.float32)
    rr, ang = np.hypot(px, py), np.arctan2(py, px)
    # Turning grooves; period >= 3 px so that they do not alias into moire rings.
    lathe = 0.025 * np.sin(2 * np.pi * rr * size / max(3.0, size / 70) + 2.0 * _smooth_noise(rng, size, 6))
    sheen = 0.16 * np.cos(2 * (ang - light_angle - np.pi / 2))  # turned surface: anisotropic lobes
    metal = 0.56 + lathe + sheen + 0.04 * _fbm(rng, size, 4, 3)
    metal = metal * _bevel_shading(sdf, light, max(size * 0.018, 1.0), 0.45)
    metal_rgb = np.clip(metal, 0, 1.2)[..., None] * np.array([1.0, 0.985, 0.95], np.float32)
    bg = 0.11 + 0.025 * _fbm(rng, size, 3, 4)
    background = (bg * _drop_shadow(alpha, size, 0.6))[..., None] * np.array([0.95, 1.0, 1.08], np.float32)
    image = background * (1 - alpha[..., None]) + metal_rgb * alpha[..., None]
    return _Scene(image.astype(np.float32), background.astype(np.float32), alpha, center, angle, size)


# L-bracket: two bars (centre x, y, half width, half height) and round holes (x, y, r), units of side.
_BRACKET_BARS = ((0.0, 0.12, 0.30, 0.08), (-0.22, -0.02, 0.08, 0.22))
_BRACKET_HOLES = ((0.06, 0.12, 0.032), (0.20, 0.12, 0.032), (-0.22, -0.14, 0.032))
_BRACKET_SLOT = (-0.22, 0.03, 0.025, 0.055)
_BRACKET_CORNERS = ((0.30, 0.04), (0.30, 0.20), (-0.30, -0.24), (-0.14, -0.24), (-0.30, 0.20))


def _bracket_sdf(px: np.ndarray, py: np.ndarray) -> np.ndarray:
    sdf = np.minimum(*(_rounded_box_sdf(px, py, *bar, 0.02) for bar in _BRACKET_BARS))
    for hx, hy, hr in _BRACKET_HOLES:
        sdf = np.maximum(sdf, -(np.hypot(px - hx, py - hy) - hr))
    return np.maximum(sdf, -_rounded_box_sdf(px, py, *_BRACKET_SLOT, _BRACKET_SLOT[2]))


def _render_bracket(rng: np.random.Generator, size: int) -> _Scene:
    # MPDD-like misalignment: the part is put down by hand, rotated and shifted.
    center = (
        size * (0.5 + rng.uniform(-MAX_SHIFT_FRAC, MAX_SHIFT_FRAC)),
        size * (0.5 + rng.uniform(-MAX_SHIFT_FRAC, MAX_SHIFT_FRAC)),
    )
    angle = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    px, py = _part_coords(size, center, angle)
    sdf = _bracket_sdf(px, py) * size
    alpha = np.clip(0.5 - sdf, 0, 1).astype(np.float32)
    light_angle = math.radians(-120 + rng.uniform(-10, 10))
    light = np.array([math.cos(light_angle), math.sin(light_angle)], np.float32)
    paint = np.array([0.45, 0.28, 0.16], np.float32) * rng.uniform(0.95, 1.05)
    grain = 1 + 0.05 * _fbm(rng, size, 6, 3) + 0.04 * _smooth_noise(rng, size, max(size // 4, 2))
    sheen = 1 + 0.12 * np.exp(-((px - 0.05) ** 2 + (py - 0.05) ** 2) / 0.05)
    part = paint * (grain * sheen * _bevel_shading(sdf, light, max(size * 0.015, 1.0), 0.6))[..., None]
    cloth = 0.70 + 0.035 * _fbm(rng, size, 4, 4) + 0.03 * _smooth_noise(rng, size, max(size // 2, 2))
    background = (cloth * _drop_shadow(alpha, size, 0.45))[..., None] * np.array([0.97, 0.98, 1.0], np.float32)
    image = background * (1 - alpha[..., None]) + part * alpha[..., None]
    return _Scene(image.astype(np.float32), background.astype(np.float32), alpha, center, angle, size)


_RENDERERS: dict[str, Callable[[np.random.Generator, int], _Scene]] = {
    "weave": _render_weave,
    "marble": _render_marble,
    "washer": _render_washer,
    "bracket": _render_bracket,
}


# --------------------------------------------------------------------------------------
# Defects: each returns (new image, exact mask) and changes only pixels inside the mask
# --------------------------------------------------------------------------------------
def _texture_point(rng: np.random.Generator, size: int) -> tuple[float, float]:
    return (size * rng.uniform(0.2, 0.8), size * rng.uniform(0.2, 0.8))


def _blend(image: np.ndarray, mask: np.ndarray, target: np.ndarray, amount: np.ndarray | float) -> np.ndarray:
    """Replace ``image`` by ``target`` with weight ``amount`` (>0) inside ``mask`` only."""
    out = image.copy()
    a = np.broadcast_to(np.asarray(amount, np.float32), mask.shape)[mask][:, None]
    tgt = np.broadcast_to(target, image.shape)[mask]
    out[mask] = image[mask] * (1 - a) + tgt * a
    return out


def _stain(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    cx, cy = _texture_point(rng, s)
    mask = _raster_polygon(s, _blob_polygon(rng, cx, cy, s * rng.uniform(0.05, 0.085), 0.3))
    density = 0.5 + 0.3 * np.clip(_smooth_noise(rng, s, 5) + 0.5, 0, 1)  # uneven soaking, >= 0.5
    color = np.array([[0.30, 0.20, 0.08], [0.55, 0.33, 0.12], [0.20, 0.22, 0.10]][rng.integers(3)], np.float32)
    return _blend(scene.image, mask, scene.image * color * 1.6, density), mask


def _hole_texture(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    cx, cy = _texture_point(rng, s)
    mask = _raster_polygon(s, _blob_polygon(rng, cx, cy, s * rng.uniform(0.03, 0.055), 0.45))
    dark = scene.background * (1 + 0.4 * _smooth_noise(rng, s, 8))[..., None]
    return _blend(scene.image, mask, dark, 1.0), mask


def _thread(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    start = _texture_point(rng, s)
    pts = _random_curve(rng, start, rng.uniform(0, 2 * np.pi), s * rng.uniform(0.2, 0.35), 0.35)
    mask = _raster_line(s, pts, _line_width(s, 0.012))
    color = np.array([[0.75, 0.12, 0.10], [0.15, 0.25, 0.65], [0.92, 0.92, 0.90]][rng.integers(3)], np.float32)
    return _blend(scene.image, mask, color, 0.85), mask


def _crack(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    start = _texture_point(rng, s)
    angle = rng.uniform(0, 2 * np.pi)
    pts = _jagged_path(rng, start, angle, s * 0.022, int(rng.integers(10, 16)))
    mask = _raster_line(s, pts, _line_width(s, 0.008))
    branch_from = pts[len(pts) // 2]
    branch = _jagged_path(rng, branch_from, angle + rng.choice([-1, 1]) * 0.8, s * 0.02, 5)
    mask |= _raster_line(s, branch, max(1, _line_width(s, 0.008) - 1))
    return _blend(scene.image, mask, scene.image * 0.25, 1.0), mask


def _chip(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    cx, cy = _texture_point(rng, s)
    mask = _raster_polygon(s, _blob_polygon(rng, cx, cy, s * rng.uniform(0.035, 0.05), 0.5))
    rough = (0.58 + 0.12 * _smooth_noise(rng, s, max(s // 6, 2)))[..., None] * np.array([1.0, 0.97, 0.92], np.float32)
    return _blend(scene.image, mask, rough, 0.9), mask


def _on_part(scene: _Scene, region: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    return region & (scene.part_alpha > threshold)


def _scratch(rng, scene: _Scene, on: Callable[[], tuple[float, float, float]], style: str):
    s = scene.size
    px, py, tangent = on()
    start = scene.to_image(px, py)
    angle = tangent + scene.angle + rng.uniform(-0.4, 0.4)
    pts = _random_curve(rng, start, angle, s * rng.uniform(0.14, 0.22), 0.2)
    mask = _on_part(scene, _raster_line(s, pts, _line_width(s, 0.008)))
    if style == "groove":  # turned metal: a dark groove
        return _blend(scene.image, mask, scene.image * 0.35, 1.0), mask
    bare = np.array([0.80, 0.80, 0.82], np.float32)  # paint scraped off: bright bare steel
    return _blend(scene.image, mask, bare, 0.85), mask


def _washer_ring_point(rng) -> tuple[float, float, float]:
    theta = rng.uniform(0, 2 * np.pi)
    r = rng.uniform(_WASHER_R_IN + 0.05, _WASHER_R_OUT - 0.05)
    return r * math.cos(theta), r * math.sin(theta), theta + math.pi / 2


def _bracket_point(rng) -> tuple[float, float, float]:
    if rng.random() < 0.6:  # long bar, scratch along it
        return rng.uniform(-0.2, 0.15), rng.uniform(0.07, 0.17), 0.0 if rng.random() < 0.5 else math.pi
    return rng.uniform(-0.25, -0.19), rng.uniform(-0.2, 0.0), math.pi / 2


def _color(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    s = scene.size
    px, py, _ = _washer_ring_point(rng)
    cx, cy = scene.to_image(px, py)
    mask = _on_part(scene, _raster_polygon(s, _blob_polygon(rng, cx, cy, s * rng.uniform(0.045, 0.07), 0.3)))
    tint = np.array([[0.85, 0.25, 0.15], [0.25, 0.35, 0.90], [0.80, 0.62, 0.15]][rng.integers(3)], np.float32)
    lum = scene.image.mean(axis=2, keepdims=True)
    return _blend(scene.image, mask, lum * tint * 1.5, 0.75), mask


def _missing(rng, scene: _Scene, edge_point: Callable[[], tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """A piece broken off the part: its pixels become background (with the intact part's shadow)."""
    s = scene.size
    cx, cy = scene.to_image(*edge_point())
    blob = _raster_polygon(s, _blob_polygon(rng, cx, cy, s * rng.uniform(0.06, 0.09), 0.35))
    mask = _on_part(scene, blob, threshold=0.0)  # every pixel the part covered, even partly, changes
    return _blend(scene.image, mask, scene.background, 1.0), mask


def _drilled_hole(rng, scene: _Scene) -> tuple[np.ndarray, np.ndarray]:
    """An extra hole through the bracket where the drawing has none."""
    s = scene.size
    r = rng.uniform(0.022, 0.032)
    px, py = (rng.uniform(-0.15, 0.24), 0.12) if rng.random() < 0.6 else (-0.22, rng.uniform(-0.08, 0.12))
    # keep clear of the drawn holes and the slot
    for _ in range(20):
        clear = all(math.hypot(px - hx, py - hy) > hr + r + 0.02 for hx, hy, hr in _BRACKET_HOLES)
        clear &= not (abs(px - _BRACKET_SLOT[0]) < 0.06 and abs(py - _BRACKET_SLOT[1]) < 0.1)
        if clear:
            break
        px, py = (rng.uniform(-0.15, 0.24), 0.12) if rng.random() < 0.6 else (-0.22, rng.uniform(-0.08, 0.12))
    cx, cy = scene.to_image(px, py)
    x, y = _grid(s)
    dist = np.hypot(x - cx, y - cy)
    mask = _on_part(scene, dist < r * s, threshold=0.0)
    wall = (dist > r * s - max(s * 0.008, 1.0))[..., None]
    target = np.where(wall, scene.image * 0.3, scene.background * 0.8)
    return _blend(scene.image, mask, target, 1.0), mask


def _washer_rim_point(rng) -> tuple[float, float]:
    theta = rng.uniform(0, 2 * np.pi)
    return _WASHER_R_OUT * math.cos(theta), _WASHER_R_OUT * math.sin(theta)


def _bracket_corner(rng) -> tuple[float, float]:
    return _BRACKET_CORNERS[int(rng.integers(len(_BRACKET_CORNERS)))]


_DEFECTS: dict[str, dict[str, Callable[[np.random.Generator, _Scene], tuple[np.ndarray, np.ndarray]]]] = {
    "weave": {"hole": _hole_texture, "stain": _stain, "thread": _thread},
    "marble": {"crack": _crack, "stain": _stain, "chip": _chip},
    "washer": {
        "scratch": lambda rng, sc: _scratch(rng, sc, lambda: _washer_ring_point(rng), "groove"),
        "color": _color,
        "missing": lambda rng, sc: _missing(rng, sc, lambda: _washer_rim_point(rng)),
    },
    "bracket": {
        "hole": _drilled_hole,
        "scratch": lambda rng, sc: _scratch(rng, sc, lambda: _bracket_point(rng), "bare"),
        "missing": lambda rng, sc: _missing(rng, sc, lambda: _bracket_corner(rng)),
    },
}


def _seed_sequence(seed: int, category: str, split: str, index: int) -> np.random.SeedSequence:
    # crc32 (not hash()) so that keys are stable across processes and Python versions.
    return np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, zlib.crc32(category.encode()), zlib.crc32(split.encode()), int(index)]
    )


def render_sample(
    category: str, seed: int, split: str, index: int, defect: str | None = None, image_size: int = DEFAULT_IMAGE_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render one image of the synthetic dataset and its exact defect mask.

    The clean scene, the lighting/colour jitter and the sensor noise depend only on
    ``(seed, category, split, index)``; the defect draws from a separate stream. So
    ``render_sample(..., defect=None)`` with the same key is the same picture without the
    defect, pixel-identical outside the mask.

    Args:
        category: one of :data:`SYNTHETIC_CATEGORIES`.
        seed: dataset seed.
        split: folder key, e.g. ``"train/good"``, ``"test/good"``, ``"test/scratch"``.
        index: image number within the folder.
        defect: a name from :data:`DEFECT_TYPES` ``[category]`` or ``None`` for a normal image.
        image_size: side S in pixels (>= 32).

    Returns:
        ``(image uint8 [S, S, 3], mask bool [S, S])``; the mask is all False without a defect.

    Example:
        >>> img, mask = render_sample("marble", 0, "test/crack", 0, "crack", image_size=64)
        >>> bool(mask.any()), img.shape
        (True, (64, 64, 3))
    """
    _check_category(category)
    if defect is not None and defect not in DEFECT_TYPES[category]:
        raise ConfigError(
            f"Unknown defect {defect!r} for synthetic category {category!r}; "
            f"valid: {', '.join(DEFECT_TYPES[category])}."
        )
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ConfigError(
            f"image_size must be >= {MIN_IMAGE_SIZE} px (got {image_size}); smaller images cannot show the defects."
        )
    size = int(image_size)
    base_ss, defect_ss, noise_ss = _seed_sequence(seed, category, split, index).spawn(3)
    rng = np.random.default_rng(base_ss)
    scene = _RENDERERS[category](rng, size)
    # Per-image lighting gradient, vignette and colour jitter (drawn before any defect so that the
    # clean and defective renderings share them).
    x, y = _grid(size)
    phi = rng.uniform(0, 2 * np.pi)
    ramp = ((x / size - 0.5) * math.cos(phi) + (y / size - 0.5) * math.sin(phi)) * 2
    light = (1 + rng.uniform(0.04, 0.12) * ramp) * (1 - 0.10 * ((x / size - 0.5) ** 2 + (y / size - 0.5) ** 2))
    gains = (1 + 0.025 * rng.standard_normal(3)) * rng.uniform(0.95, 1.05)
    image, mask = scene.image, np.zeros((size, size), bool)
    if defect is not None:
        defect_rng = np.random.default_rng(defect_ss)
        for _ in range(30):  # bounded retries until the defect is visible but not the whole image
            image, mask = _DEFECTS[category][defect](defect_rng, scene)
            area = mask.mean()
            if area * size * size >= 6 and area <= 0.08:
                break
        else:  # pragma: no cover - the geometry above always lands on the part in practice
            raise RuntimeError(f"could not place a {defect!r} defect on {category!r} (size {size})")
    noise = np.random.default_rng(noise_ss).normal(0.0, 0.012, image.shape).astype(np.float32)
    out = image * light[..., None] * gains.astype(np.float32) + noise
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------------------
# Dataset generation
# --------------------------------------------------------------------------------------
def _check_category(category: str) -> None:
    if category not in SYNTHETIC_CATEGORIES:
        raise ConfigError(f"Unknown synthetic category {category!r}; valid: {', '.join(SYNTHETIC_CATEGORIES)}.")


def _save_png(array: np.ndarray, path: Path) -> None:
    # No pnginfo / no tIME chunk: Pillow writes none unless asked, so bytes depend on pixels only.
    Image.fromarray(array).save(path, format="PNG", compress_level=6)


def _options(
    seed: int, image_size: int, n_train: int, n_test_good: int, n_test_per_defect: int, categories: Sequence[str]
) -> dict:
    return {
        "generator": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_test_per_defect": int(n_test_per_defect),
        "categories": list(categories),
        "defect_types": {c: list(DEFECT_TYPES[c]) for c in categories},
    }


def expected_files(
    categories: Sequence[str] | None = None,
    n_train: int = DEFAULT_N_TRAIN,
    n_test_good: int = DEFAULT_N_TEST_GOOD,
    n_test_per_defect: int = DEFAULT_N_TEST_PER_DEFECT,
) -> list[str]:
    """Relative paths (posix) of every image and mask a generation with these options writes."""
    files = []
    for cat in categories or SYNTHETIC_CATEGORIES:
        files += [f"{cat}/train/good/{i:03d}.png" for i in range(n_train)]
        files += [f"{cat}/test/good/{i:03d}.png" for i in range(n_test_good)]
        for d in DEFECT_TYPES[cat]:
            files += [f"{cat}/test/{d}/{i:03d}.png" for i in range(n_test_per_defect)]
            files += [f"{cat}/ground_truth/{d}/{i:03d}_mask.png" for i in range(n_test_per_defect)]
    return files


def _generate_category(
    category: str, dest: Path, seed: int, image_size: int, n_train: int, n_test_good: int, n_test_per_defect: int
) -> None:
    for split, count in (("train/good", n_train), ("test/good", n_test_good)):
        folder = dest / split
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            _save_png(render_sample(category, seed, split, i, None, image_size)[0], folder / f"{i:03d}.png")
    for defect in DEFECT_TYPES[category]:
        img_dir, gt_dir = dest / "test" / defect, dest / "ground_truth" / defect
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n_test_per_defect):
            image, mask = render_sample(category, seed, f"test/{defect}", i, defect, image_size)
            _save_png(image, img_dir / f"{i:03d}.png")
            _save_png(mask.astype(np.uint8) * 255, gt_dir / f"{i:03d}_mask.png")


def generate_synthetic_dataset(
    out: str | os.PathLike,
    seed: int = 0,
    image_size: int = DEFAULT_IMAGE_SIZE,
    n_train: int = DEFAULT_N_TRAIN,
    n_test_good: int = DEFAULT_N_TEST_GOOD,
    n_test_per_defect: int = DEFAULT_N_TEST_PER_DEFECT,
    categories: Iterable[str] | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> Path:
    """Write the synthetic dataset under ``out`` (MVTec layout) and return ``out``.

    Each category is generated into a temporary folder beside its target and then moved into
    place, replacing an older ``out/<category>`` (so no stale files survive a change of counts);
    ``out/SYNTHETIC.json`` is written last and records seed, options and generator version.
    ``out`` must be empty, missing, or made by this generator (it holds :data:`SYNTHETIC_MARKER_FILE`);
    any other folder is refused unless ``overwrite`` is True, since its category folders would be replaced.

    Args:
        out: dataset root to create.
        seed: RNG seed; the same seed and options give byte-identical files.
        image_size: side of the square images in pixels (>= 32).
        n_train: ``train/good`` images per category.
        n_test_good: ``test/good`` images per category.
        n_test_per_defect: test images (and masks) per defect type.
        categories: subset of :data:`SYNTHETIC_CATEGORIES` (default all).
        progress: print one line per category.
        overwrite: write into a non-empty folder this generator did not make (replacing ``out/<category>``).

    Returns:
        ``Path(out)``.

    Raises:
        ConfigError: bad options. OutputExistsError: ``out`` is a non-empty folder the generator did not write.
        OutputError: ``out`` is a file or not writable.

    Example:
        >>> root = generate_synthetic_dataset("/tmp/syn", seed=3, image_size=64, n_train=2,
        ...                                   n_test_good=1, n_test_per_defect=1, categories=["weave"])
        >>> sorted(p.name for p in (root / "weave" / "ground_truth").iterdir())
        ['hole', 'stain', 'thread']
    """
    cats = list(categories) if categories is not None else list(SYNTHETIC_CATEGORIES)
    if not cats:
        raise ConfigError(f"No categories requested; valid: {', '.join(SYNTHETIC_CATEGORIES)}.")
    for cat in cats:
        _check_category(cat)
    if len(set(cats)) != len(cats):
        raise ConfigError(f"Duplicate categories in {cats}.")
    for name, value, minimum in (
        ("n_train", n_train, 1),
        ("n_test_good", n_test_good, 1),
        ("n_test_per_defect", n_test_per_defect, 1),
    ):
        if int(value) < minimum:
            raise ConfigError(f"{name} must be >= {minimum} (got {value}).")
    if int(image_size) < MIN_IMAGE_SIZE:
        raise ConfigError(f"image_size must be >= {MIN_IMAGE_SIZE} px (got {image_size}).")
    from fsad.utils import check_output_dir

    root = check_output_dir(out, "--out")
    ours = (root / SYNTHETIC_MARKER_FILE).is_file() or (root / SYNTHETIC_INFO_FILE).is_file()
    if root.is_dir() and not ours and not overwrite and any(root.iterdir()):
        raise OutputExistsError(
            f"--out {root} is not empty and was not written by `python -m data_tools synthetic` "
            f"(no {SYNTHETIC_MARKER_FILE} in it); its folders "
            f"{', '.join(c for c in cats if (root / c).exists()) or '(none named like a category)'} "
            "could be replaced. Choose an empty or new folder, or pass --overwrite."
        )
    root.mkdir(parents=True, exist_ok=True)
    (root / SYNTHETIC_MARKER_FILE).write_text(
        "written by python -m data_tools synthetic; its category folders may be regenerated\n"
    )
    info_path = root / SYNTHETIC_INFO_FILE
    if info_path.exists():
        info_path.unlink()  # stale until the new generation completes
    for cat in cats:
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{cat}.", dir=root))
        try:
            _generate_category(cat, tmp, seed, image_size, n_train, n_test_good, n_test_per_defect)
            target = root / cat
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        if progress:
            print(f"  {cat}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    options = _options(seed, image_size, n_train, n_test_good, n_test_per_defect, cats)
    tmp_info = root / f".{SYNTHETIC_INFO_FILE}.tmp"
    tmp_info.write_text(json.dumps(options, indent=2, sort_keys=True) + "\n")
    os.replace(tmp_info, info_path)
    return root


def default_synthetic_root() -> Path:
    """``$FSAD_SYNTHETIC_DIR``, else ``<checkout>/data/synthetic`` in a source checkout, else the user cache
    (never inside an installed package: see :func:`fsad.paths.synthetic_data_dir`)."""
    from fsad.paths import synthetic_data_dir

    return synthetic_data_dir()


def ensure_synthetic_dataset(
    root: str | os.PathLike | None = None,
    seed: int = 0,
    *,
    image_size: int = DEFAULT_IMAGE_SIZE,
    n_train: int = DEFAULT_N_TRAIN,
    n_test_good: int = DEFAULT_N_TEST_GOOD,
    n_test_per_defect: int = DEFAULT_N_TEST_PER_DEFECT,
    categories: Iterable[str] | None = None,
) -> Path:
    """Return a complete synthetic dataset at ``root`` (default :func:`default_synthetic_root`),
    generating it when missing, incomplete, or made with other options or generator version.

    Example:
        >>> root = ensure_synthetic_dataset("/tmp/syn_default", seed=0)   # first call: ~10 s
        >>> ensure_synthetic_dataset("/tmp/syn_default", seed=0) == root  # then instant
        True
    """
    root = Path(root) if root is not None else default_synthetic_root()
    cats = list(categories) if categories is not None else list(SYNTHETIC_CATEGORIES)
    wanted = _options(seed, image_size, n_train, n_test_good, n_test_per_defect, cats)
    info_path = root / SYNTHETIC_INFO_FILE
    try:
        recorded = json.loads(info_path.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == wanted and all(
        (root / rel).is_file() for rel in expected_files(cats, n_train, n_test_good, n_test_per_defect)
    ):
        return root
    return generate_synthetic_dataset(root, seed, image_size, n_train, n_test_good, n_test_per_defect, cats)


# --------------------------------------------------------------------------------------
# Contact sheet
# --------------------------------------------------------------------------------------
def make_preview(
    root: str | os.PathLike,
    out_png: str | os.PathLike | None = None,
    categories: Sequence[str] | None = None,
    n_good: int = 3,
    thumb: int = 128,
) -> Path:
    """Save a contact sheet: per category a row of normal images, then each defect type's first
    image and the same image with its mask outlined in red.

    Returns:
        Path of the PNG (default ``<root>/preview.png``).
    """
    root = Path(root)
    out_png = Path(out_png) if out_png is not None else root / "preview.png"
    cats = [c for c in (categories or SYNTHETIC_CATEGORIES) if (root / c).is_dir()]
    if not cats:
        raise MissingFileError(f"No synthetic categories found under {root}; generate them first.")
    label_h = 14
    cols = n_good + 2 * max(len(DEFECT_TYPES[c]) for c in cats)
    sheet = Image.new("RGB", (cols * (thumb + 4) + 4, len(cats) * (thumb + label_h + 4) + 4), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for row, cat in enumerate(cats):
        y0 = 4 + row * (thumb + label_h + 4)
        tiles: list[tuple[str, Image.Image]] = []
        goods = sorted((root / cat / "train" / "good").glob("*.png"))[:n_good]
        tiles += [(f"{cat} good {p.stem}", Image.open(p).convert("RGB")) for p in goods]
        for d in DEFECT_TYPES[cat]:
            img_p = root / cat / "test" / d / "000.png"
            mask_p = root / cat / "ground_truth" / d / "000_mask.png"
            if not img_p.exists() or not mask_p.exists():
                continue
            img = Image.open(img_p).convert("RGB")
            mask = np.asarray(Image.open(mask_p)) > 127
            edge = mask & ~ndimage.binary_erosion(mask, iterations=max(1, img.width // 128))
            over = np.asarray(img).copy()
            over[mask] = (0.6 * over[mask] + 0.4 * np.array([255, 0, 0])).astype(np.uint8)
            over[edge] = (255, 0, 0)
            tiles += [(d, img), (f"{d} mask", Image.fromarray(over))]
        for col, (label, tile) in enumerate(tiles):
            x0 = 4 + col * (thumb + 4)
            sheet.paste(tile.resize((thumb, thumb), Image.BILINEAR), (x0, y0 + label_h))
            draw.text((x0, y0), label, fill=(0, 0, 0))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out_png, format="PNG")
    return out_png


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------
def _cli(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else default_synthetic_root()
    start = time.perf_counter()
    try:
        root = generate_synthetic_dataset(
            out,
            seed=args.seed,
            image_size=args.image_size,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_per_defect=args.n_test_per_defect,
            categories=args.categories,
            progress=True,
            overwrite=args.overwrite,
        )
    except FsadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_files = len(expected_files(args.categories, args.n_train, args.n_test_good, args.n_test_per_defect))
    print(f"wrote {n_files} images and masks to {root} in {time.perf_counter() - start:.1f} s (seed {args.seed})")
    if args.preview:
        print(f"preview: {make_preview(root, categories=args.categories)}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``synthetic`` sub-command to ``python -m data_tools``."""
    parser = subparsers.add_parser(
        "synthetic",
        help="generate the procedural defect dataset (MVTec layout)",
        description="Generate the procedural synthetic defect dataset in MVTec AD's folder layout. "
        "The same --seed and options give byte-identical files.",
    )
    parser.add_argument(
        "--out",
        default=None,
        help=f"output root (default: {default_synthetic_root()}); must be empty, new, or written by "
        f"this command before ({SYNTHETIC_MARKER_FILE} in it): its category folders are replaced",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out that this command did not write (its folders named like "
        "a category are replaced)",
    )
    parser.add_argument("--seed", type=int, default=0, help="RNG seed (default 0)")
    parser.add_argument("--image-size", type=int, default=DEFAULT_IMAGE_SIZE, help="image side in px (default 256)")
    parser.add_argument("--n-train", type=int, default=DEFAULT_N_TRAIN, help="train/good images per category")
    parser.add_argument("--n-test-good", type=int, default=DEFAULT_N_TEST_GOOD, help="test/good images per category")
    parser.add_argument(
        "--n-test-per-defect", type=int, default=DEFAULT_N_TEST_PER_DEFECT, help="test images per defect type"
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        choices=SYNTHETIC_CATEGORIES,
        metavar="CAT",
        help=f"subset of {', '.join(SYNTHETIC_CATEGORIES)}",
    )
    parser.add_argument("--preview", action="store_true", help="also save <out>/preview.png (contact sheet)")
    parser.set_defaults(func=_cli)
    return parser
