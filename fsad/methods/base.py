"""The interface every few-shot method follows (:class:`FewShotMethod`) and what all methods share.

A method turns k support images into a ready normal model (``fit``) and then scores test images
(``score``) with a patch-level distance map at feature resolution. Upsampling, blurring, image
scores and metrics are shared by every method and live in :mod:`fsad.anomaly_map` and
:mod:`fsad.metrics`, so the comparison between methods differs only in the part that should differ.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

# Batch size for feature extraction: bounded so 22 views x k supports never materialise at once.
DEFAULT_FEATURE_BATCH = 32


@runtime_checkable
class FewShotMethod(Protocol):
    """What evaluation, figures and widgets need from a method (the type :func:`fsad.evaluate.build_method`
    returns and checks). Test features do not depend on the supports, so evaluation embeds the test set once
    per category and scores it against every support set: ``fit(supports)``, then
    ``score_features(embed(images))`` gives the patch distances that :func:`maps_and_image_scores` turns into
    maps and image scores (:func:`fsad.scoring.fit_and_score` does both steps for all three).

    A method may also set ``image_score`` (a rule name, see :func:`maps_and_image_scores`) and then provide
    ``score_features_with_image_scores(features) -> (distances, image_scores)``.

    The kit's methods are ``nn.Module`` s whose fitted state is buffers (the Gaussian's factors in
    :class:`fsad.gaussian.PositionalGaussian`, PatchCore's ``bank``) beside the backbone as a submodule, so
    ``.to(device)``, ``state_dict()`` and ``load_state_dict()`` are torch's own and a saved state loads with
    ``torch.load(weights_only=True)``.
    """

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
    method: FewShotMethod, features: torch.Tensor, image_size: int | tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Anomaly maps ``[M, S, S]`` and image scores ``[M]`` of test features, by the method's image-score rule.

    The one place where a method's distances become maps and image scores, called by
    :func:`fsad.scoring.fit_and_score`, the path :func:`fsad.evaluate.run_evaluation`, :mod:`fsad.widgets` and
    :func:`fsad.figures.localisation_examples` share, so that all three score an image the same way. Maps: :func:`fsad.anomaly_map.anomaly_maps` (upsampling + blur) of
    ``method.score_features(features)``. Image scores: a method's ``image_score`` attribute names the rule
    (PatchCore: ``"patch_max"``, the max of the raw patch distances as in the paper, or ``"reweighted"``,
    Eq. 7, both from ``score_features_with_image_scores``); without it, or with ``"map_max"``, the image
    score is the max of the upsampled, blurred map (:func:`fsad.anomaly_map.image_scores`, RegAD/PaDiM).

    Example:
        >>> from fsad.methods import GaussianMethod
        >>> from fsad.models.regad import RegADModel
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
