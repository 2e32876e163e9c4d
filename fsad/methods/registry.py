"""The method registry: one :class:`MethodSpec` per few-shot method, the single place that knows its name.

Evaluation (:func:`fsad.evaluate.build_method`, :data:`fsad.evaluate.METHOD_OPTIONS`), the CLI's ``--method``
choices, augmentation default and each method's own flags (from its ``options_class``), the results/figure
labels (:func:`fsad.figures.method_label`, :func:`fsad.figures.method_config`) and the widgets' method list all
read it. A new method is one module with its class (and its options dataclass) and one :func:`register_method`
call, imported by ``fsad/methods/__init__.py``.

Example:
    >>> from fsad.methods import method_names, method_spec
    >>> method_names()
    ('regad', 'padim', 'patchcore')
    >>> method_spec("patchcore").augments_by_default
    False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from fsad.config import ModelOptions, cli_fields, cli_option
from fsad.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from fsad.methods.base import FewShotMethod


@dataclass(frozen=True)
class MethodSpec:
    """Everything the kit needs to know about a method besides its class.

    Attributes:
        name: the ``--method`` value, recorded in results files.
        label: base table label (:func:`fsad.figures.method_label` adds ``_trained``, ``_noaug`` / ``_aug``).
        description: a few words for ``--method``'s help.
        options_class: its own options, a ``@dataclass(kw_only=True)`` of :func:`fsad.config.option` fields
            (e.g. :class:`fsad.methods.patchcore.PatchCoreOptions`); each field is a config field and a CLI flag
            generated from its metadata. :class:`fsad.evaluate.EvaluationConfig` inherits the built-in methods'
            classes; a method registered later gets a config class composed with its own
            (:func:`fsad.evaluate.evaluation_config_class`).
        shared_options: fields of :class:`fsad.config.ModelOptions` that only this method uses (RegAD's
            ``stn_mode``, ``attention``, ``dcn``): owned like its own options, but declared once for train too.
        uses_stn: whether its model keeps the STNs (without, the model is built with ``stn_mode=None``).
        accepts_checkpoint: whether a registration-trained ``--checkpoint`` applies (figures use
            ``<checkpoint_dir>/<category>/last.pt`` for it).
        augments_by_default: whether its supports are augmented unless ``--no-augment`` (the paper's 'A'); a
            method that does not gets a ``<name>_aug`` figure column for its augmented variant.
        build: ``build(config, model) -> FewShotMethod`` with the evaluation config and the built
            :class:`fsad.models.regad.RegADModel` (on the device, eval mode; its ``backbone`` is the
            feature extractor).
    """

    name: str
    build: Callable[[Any, "torch.nn.Module"], "FewShotMethod"]
    label: str = ""
    description: str = ""
    options_class: type | None = None
    shared_options: tuple[str, ...] = ()
    uses_stn: bool = False
    accepts_checkpoint: bool = False
    augments_by_default: bool = True

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.name)

    @property
    def options(self) -> tuple[tuple[str, str], ...]:
        """The options it owns as (config field, CLI flag) pairs: its ``shared_options``, then its
        ``options_class``'s fields; a non-default value of an option no chosen method owns is refused."""
        own = cli_fields(self.options_class) if self.options_class is not None else []
        shared = []
        for name in self.shared_options:
            flag = cli_option(ModelOptions, name)
            if flag is None:
                raise ConfigError(f"Method {self.name!r}: shared option {name!r} is not a field of ModelOptions.")
            shared.append((name, flag.label))
        return (*shared, *((f.name, flag.label) for f, flag in own))

    @property
    def option_fields(self) -> tuple[str, ...]:
        return tuple(field for field, _ in self.options)


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the registry (in registration order: the CLI lists methods in this order).

    Raises:
        ConfigError: a method of that name is already registered (pass ``replace=True`` to redefine it).
    """
    if spec.name in _REGISTRY and not replace:
        raise ConfigError(f"Method {spec.name!r} is already registered; pick another name or pass replace=True.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method (tests register toy methods and remove them afterwards)."""
    _REGISTRY.pop(name, None)


def method_names() -> tuple[str, ...]:
    """Registered method names, in registration order."""
    return tuple(_REGISTRY)


def method_spec(name: str) -> MethodSpec:
    """The spec of method ``name``.

    Raises:
        ConfigError: unknown name (lists the registered ones).
    """
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"Unknown method {name!r}; choose one of {', '.join(_REGISTRY)}.") from None


def find_method_spec(name: str) -> MethodSpec | None:
    """The spec of ``name``, or None (results files may name methods this installation does not register)."""
    return _REGISTRY.get(name)
