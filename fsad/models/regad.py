"""RegAD model: backbone stages each followed by an STN, SimSiam heads on the last stage (pure nn.Module)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsad.models.backbone import FeatureExtractor, backbone_spec
from fsad.models.siamese import SiameseEncoder, SiamesePredictor, registration_loss
from fsad.models.stn import DEFAULT_STN_MODE, STN_MODES, SpatialTransformer, compose_theta, invert_theta, warp_if_needed

__all__ = ["ATTENTION_KINDS", "RegADOutput", "RegADModel"]

ATTENTION_KINDS = ("none", "tam", "mam")  # RCM-FSAD ablation rows: R18, +TAM, +MAM
# The paper's input size (RegAD §4.1: "224×224 images").
DEFAULT_IMAGE_SIZE = 224
# The deepest stage has stride 16 and its STN pools twice more; 32 px keeps every map at least 2×2 and the
# sizes exact (no rounding between stages).
IMAGE_SIZE_MULTIPLE = 32


@dataclass
class RegADOutput:
    """Output of :meth:`RegADModel.forward`.

    Attributes:
        features: registered (STN-warped) stage features ``[f1, f2, f3]``, each in the frame produced by all STNs
            up to that stage.
        thetas: each stage's θ ``[N, 2, 3]`` (``None`` entries when the STNs are off).
        z: encoder output on ``f3``, ``[N, C3, H/16, W/16]``.
        p: predictor output on ``z``, same shape.
    """

    features: list[Tensor]
    thetas: list[Tensor | None]
    z: Tensor
    p: Tensor


class RegADModel(nn.Module):
    """Registration network of RegAD (ECCV 2022), with RCM-FSAD's attention and DCNv2 switches.

    ``x → [attention] → stage1 → STN1 → stage2 → STN2 → stage3 → STN3 → encoder → predictor``. Training maximises
    the cosine similarity of ``p`` of one image and ``z`` of another of the same category
    (:func:`fsad.models.siamese.registration_loss`); at test time :meth:`embed` gives the registered features,
    warped back to the input frame, for the per-position Gaussian.

    Args:
        backbone: ``"resnet18"`` (paper) or ``"mobilenet_v2"`` (offline ImageNet alternative).
        image_size: square input size, a multiple of 32 and >= 32 (paper: 224). The STNs' FC sizes depend on it.
        stn_mode: one of ``STN_MODES`` (paper default ``"rotation_scale"``), or ``None`` for no STN (the 'S'
            ablation switched off).
        attention: ``"none"``, ``"tam"`` or ``"mam"`` — RCM-FSAD attention on the *input image* (3 channels)
            before the backbone, built by ``fsad.models.attention.build_attention``.
        dcn: RCM-FSAD's DCNv2: the encoder's first conv becomes a 3×3 modulated deformable conv.
        backbone_state_dict: torchvision state dict for the backbone (``fsad.weights.load_backbone_weights``),
            or ``None`` for random init.
        seed: if given, all parameters are initialised from this seed (the global RNG is left untouched).
        encoder_out_bn: BN after the encoder's last conv (SimSiam); the authors' code has none.
        predictor_hidden: predictor width; ``None`` = C as in the authors' code.

    Example:
        >>> model = RegADModel("resnet18", image_size=224).eval()
        >>> out = model(torch.randn(1, 3, 224, 224))
        >>> [f.shape[1:] for f in out.features], out.z.shape
        ([torch.Size([64, 56, 56]), torch.Size([128, 28, 28]), torch.Size([256, 14, 14])], torch.Size([1, 256, 14, 14]))
        >>> model.embed(torch.randn(1, 3, 224, 224)).shape
        torch.Size([1, 448, 56, 56])
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        image_size: int = DEFAULT_IMAGE_SIZE,
        stn_mode: str | None = DEFAULT_STN_MODE,
        attention: str = "none",
        dcn: bool = False,
        backbone_state_dict: Mapping[str, Tensor] | None = None,
        *,
        seed: int | None = None,
        encoder_out_bn: bool = False,
        predictor_hidden: int | None = None,
    ) -> None:
        super().__init__()
        spec = backbone_spec(backbone)  # a clear error listing the valid backbones
        if (
            isinstance(image_size, bool)
            or not isinstance(image_size, int)
            or image_size < IMAGE_SIZE_MULTIPLE
            or image_size % IMAGE_SIZE_MULTIPLE
        ):
            raise ValueError(
                f"image_size must be an int multiple of {IMAGE_SIZE_MULTIPLE} and >= "
                f"{IMAGE_SIZE_MULTIPLE} (e.g. 224, the paper's size, or 64 for quick tests); "
                f"got {image_size!r}"
            )
        if stn_mode is not None and stn_mode not in STN_MODES:
            raise ValueError(
                f"unknown stn_mode {stn_mode!r}; valid modes: {', '.join(STN_MODES)}, or None to switch the STNs off"
            )
        if attention not in ATTENTION_KINDS:
            raise ValueError(f"unknown attention {attention!r}; valid kinds: {', '.join(ATTENTION_KINDS)}")
        if not isinstance(dcn, bool):
            raise ValueError(f"dcn must be True or False, got {dcn!r}")
        self._config: dict[str, Any] = dict(
            backbone=backbone,
            image_size=image_size,
            stn_mode=stn_mode,
            attention=attention,
            dcn=dcn,
            seed=seed,
            encoder_out_bn=encoder_out_bn,
            predictor_hidden=predictor_hidden,
        )
        self._backbone_frozen = False

        rng = torch.random.fork_rng(devices=[], enabled=seed is not None)
        with rng:
            if seed is not None:
                torch.manual_seed(seed)
            if attention == "none":
                self.attention: nn.Module = nn.Identity()
            else:
                from fsad.models.attention import build_attention  # lazy: only the RCM-FSAD ablation needs it

                self.attention = build_attention(attention, 3)
            self.backbone = FeatureExtractor(backbone, backbone_state_dict)
            channels = spec.channels
            if stn_mode is None:
                self.stns = None
            else:
                self.stns = nn.ModuleList(
                    SpatialTransformer(c, image_size // s, stn_mode) for c, s in zip(channels, spec.strides)
                )
            self.encoder = SiameseEncoder(channels[-1], out_bn=encoder_out_bn, dcn=dcn)
            self.predictor = SiamesePredictor(channels[-1], hidden=predictor_hidden)
        self.channels: tuple[int, int, int] = channels

    # ------------------------------------------------------------------ properties
    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments (all but the state dict): ``RegADModel(**model.config)`` rebuilds it."""
        return dict(self._config)

    @property
    def stn_mode(self) -> str | None:
        return self._config["stn_mode"]

    @property
    def image_size(self) -> int:
        return self._config["image_size"]

    @property
    def embed_channels(self) -> int:
        """Channels of :meth:`embed` (448 for ResNet-18, 152 for MobileNetV2)."""
        return sum(self.channels)

    # ------------------------------------------------------------------ freezing
    def freeze_backbone(self, freeze: bool = True) -> RegADModel:
        """Freeze (or unfreeze) the backbone: no gradients, and its BatchNorms stay in eval mode.

        The kit's training freezes the ImageNet backbone by default: with a handful of normal images per
        category, fine-tuning it (and updating BN statistics from small same-category batches) can drift away from
        the generic ImageNet features that the training-free Gaussian relies on (at 224 px the ResNet-18 stages
        are 2.8 M of the model's 7.7 M parameters; the STNs' localisation nets are 4.6 M). Note that the authors' public code does *not* freeze it: their ``stn_net`` is the ResNet with
        the STNs inside, its optimiser is ``SGD(STN.parameters())`` and ``STN.train()`` puts its BN in train mode,
        so the backbone is fine-tuned at lr 1e-4. Call ``freeze_backbone(False)`` to reproduce that.

        Returns:
            self (for chaining).
        """
        self._backbone_frozen = bool(freeze)
        for param in self.backbone.parameters():
            param.requires_grad_(not freeze)
        self.train(self.training)
        return self

    @property
    def backbone_frozen(self) -> bool:
        return self._backbone_frozen

    def train(self, mode: bool = True) -> RegADModel:
        super().train(mode)
        if self._backbone_frozen:
            self.backbone.eval()  # frozen BN must keep its (ImageNet) running statistics
        return self

    # ------------------------------------------------------------------ forward passes
    def _check_input(self, x: Tensor) -> None:
        size = self.image_size
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            raise ValueError(
                f"RegADModel built for images [N, 3, {size}, {size}] got {tuple(x.shape)}; resize the "
                f"images or build the model with image_size={x.shape[-1] if x.ndim == 4 else '?'}"
            )

    def registered_features(self, x: Tensor) -> tuple[list[Tensor], list[Tensor | None]]:
        """Stage features after their STNs, and the θ of each STN (no Siamese heads).

        Args:
            x: images ``[N, 3, S, S]`` (ImageNet-normalised).

        Returns:
            ``([f1, f2, f3], [θ1, θ2, θ3])``; θ entries are ``None`` when the STNs are off.
        """
        self._check_input(x)
        x = self.attention(x)
        features: list[Tensor] = []
        thetas: list[Tensor | None] = []
        for i, stage in enumerate(self.backbone.stages):
            x = stage(x)
            theta = None
            if self.stns is not None:
                x, theta = self.stns[i](x)
            features.append(x)
            thetas.append(theta)
        return features, thetas

    def heads(self, f3: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, p)`` of the Siamese heads for last-stage features (e.g. the mean of k supports' ``f3``)."""
        z = self.encoder(f3)
        return z, self.predictor(z)

    def forward(self, x: Tensor) -> RegADOutput:
        """Registered features, θs and the Siamese heads' outputs for images ``[N, 3, S, S]``."""
        features, thetas = self.registered_features(x)
        z, p = self.heads(features[-1])
        return RegADOutput(features=features, thetas=thetas, z=z, p=p)

    def pair_loss(self, x_a: Tensor, x_b: Tensor) -> Tensor:
        """Registration loss of two batches of images paired item by item (same category per pair)."""
        a, b = self(x_a), self(x_b)
        return registration_loss(a.p, b.p, a.z, b.z)

    @staticmethod
    def back_warp(features: list[Tensor], thetas: list[Tensor | None]) -> list[Tensor]:
        """Warp each stage's registered features back to the input frame.

        Stage i's features were computed from maps already warped by θ1…θ(i-1) and then warped by θi, so going back
        undoes θi, then θ(i-1), …, then θ1 — as the authors' code does (``stn2_output = fix(fix(x2, θ2⁻¹), θ1⁻¹)``).
        The kit composes those inverses into one θ per stage (:func:`compose_theta`) so each map is interpolated
        once instead of i times. θ is detached: this is an evaluation-time operation. A composed θ that is exactly
        the identity (untrained STNs) returns the map itself, without a warp (exact; see
        :func:`fsad.models.stn.warp_if_needed`).

        Args:
            features: ``[f1, f2, f3]`` from :meth:`registered_features`.
            thetas: their θs (all ``None`` → features returned unchanged).

        Returns:
            list of 3 tensors with the shapes of ``features``.
        """
        out: list[Tensor] = []
        back: Tensor | None = None
        for feat, theta in zip(features, thetas):
            if theta is None:
                out.append(feat)
                continue
            inv = invert_theta(theta.detach())
            back = inv if back is None else compose_theta(inv, back)
            out.append(warp_if_needed(feat.detach(), back))
        return out

    def embed(self, x: Tensor, out: Tensor | None = None) -> Tensor:
        """Registered features warped back to the input frame, upsampled to stage-1 size and concatenated.

        Runs in eval mode (BN running statistics) under ``torch.no_grad`` and restores the previous mode, since
        the embedding feeds the per-position Gaussian and must not depend on the batch it is computed in.

        Speed (same values up to float rounding, ~1e-6 relative): the images go through the network in
        ``channels_last`` memory format, which oneDNN's CPU convolutions and bilinear upsampling run faster
        (measured ResNet-18, 1 thread: forward 1.08 s vs 1.48 s per 32 images, upsampling 4x faster), and the
        result is channels-last too, so the per-position Gaussian reads each position's channel vector
        contiguously. Untrained STNs cost nothing (see :meth:`SpatialTransformer.predict_theta` and
        :meth:`back_warp`).

        Args:
            x: images ``[N, 3, S, S]``.
            out: optional preallocated ``[N, sum(channels), S/4, S/4]`` tensor (any memory layout, e.g. a slice
                of a larger batch's buffer) that the stages are written into, saving one copy of the result.

        Returns:
            ``[N, sum(channels), S/4, S/4]`` — ``[N, 448, 56, 56]`` for ResNet-18 at 224 px, 152 channels for
            MobileNetV2 — in ``channels_last`` memory format (or ``out``). Upsampling is bilinear
            (``align_corners=False``).
        """
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                features, thetas = self.registered_features(x.contiguous(memory_format=torch.channels_last))
                aligned = self.back_warp(features, thetas)
                size = aligned[0].shape[-2:]
                shape = (x.shape[0], self.embed_channels, *size)
                if out is None:
                    out = torch.empty(
                        shape, dtype=aligned[0].dtype, device=aligned[0].device, memory_format=torch.channels_last
                    )
                elif tuple(out.shape) != shape:
                    raise ValueError(f"out must have shape {list(shape)}, got {list(out.shape)}")
                start = 0
                for i, f in enumerate(aligned):
                    if i > 0:  # channels-last input keeps the fast channels-last upsampling kernel
                        f = F.interpolate(
                            f.contiguous(memory_format=torch.channels_last),
                            size=size,
                            mode="bilinear",
                            align_corners=False,
                        )
                    out[:, start : start + f.shape[1]].copy_(f)
                    start += f.shape[1]
                return out
        finally:
            self.train(was_training)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self._config.items())
