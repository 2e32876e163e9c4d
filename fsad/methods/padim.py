"""PaDiM-k (Defard et al., 2021) on k supports: RegAD's Gaussian with an untrained model and no STN (the
'none' row of RegAD's Table 5 without augmentation, the 'A' row with it)."""

from __future__ import annotations

from fsad.methods.regad import GaussianOptions, build_gaussian
from fsad.methods.registry import MethodSpec, register_method

register_method(
    MethodSpec(
        name="padim",
        label="padim",
        description="Gaussian without STNs",
        options_class=GaussianOptions,
        uses_stn=False,
        accepts_checkpoint=False,
        augments_by_default=True,
        build=build_gaussian,
    )
)
