"""Few-shot scoring methods behind one interface: RegAD (and PaDiM-k as its no-STN, untrained case), PatchCore-k.

A method turns k support images into a ready normal model (``fit``) and then scores test images
(``score``) with a patch-level distance map at feature resolution. Upsampling, blurring, image
scores and metrics are shared by every method and live in :mod:`fsad.anomaly_map` and
:mod:`fsad.metrics`, so the comparison between methods differs only in the part that should differ.
"""
from __future__ import annotations

from typing import Any, Protocol, Sequence

import torch

from fsad.augment import AUGMENT_FAMILIES, augment_supports
from fsad.gaussian import PositionalGaussian, random_channel_subset

METHODS = ("regad", "padim", "patchcore")
# Batch size for feature extraction: bounded so 22 views x k supports never materialise at once.
DEFAULT_FEATURE_BATCH = 32


class FewShotMethod(Protocol):
    """What evaluation needs from a method. Test features do not depend on the supports, so
    evaluation embeds the test set once per category and scores it against every support set."""

    name: str

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Features of ImageNet-normalised images ``[B,3,S,S]`` (batched internally)."""

    def fit(self, supports: torch.Tensor) -> None:
        """Build the normal model from ImageNet-normalised supports ``[k,3,S,S]`` (augmentation included)."""

    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        """Patch-level anomaly distances ``[B,h,w]`` for features from :meth:`embed`."""

    def describe(self) -> dict[str, Any]:
        """Options that a results file records."""


def batched_embed(embed, images: torch.Tensor, batch_size: int = DEFAULT_FEATURE_BATCH) -> torch.Tensor:
    """Apply ``embed`` to ``images`` in batches on the images' device and concatenate."""
    return torch.cat([embed(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


class GaussianMethod:
    """RegAD's normal model: per-position Gaussian over registered, inverse-warped features.

    With an untrained model and no STN this is exactly PaDiM-k (Defard et al., 2021) on k supports:
    the 'none' row of the paper's Table 5 without augmentation and the 'A' row with it.

    Args:
        model: a :class:`fsad.models.regad.RegADModel` (eval mode is set here).
        augment_families: support augmentation families (empty for the 'none' row).
        channel_subset: optional number d of random channels (PaDiM's speed knob); None keeps all.
        seed: seed of the channel subset.
        name: "regad" or "padim", recorded in results.
    """

    def __init__(self, model: torch.nn.Module, augment_families: Sequence[str] = AUGMENT_FAMILIES,
                 channel_subset: int | None = None, seed: int = 0, name: str = "regad",
                 feature_batch: int = DEFAULT_FEATURE_BATCH) -> None:
        self.model = model.eval()
        self.augment_families = tuple(augment_families)
        self.channel_subset = channel_subset
        self.seed = seed
        self.name = name
        self.feature_batch = feature_batch
        self.gaussian = PositionalGaussian()

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return batched_embed(self.model.embed, images, self.feature_batch)

    @torch.no_grad()
    def fit(self, supports: torch.Tensor) -> None:
        views = augment_supports(supports, self.augment_families) if self.augment_families else supports
        features = self.embed(views)
        channels = None
        if self.channel_subset is not None:
            channels = random_channel_subset(features.shape[1], self.channel_subset, self.seed)
        self.gaussian.fit(features, channels=channels)

    @torch.no_grad()
    def score_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.gaussian.mahalanobis(features)

    def score(self, images: torch.Tensor) -> torch.Tensor:
        return self.score_features(self.embed(images))

    def describe(self) -> dict[str, Any]:
        return {"method": self.name, "augment_families": list(self.augment_families),
                "channel_subset": self.channel_subset, "gaussian": self.gaussian.method_}
