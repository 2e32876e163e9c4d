"""Dataset constants: category names, official MVTec AD counts and ImageNet normalisation.

Example:
    >>> from data_tools.constants import MVTEC_CATEGORIES, MVTEC_TRAIN_GOOD_COUNTS
    >>> len(MVTEC_CATEGORIES), sum(MVTEC_TRAIN_GOOD_COUNTS.values())
    (15, 3629)
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

# ImageNet channel statistics used by every torchvision ImageNet backbone (torchvision docs;
# RegAD's public code normalises with the same values).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: The 15 MVTec AD categories, spelled as the folders of the official archive
#: (Bergmann et al., CVPR 2019 / IJCV 2021).
MVTEC_CATEGORIES: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "carpet",
    "grid",
    "hazelnut",
    "leather",
    "metal_nut",
    "pill",
    "screw",
    "tile",
    "toothbrush",
    "transistor",
    "wood",
    "zipper",
)

#: The 6 MPDD categories (Jezek et al., ICUMT 2021; github.com/stepanje/MPDD).
MPDD_CATEGORIES: tuple[str, ...] = (
    "bracket_black",
    "bracket_brown",
    "bracket_white",
    "connector",
    "metal_plate",
    "tubes",
)

#: Number of ``train/good`` images per MVTec AD category in the official release; the files
#: are named ``000.png`` … ``(n-1).png``. 3,629 in all. Read-only so that no caller edits it.
MVTEC_TRAIN_GOOD_COUNTS: Mapping[str, int] = MappingProxyType(
    {
        "bottle": 209,
        "cable": 224,
        "capsule": 219,
        "carpet": 280,
        "grid": 264,
        "hazelnut": 391,
        "leather": 245,
        "metal_nut": 220,
        "pill": 267,
        "screw": 320,
        "tile": 230,
        "toothbrush": 60,
        "transistor": 213,
        "wood": 247,
        "zipper": 240,
    }
)

#: Dataset families understood by :mod:`data_tools` (``--dataset`` choices).
DATASETS: tuple[str, ...] = ("mvtec", "mpdd", "synthetic")

#: Known category names per dataset; ``None`` means any folder name is accepted.
KNOWN_CATEGORIES: Mapping[str, tuple[str, ...] | None] = MappingProxyType(
    {
        "mvtec": MVTEC_CATEGORIES,
        "mpdd": MPDD_CATEGORIES,
        "synthetic": None,
    }
)

#: File suffixes read as images (MVTec and MPDD ship PNG; the others are accepted for user data).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Suffix MVTec AD and MPDD give ground-truth masks: ``ground_truth/<defect>/<stem>_mask.png``.
MASK_SUFFIX: str = "_mask.png"

#: The name of the normal class folder in both splits.
GOOD: str = "good"

#: Support-set sizes of the RegAD protocol (k = 2, 4, 8 in the paper's tables; 1, 16, 32 extend it).
DEFAULT_KS: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
#: Support-set draws per (category, k): the RegAD paper averages 10 runs.
DEFAULT_RUNS: int = 10
