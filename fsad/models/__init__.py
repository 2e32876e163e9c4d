"""Pure nn.Module building blocks of RegAD / RCM-FSAD (no I/O, no plotting).

``attention`` and ``deform`` (RCM-FSAD) are imported lazily by :class:`RegADModel` when switched on.
"""

from __future__ import annotations

from fsad.models.backbone import (
    BACKBONE_TABLE,
    STAGE_CHANNELS,
    STAGE_STRIDES,
    BackboneSpec,
    FeatureExtractor,
    backbone_names,
    register_backbone,
)
from fsad.models.regad import ATTENTION_KINDS, RegADModel, RegADOutput
from fsad.models.siamese import SiameseEncoder, SiamesePredictor, negative_cosine, registration_loss
from fsad.models.stn import (
    IDENTITY_PARAMS,
    MODE_PARAMS,
    STN_MODES,
    SpatialTransformer,
    compose_theta,
    invert_theta,
    params_to_theta,
    theta_to_params,
    warp,
)

__all__ = [
    "ATTENTION_KINDS",
    "BACKBONE_TABLE",
    "BackboneSpec",
    "backbone_names",
    "register_backbone",
    "IDENTITY_PARAMS",
    "MODE_PARAMS",
    "STAGE_CHANNELS",
    "STAGE_STRIDES",
    "STN_MODES",
    "FeatureExtractor",
    "RegADModel",
    "RegADOutput",
    "SiameseEncoder",
    "SiamesePredictor",
    "SpatialTransformer",
    "compose_theta",
    "invert_theta",
    "negative_cosine",
    "params_to_theta",
    "registration_loss",
    "theta_to_params",
    "warp",
]
