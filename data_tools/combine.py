"""``python -m data_tools combine``: one root whose categories are symlinks into several roots.

Leave-one-category-out training reads every category under a single root. The real subsets
come in separate folders (e.g. MVTec ``bottle``/``capsule`` at full size and ``screw`` at 256 px),
so this builds a view that pools them without copying a byte.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from data_tools.datasets import DatasetError, list_categories


def combine_roots(
    roots: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    dataset: str = "mvtec",
    categories: Sequence[str] | None = None,
) -> list[str]:
    """Create ``out/<category>`` symlinks to the categories found under ``roots``.

    Args:
        roots: dataset roots in MVTec layout.
        out: the combined root (created; existing links are replaced).
        dataset: dataset kind used to list valid categories.
        categories: keep only these (default: all found).

    Returns:
        The linked category names, sorted.

    Example:
        >>> combine_roots(["shared/data/mvtec_ad_subset", "shared/data/mvtec_ad_256"], "/tmp/mvtec")  # doctest: +SKIP
        ['bottle', 'capsule', 'screw']
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for root in roots:
        for category in list_categories(root, dataset):
            if category in found:
                raise DatasetError(
                    f"Category {category!r} is in both {found[category].parent} and {root}; "
                    "pass --categories to choose, or combine fewer roots."
                )
            found[category] = Path(root).resolve() / category
    wanted = list(categories) if categories else sorted(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        raise DatasetError(
            f"Categories {missing} are not under any of {list(map(str, roots))}; found: {sorted(found)}."
        )
    for category in wanted:
        link = out / category
        if link.is_symlink() or link.exists():
            if not link.is_symlink():
                raise DatasetError(f"{link} exists and is not a symlink; choose another --out.")
            link.unlink()
        link.symlink_to(found[category], target_is_directory=True)
    return sorted(wanted)


def _cli(args: argparse.Namespace) -> int:
    linked = combine_roots(args.roots, args.out, args.dataset, args.categories)
    print(f"{args.out}: {', '.join(linked)}")
    return 0


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("combine", help="one root of symlinked categories from several roots")
    parser.add_argument("roots", nargs="+", help="dataset roots in MVTec layout")
    parser.add_argument("--out", required=True, help="combined root to create")
    parser.add_argument("--dataset", choices=("mvtec", "mpdd", "synthetic"), default="mvtec")
    parser.add_argument("--categories", nargs="+", help="keep only these categories")
    parser.set_defaults(func=_cli)
    return parser
