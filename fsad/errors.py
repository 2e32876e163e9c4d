"""The kit's error types: one base, :class:`FsadError`, for every bad input in ``fsad`` and ``data_tools``.

Both command lines (``python -m fsad``, ``python -m data_tools``) catch :class:`FsadError` only: it is
printed as one plain line ``error: ...`` and the exit status is 2. Anything else — a CUDA out-of-memory,
a shape bug, a ``KeyError`` in the kit's own code — keeps its traceback, because it is a bug or a
resource problem, not something the user typed wrong.

A message names what is wrong (the path, the option) and how to fix it. Every class derives from
``ValueError`` (bad input), and where the standard library has a more precise type for the same
situation the class derives from it too (``FileNotFoundError``, ``FileExistsError``, ``RuntimeError``),
so ``except FileNotFoundError`` in a caller's notebook keeps working.

This module imports nothing from the kit, so every module (``data_tools`` included) can import it.

Example:
    >>> try:
    ...     raise ConfigError("--attention applies to --method regad only")
    ... except FsadError as error:
    ...     print(f"error: {error}")
    error: --attention applies to --method regad only
"""

from __future__ import annotations

__all__ = [
    "FsadError",
    "ConfigError",
    "OutputError",
    "OutputExistsError",
    "MissingFileError",
    "DeviceError",
    "CheckpointError",
    "DatasetError",
    "ImageFormatError",
    "WeightsError",
    "TrainingDiverged",
]


class FsadError(ValueError):
    """Bad input to the kit (a path, an option, a file's content); the message says what and how to fix it."""


class ConfigError(FsadError):
    """Options that cannot run: out of range, unknown, or not applying to the chosen method; malformed YAML."""


class OutputError(FsadError):
    """An output (``--out``, ``--runs-dir``) that cannot be written, or would destroy earlier results."""


class OutputExistsError(OutputError, FileExistsError):
    """An output exists and the command was not told to ``--resume`` or ``--overwrite`` it."""


class MissingFileError(FsadError, FileNotFoundError):
    """An input file or folder the command needs does not exist."""


class DeviceError(FsadError, RuntimeError):
    """The requested device (``--device cuda``) is not available here."""


class CheckpointError(FsadError):
    """A checkpoint that cannot be used for what was asked (missing, unsafe, old format, incomplete, mismatched)."""


class DatasetError(FsadError):
    """A dataset on disk is missing, misnamed, incomplete or corrupt; the message names the path."""


class ImageFormatError(DatasetError):
    """An image or mask PIL can read but the kit must not use as is (non-binary mask, unsupported mode)."""


class WeightsError(FsadError, RuntimeError):
    """Backbone weights that are missing, unreadable or do not fit the backbone; the message says how to get them."""


class TrainingDiverged(FsadError, RuntimeError):
    """Training produced a non-finite loss; the options (``--lr``) need changing."""
