"""Check a dataset folder before using it: layout, names, readable images, masks that match.

``python -m data_tools verify --root DIR --dataset mvtec|mpdd|synthetic [--categories ...]`` prints a
table of image counts per category / split / defect type and exits 2, naming the offending path and
what was expected, on any problem:

* missing root, unknown category name (the valid names are listed; ``synthetic`` accepts any);
* missing split (``test/`` always; ``train/`` too with ``--require-splits train test``), ``train/``
  without ``good/``, an empty split or defect folder;
* a test defect image without ``ground_truth/<defect>/<stem>_mask.png`` — only when the category has
  a ``ground_truth/`` folder at all; without one the category is reported as *image-level only*;
* a mask whose size differs from its image, a mask without its image;
* an unreadable, truncated or corrupt image or mask (each file is opened and fully decoded by PIL);
* an image in a PIL mode the loaders refuse (32-bit float, LAB, HSV; see
  :func:`data_tools.datasets.image_to_rgb`), and a mask that is not binary (values other than 0 and 255, or 0
  and 1, e.g. a JPEG saved under a ``.png`` name; see :func:`data_tools.datasets.mask_to_binary`).

Example:
    >>> report = verify_dataset("shared/data/mvtec_ad_subset", "mvtec", ["bottle"])   # doctest: +SKIP
    >>> report.ok, report.counts[("bottle", "test", "broken_large")]                   # doctest: +SKIP
    (True, 20)
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from data_tools.constants import DATASETS, GOOD, KNOWN_CATEGORIES, MASK_SUFFIX
from data_tools.datasets import (
    SPLITS,
    DatasetError,
    ImageFormatError,
    check_dataset_name,
    image_files,
    image_to_rgb,
    mask_path_for,
    mask_to_binary,
    read_image,
)

__all__ = ["VerifyRow", "VerifyReport", "verify_dataset", "register_cli"]


@dataclass
class VerifyRow:
    """Counts for one (category, split, defect type); ``masks`` is ``None`` where no mask is expected."""

    category: str
    split: str
    defect_type: str
    images: int
    masks: int | None = None


@dataclass
class VerifyReport:
    """What :func:`verify_dataset` found.

    Attributes:
        root: the folder checked. dataset: its family. rows: counts table.
        problems: one message per problem, each naming a path and what was expected (empty = valid).
        notes: facts that are not errors (e.g. ``screw: image-level only``).
        has_masks: per category, whether a ``ground_truth/`` folder exists.
    """

    root: str
    dataset: str
    rows: list[VerifyRow] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    has_masks: dict[str, bool] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def counts(self) -> dict[tuple[str, str, str], int]:
        """``{(category, split, defect_type): n_images}``."""
        return {(r.category, r.split, r.defect_type): r.images for r in self.rows}

    def format_table(self) -> str:
        """The counts as a fixed-width text table with a total line."""
        header = ("category", "split", "defect_type", "images", "masks")
        body = [
            (r.category, r.split, r.defect_type, str(r.images), "-" if r.masks is None else str(r.masks))
            for r in self.rows
        ]
        body.append(("total", "", "", str(sum(r.images for r in self.rows)), str(sum(r.masks or 0 for r in self.rows))))
        widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
        line = "  ".join("{:<%d}" % w if i < 3 else "{:>%d}" % w for i, w in enumerate(widths))
        rule = "  ".join("-" * w for w in widths)
        return "\n".join(
            [line.format(*header), rule, *(line.format(*row) for row in body[:-1]), rule, line.format(*body[-1])]
        )


def _read(path: Path, problems: list[str], mask: bool = False) -> tuple[int, int] | None:
    """Decode a file fully and check it converts as the loaders will (an image to RGB, a mask to binary);
    return its size, or record why it cannot be used."""
    try:
        image = read_image(path)
    except DatasetError as err:
        problems.append(f"{path}: unreadable or truncated image ({err.__cause__ or err}); expected a valid image file.")
        return None
    try:
        if mask:
            mask_to_binary(image, path)
        else:
            image_to_rgb(image, path)
    except ImageFormatError as err:
        problems.append(str(err))
    return image.size


def _verify_category(category_dir: Path, report: VerifyReport, require_splits: Sequence[str], progress: tqdm) -> None:
    category = category_dir.name
    problems = report.problems
    splits_present = [s for s in SPLITS if (category_dir / s).is_dir()]
    for split in require_splits:
        if split not in splits_present:
            problems.append(
                f"{category_dir / split}: missing split; expected {category_dir / split}/good/"
                + ("*.png" if split == "train" else " and one folder per defect type")
            )
    if "train" not in splits_present and "train" not in require_splits:
        report.notes.append(f"{category}: test only (no train/ split, so no support images can be drawn from it)")

    gt_dir = category_dir / "ground_truth"
    has_masks = gt_dir.is_dir()
    report.has_masks[category] = has_masks
    defect_images: dict[str, list[Path]] = {}
    sizes: dict[Path, tuple[int, int] | None] = {}

    for split in splits_present:
        split_dir = category_dir / split
        folders = sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if split == "train":
            extra = [p for p in folders if p.name != GOOD]
            if extra:
                problems.append(f"{extra[0]}: unexpected folder; train/ holds only good/ (normal images).")
        if GOOD not in [p.name for p in folders]:
            problems.append(f"{split_dir / GOOD}: missing; expected the normal {split} images there.")
        folders = [p for p in folders if split == "test" or p.name == GOOD]
        for folder in folders:
            files = image_files(folder)
            if not files:
                problems.append(f"{folder}: holds no images; expected *.png files.")
            for path in files:
                sizes[path] = _read(path, problems)
                progress.update(1)
            n_masks = None
            if split == "test" and folder.name != GOOD:
                defect_images[folder.name] = files
                if has_masks:
                    n_masks = sum(mask_path_for(category_dir, p).is_file() for p in files)
            report.rows.append(VerifyRow(category, split, folder.name, len(files), n_masks))

    if not has_masks:
        if defect_images:
            report.notes.append(f"{category}: image-level only (no {gt_dir.name}/ folder): pixel metrics are skipped")
        return
    for defect, files in defect_images.items():
        for path in files:
            mask = mask_path_for(category_dir, path)
            if not mask.is_file():
                problems.append(f"{path}: defect image without its mask; expected {mask}.")
                continue
            mask_size = _read(mask, problems, mask=True)
            progress.update(1)
            image_size = sizes.get(path)
            if mask_size is not None and image_size is not None and mask_size != image_size:
                problems.append(
                    f"{mask}: mask is {mask_size[0]}x{mask_size[1]} but its image {path} is "
                    f"{image_size[0]}x{image_size[1]}; expected the same size."
                )
    # Masks that belong to no test image point at misfiled or renamed data.
    for folder in sorted(p for p in gt_dir.iterdir() if p.is_dir()):
        expected = {f"{p.stem}{MASK_SUFFIX}" for p in defect_images.get(folder.name, [])}
        for mask in image_files(folder):
            if mask.name not in expected:
                stem = mask.name[: -len(MASK_SUFFIX)] if mask.name.endswith(MASK_SUFFIX) else mask.stem
                problems.append(
                    f"{mask}: mask without its image; expected {category_dir / 'test' / folder.name / stem}.png "
                    f"(masks are named <image stem>{MASK_SUFFIX})."
                )


def verify_dataset(
    root: str | os.PathLike,
    dataset: str,
    categories: Sequence[str] | None = None,
    require_splits: Sequence[str] = ("test",),
    progress: bool | None = None,
) -> VerifyReport:
    """Check a dataset root and count its images; never raises for data problems, it records them.

    Args:
        root: dataset root (holds the category folders).
        dataset: ``mvtec``, ``mpdd`` or ``synthetic``.
        categories: only these (default: every folder under ``root``).
        require_splits: splits whose absence is a problem (``train/``'s absence alone is a note, since
            test-only sample sets exist); pass ``("train", "test")`` for a full dataset.
        progress: show a tqdm bar (``None``: only on a terminal).

    Returns:
        A :class:`VerifyReport`; ``report.ok`` is True when nothing is wrong.

    Raises:
        DatasetError: unknown ``dataset`` or split names (a caller error, not a data problem).

    Example:
        >>> r = verify_dataset("shared/data/mvtec_ad_256", "mvtec")                 # doctest: +SKIP
        >>> r.ok, r.has_masks, r.notes                                              # doctest: +SKIP
        (True, {'screw': False}, ['screw: image-level only (no ground_truth/ folder): pixel metrics are skipped'])
    """
    check_dataset_name(dataset)
    bad = [s for s in require_splits if s not in SPLITS]
    if bad:
        raise DatasetError(f"Unknown split(s) {bad}: expected {', '.join(SPLITS)}.")
    root = Path(root).expanduser()
    report = VerifyReport(root=str(root), dataset=dataset)
    if not root.is_dir():
        report.problems.append(
            f"{root}: dataset root {'is not a folder' if root.exists() else 'does not exist'}; "
            "expected a folder holding <category>/train/good and <category>/test/."
        )
        return report
    known = KNOWN_CATEGORIES[dataset]
    present = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = list(categories) if categories else present
    if not names:
        report.problems.append(f"{root}: no category folders; expected <root>/<category>/train/good and test/.")
    if any((root / s).is_dir() for s in SPLITS):
        report.problems.append(
            f"{root}: looks like a single category folder (it holds train/ or test/); "
            f"expected the dataset root, e.g. {root.parent}."
        )
        return report
    valid = known if known is not None else present
    todo: list[Path] = []
    for name in names:
        if known is not None and name not in known:
            report.problems.append(
                f"{root / name}: unknown {dataset} category {name!r}; valid categories: {', '.join(known)}."
            )
        elif not (root / name).is_dir():
            report.problems.append(
                f"{root / name}: category folder missing; categories present: "
                f"{', '.join(c for c in present if c in valid) or 'none'}."
            )
        else:
            todo.append(root / name)
    total = sum(
        len(image_files(d)) for c in todo for s in SPLITS if (c / s).is_dir() for d in (c / s).iterdir() if d.is_dir()
    )
    total += sum(
        len(image_files(d))
        for c in todo
        if (c / "ground_truth").is_dir()
        for d in (c / "ground_truth").iterdir()
        if d.is_dir()
    )
    with tqdm(
        total=total,
        desc=f"verify {root.name}",
        unit="img",
        disable=None if progress is None else not progress,
        leave=False,
    ) as bar:
        for category_dir in todo:
            _verify_category(category_dir, report, require_splits, bar)
    return report


def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``verify`` to a ``python -m data_tools`` subparser set.

    Example:
        python -m data_tools verify --root ../shared/data/mvtec_ad_subset --dataset mvtec
    """
    parser = subparsers.add_parser(
        "verify",
        help="check a dataset folder and print image counts (exit 2 on any problem)",
        description="Check layout, category names, readability of every image and mask, mask/image sizes; "
        "print counts per category/split/defect type. Exit status 2 on any problem.",
    )
    parser.add_argument("--root", type=Path, required=True, help="dataset root holding the category folders")
    parser.add_argument("--dataset", choices=DATASETS, required=True, help="dataset family")
    parser.add_argument("--categories", nargs="+", help="only these categories (default: all folders)")
    parser.add_argument(
        "--require-splits",
        nargs="+",
        choices=SPLITS,
        default=["test"],
        help="splits that must exist (default: test; add train for a full dataset)",
    )
    parser.set_defaults(func=_cli)
    return parser


def run_verify(
    root: str | os.PathLike,
    dataset: str,
    categories: Sequence[str] | None = None,
    require_splits: Sequence[str] = ("test",),
) -> int:
    """Verify and print the report; the return value is the CLI exit status (0 ok, 2 problems).

    Example:
        >>> run_verify("shared/data/mpdd_subset", "mpdd")                              # doctest: +SKIP
        0
    """
    import sys

    report = verify_dataset(root, dataset, categories, require_splits)
    if report.rows:
        print(report.format_table())
    for note in report.notes:
        print(f"note: {note}")
    if report.problems:
        print(f"verify: {len(report.problems)} problem(s) in {report.root} (dataset {dataset}):", file=sys.stderr)
        for problem in report.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    print(f"verify: {report.root} is a valid {dataset} dataset ({len(report.has_masks)} categories).")
    return 0


def _cli(args: argparse.Namespace) -> int:
    return run_verify(args.root, args.dataset, args.categories, args.require_splits)
