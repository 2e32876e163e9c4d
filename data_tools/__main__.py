"""``python -m data_tools {synthetic,verify,download,supports} ...`` — the dataset command line.

Each subcommand lives in its module, which exposes ``register_cli(subparsers)`` (adds its parser
and ``set_defaults(func=...)``; ``func(args)`` returns the exit status). A module that fails to
import does not take the other commands down: its subcommand then explains the import error.

Exit status: 0 ok; 2 bad input (any :class:`fsad.errors.FsadError`: a data problem, bad arguments, an
output that would destroy data), printed as one line; any other exception keeps its traceback.

Example:
    python -m data_tools synthetic --out data/synthetic --seed 0
    python -m data_tools verify --root data/synthetic --dataset synthetic
    python -m data_tools supports --root data/synthetic --dataset synthetic --out m.json
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from fsad.errors import FsadError

#: (subcommand, module) in the order ``--help`` lists them.
SUBCOMMANDS: tuple[tuple[str, str], ...] = (
    ("synthetic", "data_tools.synthetic"),
    ("verify", "data_tools.verify"),
    ("download", "data_tools.download"),
    ("supports", "data_tools.manifests"),
    ("combine", "data_tools.combine"),
)


def _unavailable(name: str, module: str, error: BaseException):
    def func(args: argparse.Namespace) -> int:
        print(
            f"error: `{name}` is unavailable because {module} failed to import: {type(error).__name__}: {error}",
            file=sys.stderr,
        )
        return 1

    return func


def build_parser() -> argparse.ArgumentParser:
    """The ``data_tools`` parser with every subcommand registered.

    Returns:
        An ``ArgumentParser`` whose parsed namespace has ``func``.

    Example:
        >>> args = build_parser().parse_args(["verify", "--root", "x", "--dataset", "mvtec"])
        >>> args.func.__module__
        'data_tools.verify'
    """
    parser = argparse.ArgumentParser(
        prog="python -m data_tools",
        description="Datasets for fsad-kit: synthetic generator, verify, download, support-set manifests.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in SUBCOMMANDS:
        try:
            module = importlib.import_module(module_name)
            module.register_cli(subparsers)
        except Exception as err:  # noqa: BLE001 - keep the other subcommands usable, report this one
            stub = subparsers.add_parser(name, help=f"(unavailable: {module_name} failed to import)", add_help=True)
            stub.add_argument("rest", nargs=argparse.REMAINDER)
            stub.set_defaults(func=_unavailable(name, module_name, err))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit status: 0 ok, 2 bad input (one line on stderr); other exceptions propagate with their traceback.

    Example:
        >>> main(["verify", "--root", "/nonexistent", "--dataset", "mvtec"])   # doctest: +SKIP
        2
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FsadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
