"""RegAD (Huang et al., ECCV 2022) without registration training or with a trained checkpoint: the
per-position Gaussian over (optionally STN-registered) features of augmented supports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from fsad.augment import AUGMENT_FAMILIES, augment_supports
from fsad.config import option
from fsad.gaussian import PositionalGaussian, random_channel_subset
from fsad.methods.base import DEFAULT_FEATURE_BATCH, batched_embed
from fsad.methods.registry import MethodSpec, register_method


class GaussianMethod(torch.nn.Module):
    """RegAD's normal model: per-position Gaussian over registered, inverse-warped features.

    With an untrained model and no STN this is exactly PaDiM-k (Defard et al., 2021) on k supports:
    the 'none' row of the paper's Table 5 without augmentation and the 'A' row with it.

    An ``nn.Module`` owning ``model`` and the fitted :class:`~fsad.gaussian.PositionalGaussian`
    (``gaussian``) as submodules: ``.to(device)`` moves both and ``state_dict()`` holds the model's
    weights and the Gaussian's buffers (``gaussian.*``), everything needed to score again.

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
        super().__init__()
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

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """:meth:`score`."""
        return self.score(images)

    def describe(self) -> dict[str, Any]:
        return {
            "method": self.name,
            "augment_families": list(self.augment_families),
            "channel_subset": self.channel_subset,
            "gaussian": self.gaussian.method_,
        }


@dataclass(kw_only=True)
class GaussianOptions:
    """Options of the per-position Gaussian (RegAD and PaDiM)."""

    channel_subset: int | None = option(
        "--channel-subset",
        "PaDiM's random channel subset size d (default: all channels)",
        default=None,
        type=int,
        valid=lambda d: d is None or d >= 1,
        requirement="must be a positive number of channels",
    )


@dataclass(kw_only=True)
class RegADOptions(GaussianOptions):
    """RegAD's options: the Gaussian's, and a registration-trained checkpoint."""

    checkpoint: str | None = option(
        "--checkpoint", "registration-trained checkpoint (default: untrained, the 'A' row)", default=None
    )


def build_gaussian(config: Any, model: torch.nn.Module) -> GaussianMethod:
    """RegAD's and PaDiM's factory: a :class:`GaussianMethod` on the whole model (STNs included for RegAD)."""
    return GaussianMethod(
        model,
        augment_families=config.augment_families,
        channel_subset=config.channel_subset,
        seed=config.seed,
        name=config.method,
    )


register_method(
    MethodSpec(
        name="regad",
        label="regad",
        description="augmented Gaussian, optional trained STNs",
        options_class=RegADOptions,
        shared_options=("stn_mode", "attention", "dcn"),
        uses_stn=True,
        accepts_checkpoint=True,
        augments_by_default=True,
        build=build_gaussian,
    )
)
