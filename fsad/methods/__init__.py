"""Few-shot scoring methods behind one interface: RegAD (and PaDiM-k as its no-STN, untrained case), PatchCore-k.

A method turns k support images into a ready normal model (``fit``) and then scores test images
(``score_features`` of ``embed``) with a patch-level distance map at feature resolution. Upsampling, blurring,
image scores and metrics are shared by every method and live in :mod:`fsad.anomaly_map` and
:mod:`fsad.metrics`, so the comparison between methods differs only in the part that should differ.

Layout: :mod:`fsad.methods.base` (the :class:`FewShotMethod` protocol, shared helpers),
:mod:`fsad.methods.registry` (:class:`MethodSpec`, :func:`register_method`), and one module per method that
declares its spec. A new method is one module plus one line below importing it (see CONTRIBUTING.md).
"""

from __future__ import annotations

from fsad.methods.base import DEFAULT_FEATURE_BATCH, FewShotMethod, batched_embed, maps_and_image_scores
from fsad.methods.registry import (
    MethodSpec,
    find_method_spec,
    method_names,
    method_spec,
    register_method,
    unregister_method,
)

# One line per method: importing the module registers it (the order is the CLI's order).
from fsad.methods import regad, padim, patchcore  # noqa: E402, F401  isort: skip
from fsad.methods.regad import GaussianMethod  # noqa: E402

# The built-in methods' names, for code that imported this constant; method_names() also lists methods
# registered later (tests, plugins).
METHODS = method_names()

__all__ = [
    "DEFAULT_FEATURE_BATCH",
    "METHODS",
    "FewShotMethod",
    "GaussianMethod",
    "MethodSpec",
    "batched_embed",
    "find_method_spec",
    "maps_and_image_scores",
    "method_names",
    "method_spec",
    "register_method",
    "unregister_method",
]
