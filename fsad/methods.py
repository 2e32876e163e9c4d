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
    """Apply ``embed`` to ``images`` in batches on the images' device and concatenate.

    The result is written batch by batch into one preallocated tensor (in the memory format of the
    first batch's result, e.g. ``channels_last``) instead of ``torch.cat`` of a list, so the features
    (1 GiB for 176 augmented supports at 448x56x56) are never held twice. Each batch is handed to
    ``embed`` in ``channels_last`` memory format (same values): oneDNN's CPU convolutions, pooling and
    bilinear upsampling run faster on it, and features that come out channels-last turn into
    ``[positions, channels]`` rows (PatchCore's bank, the Gaussian's per-position vectors) without a
    transpose.
    """

    def run(batch: torch.Tensor) -> torch.Tensor:
        if batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return embed(batch)

    if len(images) <= batch_size:
        return run(images)
    first = run(images[:batch_size])
    fmt = (
        torch.channels_last
        if first.dim() == 4 and not first.is_contiguous() and first.is_contiguous(memory_format=torch.channels_last)
        else torch.contiguous_format
    )
    out = torch.empty((len(images), *first.shape[1:]), dtype=first.dtype, device=first.device, memory_format=fmt)
    out[:batch_size].copy_(first)
    del first
    for i in range(batch_size, len(images), batch_size):
        out[i : i + batch_size].copy_(run(images[i : i + batch_size]))
    return out


def maps_and_image_scores(
    method: Any, features: torch.Tensor, image_size: int | tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps ``[M, S, S]`` and image scores ``[M]`` of test features, by the method's image-score rule.

    The one place where a method's distances become maps and image scores, used by
    :func:`fsad.evaluate.run_evaluation`, :mod:`fsad.widgets` and :mod:`fsad.figures` so that all three score
    an image the same way. Maps: :func:`fsad.anomaly_map.anomaly_maps` (upsampling + blur) of
    ``method.score_features(features)``. Image scores: a method's ``image_score`` attribute names the rule
    (PatchCore: ``"patch_max"``, the max of the raw patch distances as in the paper, or ``"reweighted"``,
    Eq. 7, both from ``score_features_with_image_scores``); without it, or with ``"map_max"``, the image
    score is the max of the upsampled, blurred map (:func:`fsad.anomaly_map.image_scores`, RegAD/PaDiM).

    Example:
        >>> method = GaussianMethod(RegADModel(image_size=64), augment_families=())
        >>> method.fit(torch.randn(2, 3, 64, 64))
        >>> maps, scores = maps_and_image_scores(method, method.embed(torch.randn(3, 3, 64, 64)), 64)
        >>> maps.shape, scores.shape
        (torch.Size([3, 64, 64]), torch.Size([3]))
    """
    from fsad.anomaly_map import anomaly_maps, image_scores

    rule = getattr(method, "image_score", "map_max")
    if rule == "map_max":
        maps = anomaly_maps(method.score_features(features), image_size)
        return maps, image_scores(maps)
    distances, scores = method.score_features_with_image_scores(features)
    return anomaly_maps(distances, image_size), scores


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

    def __init__(
        self,
        model: torch.nn.Module,
        augment_families: Sequence[str] = AUGMENT_FAMILIES,
        channel_subset: int | None = None,
        seed: int = 0,
        name: str = "regad",
        feature_batch: int = DEFAULT_FEATURE_BATCH,
    ) -> None:
        self.model = model.eval()
        self.augment_families = tuple(augment_families)
        self.channel_subset = channel_subset
        self.seed = seed
        self.name = name
        self.feature_batch = feature_batch
        self.gaussian = PositionalGaussian()

    def _embed_shape(self, images: torch.Tensor) -> tuple[int, int, int, int] | None:
        """Output shape of a model with ``embed(x, out=...)`` (a RegADModel), else None."""
        size = getattr(self.model, "image_size", None)
        channels = getattr(self.model, "embed_channels", None)
        if (
            not isinstance(size, int)
            or not isinstance(channels, int)
            or images.dim() != 4
            or tuple(images.shape[-2:]) != (size, size)
        ):
            return None
        side = size // 4  # stage-1 stride of both backbones
        return len(images), channels, side, side

    def _embed_into(self, images: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        for i in range(0, len(images), self.feature_batch):
            self.model.embed(images[i : i + self.feature_batch], out=out[i : i + self.feature_batch])
        return out

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Embeddings ``[B, C, h, w]`` of images ``[B, 3, S, S]`` (``model.embed`` in batches).

        A :class:`~fsad.models.regad.RegADModel` writes each batch straight into one preallocated
        ``channels_last`` result (``embed(x, out=...)``), saving a copy of the whole feature tensor.
        """
        shape = self._embed_shape(images)
        if shape is None or len(images) <= self.feature_batch:
            return batched_embed(self.model.embed, images, self.feature_batch)
        out = torch.empty(shape, dtype=images.dtype, device=images.device, memory_format=torch.channels_last)
        return self._embed_into(images, out)

    @torch.no_grad()
    def fit(self, supports: torch.Tensor) -> None:
        views = augment_supports(supports, self.augment_families) if self.augment_families else supports
        shape = self._embed_shape(views)
        if shape is not None and self.channel_subset is None and shape[0] < shape[1]:
            # Low-rank Gaussian (N < C): the supports' features are written straight into the
            # position-major buffer the fit keeps as its factor (same numbers, one 1 GiB copy less).
            buffer = PositionalGaussian.position_major_buffer(*shape, dtype=views.dtype, device=views.device)
            self.gaussian.fit(self._embed_into(views, buffer), overwrite_features=True)
            return
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
        return {
            "method": self.name,
            "augment_families": list(self.augment_families),
            "channel_subset": self.channel_subset,
            "gaussian": self.gaussian.method_,
        }
