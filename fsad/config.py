"""The option groups every config is composed of, declared once: data, model, protocol, training, run.

:class:`fsad.evaluate.EvaluationConfig`, :class:`fsad.train.TrainConfig` and :class:`fsad.ablation.AblationConfig`
inherit the groups they need (``@dataclass(kw_only=True)``), so an option such as ``momentum`` is one field here,
``config.momentum`` reads as before and :func:`dataclasses.asdict` gives the same flat record (results files,
checkpoints) as when every config listed its own copy. A config that needs another default overrides the field
(e.g. :class:`~fsad.ablation.AblationConfig` leaves ``categories`` and ``ks`` to the table's defaults).

Method-specific options live beside their method (``fsad/methods/<method>.py``) as small dataclasses of
:func:`option` fields; their metadata (flag, help, type, choices) is what ``fsad/cli.py`` turns into each
method's flags and what the refusal of another method's option names (:func:`cli_option`).

This module imports no torch: it is read by the CLI before any model exists.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(kw_only=True)
    ... class Small(DataOptions, ModelOptions):
    ...     pass
    >>> small = Small(data_root="data/synthetic", dataset="synthetic", image_size=64)
    >>> derive(Small, small, backbone="mobilenet_v2").image_size
    64
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import MISSING, dataclass, field
from typing import Any, Callable, TypeVar

T = TypeVar("T")

# The paper's default STN mode for MVTec (RegAD Table 6: rotation+scale is best there).
DEFAULT_STN_MODE = "rotation_scale"
# Paper: 224x224 inputs (RegAD Sec. 5.1).
DEFAULT_IMAGE_SIZE = 224
# The few-shot protocol's support-set sizes and support sets per k (RegAD Sec. 5.1: k = 2, 4, 8; 10 runs).
DEFAULT_KS = (2, 4, 8)
DEFAULT_RUNS = 10
# Registration training: paper Sec. 5.1 and the authors' train.py defaults (see fsad/train.py).
DEFAULT_EPOCHS = 50
DEFAULT_BATCH_SIZE = 32
DEFAULT_LR = 1e-4
DEFAULT_MOMENTUM = 0.9
# The authors' optim.SGD(...) passes no weight_decay, i.e. 0.
DEFAULT_WEIGHT_DECAY = 0.0
# The authors' --shot default (train.py): the k of the mean-of-k pairing.
DEFAULT_SUPPORT_K = 2
PAIRINGS = ("pair", "mean-of-k")


@dataclass(frozen=True)
class CliOption:
    """How an option is spelled on the command line (the metadata of an :func:`option` field).

    Attributes:
        flag: the flag that sets it, e.g. ``--coreset-ratio`` (its ``dest`` is the field name).
        help: the flag's help; ``fsad/cli.py`` adds the default and the methods it applies to.
        type: argument type (``int``, ``float``); None: a string, or a switch for a bool field.
        choices: the valid values, if restricted (also checked for configs built in Python).
        aliases: other flags that set the same field (``--no-stn``), named in messages only.
        valid: a test of the value beyond its type and choices (None passes unless the test says otherwise),
            e.g. ``lambda v: v is None or 0 < v <= 1``; a value that fails it is refused with ``requirement``:
            "--coreset-ratio must be in (0, 1], ... (got 2.0)."
        requirement: what ``valid`` requires, worded after the flag ("must be a positive number of channels").
    """

    flag: str
    help: str = ""
    type: Callable[[str], Any] | None = None
    choices: tuple[Any, ...] | None = None
    aliases: tuple[str, ...] = ()
    valid: Callable[[Any], bool] | None = None
    requirement: str = ""

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (one line naming the flag and the valid values), or None when it is valid."""
        if self.choices is not None and value not in self.choices:
            return f"Unknown {self.flag} {value!r}; choose one of {', '.join(map(str, self.choices))}."
        if self.valid is not None and not self.valid(value):
            return f"{self.flag} {self.requirement} (got {value})."
        return None

    @property
    def label(self) -> str:
        """All flags of the option, as messages name it: ``--stn-mode / --no-stn``."""
        return " / ".join((self.flag, *self.aliases))


def option(
    flag: str,
    help: str = "",
    *,
    default: Any = MISSING,
    default_factory: Callable[[], Any] | Any = MISSING,
    type: Callable[[str], Any] | None = None,
    choices: tuple[Any, ...] | None = None,
    aliases: tuple[str, ...] = (),
    valid: Callable[[Any], bool] | None = None,
    requirement: str = "",
) -> Any:
    """A dataclass field that carries its command-line spelling (:class:`CliOption`) as metadata.

    Example:
        >>> @dataclass(kw_only=True)
        ... class ToyOptions:
        ...     radius: int = option("--toy-radius", "neighbourhood radius", default=1, type=int)
        >>> cli_option(ToyOptions, "radius").flag
        '--toy-radius'
    """
    cli = CliOption(
        flag=flag,
        help=help,
        type=type,
        choices=tuple(choices) if choices else None,
        aliases=aliases,
        valid=valid,
        requirement=requirement,
    )
    return field(default=default, default_factory=default_factory, metadata={"cli": cli})


def cli_option(cls: type, name: str) -> CliOption | None:
    """The :class:`CliOption` of field ``name`` of dataclass ``cls`` (None when it has none)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    return fields[name].metadata.get("cli") if name in fields else None


def cli_fields(cls: type) -> list[tuple[dataclasses.Field, CliOption]]:
    """The fields of dataclass ``cls`` that carry a :class:`CliOption`, in declaration order."""
    return [(f, f.metadata["cli"]) for f in dataclasses.fields(cls) if "cli" in f.metadata]


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one for ``default_factory`` fields); MISSING when it is required."""
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def _all_augment_families() -> list[str]:
    from fsad.augment import AUGMENT_FAMILIES  # torch: imported when a config is made, not with this module

    return list(AUGMENT_FAMILIES)


# --------------------------------------------------------------------------- the groups
@dataclass(kw_only=True)
class DataOptions:
    """Which images: the dataset root (MVTec layout), its name and the input side S."""

    data_root: str
    dataset: str
    image_size: int = DEFAULT_IMAGE_SIZE


@dataclass(kw_only=True)
class ModelOptions:
    """The model: backbone and its weights, the STNs and RCM-FSAD's attention and DCN.

    ``stn_mode``, ``attention`` and ``dcn`` only matter to a method that keeps the STN model (RegAD, whose
    :class:`fsad.methods.MethodSpec` lists them in ``shared_options``); their flags are named here for the
    message that refuses them with another method.
    """

    backbone: str = "resnet18"
    weights: str = "imagenet"
    stn_mode: str | None = option("--stn-mode", default=DEFAULT_STN_MODE, aliases=("--no-stn",))
    attention: str = option("--attention", default="none")
    dcn: bool = option("--dcn", default=False)


@dataclass(kw_only=True)
class ProtocolOptions:
    """The few-shot protocol: categories, support-set sizes k, support sets per k, their manifest, and the
    support augmentation (the paper's 'A')."""

    categories: list[str]
    ks: list[int] = field(default_factory=lambda: list(DEFAULT_KS))
    runs: int = DEFAULT_RUNS
    manifest: str | None = None
    augment_families: list[str] = field(default_factory=_all_augment_families)


@dataclass(kw_only=True)
class TrainingOptions:
    """Registration training (the 'F' of RegAD Table 5): optimiser, pairing, what is trained, how data loads.
    Each field is also its ``train`` / ``ablation`` flag (``fsad/cli.py`` ``add_train_options``)."""

    epochs: int = option("--epochs", "training epochs", default=DEFAULT_EPOCHS, type=int)
    batch_size: int = option("--batch-size", "pairs per batch", default=DEFAULT_BATCH_SIZE, type=int)
    lr: float = option("--lr", "SGD learning rate", default=DEFAULT_LR, type=float)
    momentum: float = option("--momentum", "SGD momentum", default=DEFAULT_MOMENTUM, type=float)
    weight_decay: float = option("--weight-decay", "SGD weight decay", default=DEFAULT_WEIGHT_DECAY, type=float)
    pairing: str = option(
        "--pairing",
        "pair: two images of a category; mean-of-k: query vs the mean of k supports' registered layer-3 features "
        "(the authors' code)",
        default="pair",
        choices=PAIRINGS,
    )
    support_k: int = option("--support-k", "k of --pairing mean-of-k", default=DEFAULT_SUPPORT_K, type=int)
    train_backbone: bool = option(
        "--train-backbone", "fine-tune the backbone too (the authors' code does; frozen by default)", default=False
    )
    max_steps_per_epoch: int | None = option(
        "--max-steps-per-epoch", "cut each epoch after N batches (smoke runs)", default=None, type=int
    )
    num_workers: int = option("--num-workers", "DataLoader workers (0 caches images in memory)", default=0, type=int)


@dataclass(kw_only=True)
class RunOptions:
    """Where the outputs go, on which device, with which seed, and whether to continue an earlier run."""

    out: str
    device: str = "auto"
    seed: int = 0
    resume: bool = False


# --------------------------------------------------------------------------- one config from another
def derive(target: type[T], source: Any, /, **overrides: Any) -> T:
    """A ``target`` config with every field it shares (by name) with the ``source`` config, then ``overrides``.

    The one way a config is built from another (an ablation grid's training and evaluation configs, the
    reproduction's tasks): a field added to a shared group reaches every derived config without a line of
    copying. Values are copied (a list in the new config is not the source's list).

    Raises:
        TypeError: an override names no field of ``target`` (a typo would otherwise be dropped silently), or a
            required field of ``target`` is neither shared nor overridden.

    Example:
        >>> from fsad.train import TrainConfig
        >>> from fsad.ablation import AblationConfig
        >>> grid = AblationConfig(data_root="d", dataset="mvtec", out="runs/t5", epochs=3)
        >>> training = derive(TrainConfig, grid, target="bottle", out="runs/t5/bottle")
        >>> training.epochs, training.target, training.out
        (3, 'bottle', 'runs/t5/bottle')
    """
    names = {f.name for f in dataclasses.fields(target) if f.init}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(
            f"{target.__name__} has no field {', '.join(unknown)}; its fields are {', '.join(sorted(names))}."
        )
    shared = {f.name: copy.deepcopy(getattr(source, f.name)) for f in dataclasses.fields(source) if f.name in names}
    missing = sorted(
        f.name
        for f in dataclasses.fields(target)
        if f.init and f.default is MISSING and f.default_factory is MISSING and f.name not in {*shared, *overrides}
    )
    if missing:
        raise TypeError(
            f"{target.__name__} needs {', '.join(missing)}, which {type(source).__name__} does not have: pass it."
        )
    return target(**{**shared, **overrides})
