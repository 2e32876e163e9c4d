"""Real sample images for the tutorials: the shared data subsets beside the checkout, else the synthetic set."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

# The real-data subsets live beside the checkout (as in tests/conftest.py); FSAD_SHARED_DATA overrides.
SHARED_DATA_ENV = "FSAD_SHARED_DATA"


def shared_data_root() -> Path:
    """``$FSAD_SHARED_DATA``, else ``<checkout>/../shared/data`` in a source checkout (may not exist), else ``./data``."""
    import os

    from fsad.paths import source_checkout

    if os.environ.get(SHARED_DATA_ENV):
        return Path(os.environ[SHARED_DATA_ENV])
    root = source_checkout()
    return root.parent / "shared" / "data" if root is not None else Path.cwd() / "data"


def sample_image(
    image_size: int,
    prefer: Sequence[str] = ("mvtec_ad_subset/bottle/test/broken_large/000.png", "mpdd_subset/metal_plate/test"),
) -> tuple[torch.Tensor, str]:
    """A real defective image from the shared subsets when present, else one from the synthetic set.

    Returns:
        (ImageNet-normalised ``[3,S,S]`` tensor, its path).
    """
    from data_tools.datasets import image_files, load_image
    from data_tools.synthetic import ensure_synthetic_dataset

    root = shared_data_root()
    for relative in prefer:
        candidate = root / relative
        if candidate.is_file():
            return load_image(candidate, image_size), str(candidate)
        if candidate.is_dir():
            files = [
                f
                for sub in sorted(candidate.iterdir())
                if sub.is_dir() and sub.name != "good"
                for f in image_files(sub)
            ]
            if files:
                return load_image(files[0], image_size), str(files[0])
    synthetic = Path(ensure_synthetic_dataset(seed=0)) / "washer" / "test" / "scratch"
    first = image_files(synthetic)[0]
    return load_image(first, image_size), str(first)
