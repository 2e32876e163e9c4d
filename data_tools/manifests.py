"""Published, seeded support-set manifests: which ``train/good`` files form each few-shot support set.

The RegAD authors never released their support-set generator (nor MPDD support sets), so results
could not be compared run for run. A manifest fixes, for every category, k and run, the list of
support files (paths relative to the category folder). It is a pure function of the sorted
``train/good`` file list, the category name, k, the run index and the seed, so it is the same
whether built from the official file counts (MVTec names its files ``000.png`` … ``(n-1).png``) or
from a real root, and the committed ``data_tools/manifests/mvtec_ad.json`` can be regenerated
bit for bit::

    python -m data_tools supports --counts-from mvtec-official --k 1 2 4 8 16 32 --runs 10 --seed 0 \\
        --out data_tools/manifests/mvtec_ad.json

Draws: for each (category, k) a NumPy ``default_rng([seed, crc32(category), k])`` (its own stream, so
adding a k or more runs never changes existing sets, and the first R runs of a 10-run manifest
equal an R-run manifest); run r is the r-th ``rng.choice(n, k, replace=False)``, sorted. A k larger
than the category's pool is left out and recorded under ``"skipped"``.

Example:
    >>> m = make_manifest(counts={"bottle": 209}, ks=(2,), runs=3, seed=0)
    >>> support_files(m, "bottle", 2, 0)        # doctest: +SKIP
    ['train/good/....png', 'train/good/....png']
"""

from __future__ import annotations

import argparse
import json
import os
import zlib
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from data_tools.constants import DEFAULT_KS, DEFAULT_RUNS, GOOD, MVTEC_TRAIN_GOOD_COUNTS
from data_tools.datasets import DatasetError, check_category, check_dataset_name, image_files, list_categories
from fsad.errors import ConfigError

__all__ = [
    "MANIFEST_VERSION",
    "GENERATOR",
    "MANIFEST_DIR",
    "check_manifest_files",
    "default_manifest_path",
    "draw_supports",
    "load_manifest",
    "make_manifest",
    "manifest_for",
    "manifest_to_json",
    "register_cli",
    "save_manifest",
    "support_files",
]

MANIFEST_VERSION = 1
GENERATOR = (
    "data_tools.manifests v1: files = sorted train/good file names (relative to the category); "
    "for each (category, k): rng = numpy.random.default_rng([seed, zlib.crc32(category), k]); "
    "run r = sorted(rng.choice(n, k, replace=False)) drawn r-th; k > n skipped"
)
#: Folder of the committed manifests.
MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"
_DEFAULT_FILES = {"mvtec": "mvtec_ad.json", "mpdd": "mpdd.json", "synthetic": "synthetic.json"}
#: ``--counts-from`` sources: name -> (dataset, counts).
COUNT_SOURCES: dict[str, tuple[str, Mapping[str, int]]] = {"mvtec-official": ("mvtec", MVTEC_TRAIN_GOOD_COUNTS)}


# --------------------------------------------------------------------------- building
def _check_params(ks: Iterable[int], runs: int, seed: int) -> tuple[list[int], int, int]:
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ConfigError(f"ks must be a non-empty list of positive ints, got {ks!r}.")
    if isinstance(runs, bool) or not isinstance(runs, (int, np.integer)) or runs < 1:
        raise ConfigError(f"runs must be a positive int, got {runs!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int (NumPy seeds are non-negative), got {seed!r}.")
    return sorted({int(k) for k in ks}), int(runs), int(seed)


def _official_names(n: int) -> list[str]:
    # MVTec AD numbers train/good as 000.png ... (n-1).png (three digits, wider only past 999).
    width = max(3, len(str(n - 1)))
    return [f"train/{GOOD}/{i:0{width}d}.png" for i in range(n)]


def draw_supports(files: Sequence[str], category: str, k: int, runs: int, seed: int) -> list[list[str]]:
    """Draw ``runs`` support sets of ``k`` files each, without replacement within a run.

    Args:
        files: the category's sorted train/good files (relative paths).
        category: category name (mixed into the seed so categories get different draws).
        k: support-set size, ``1 <= k <= len(files)``.
        runs: number of sets.
        seed: non-negative base seed.

    Returns:
        ``runs`` lists of ``k`` files, each sorted.

    Raises:
        DatasetError: ``k`` larger than the pool.

    Example:
        >>> [len(s) for s in draw_supports([f"train/good/{i:03d}.png" for i in range(9)], "x", 4, 2, 0)]
        [4, 4]
    """
    n = len(files)
    if k > n:
        raise DatasetError(f"k={k} support images requested for {category!r} but only {n} train/good images exist.")
    rng = np.random.default_rng([seed, zlib.crc32(category.encode("utf-8")), k])
    return [[files[i] for i in sorted(rng.choice(n, size=k, replace=False).tolist())] for _ in range(runs)]


def _category_entry(files: list[str], category: str, ks: list[int], runs: int, seed: int) -> dict[str, Any]:
    n = len(files)
    entry: dict[str, Any] = {"n_train_good": n, "supports": {}, "skipped": {}}
    for k in ks:
        if k > n:
            entry["skipped"][str(k)] = f"k={k} > {n} train/good images"
        else:
            entry["supports"][str(k)] = draw_supports(files, category, k, runs, seed)
    return entry


def _root_train_files(root: Path, dataset: str, category: str) -> list[str]:
    category_dir = check_category(root, dataset, category)
    good = category_dir / "train" / GOOD
    if not good.is_dir():
        raise DatasetError(f"{good} is missing: support sets are drawn from train/good images.")
    files = [p.relative_to(category_dir).as_posix() for p in image_files(good)]
    if not files:
        raise DatasetError(f"{good} holds no images: support sets are drawn from train/good images.")
    return files


def make_manifest(
    counts: Mapping[str, int] | None = None,
    root: str | os.PathLike | None = None,
    dataset: str = "mvtec",
    ks: Iterable[int] = DEFAULT_KS,
    runs: int = DEFAULT_RUNS,
    seed: int = 0,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Build a support-set manifest from official file counts or from a dataset root.

    Args:
        counts: ``{category: n}`` with files named ``train/good/000.png`` … (MVTec's naming), or
        root: a dataset root whose ``<cat>/train/good`` folders are listed (files are not opened).
            Exactly one of ``counts`` / ``root``.
        dataset: ``mvtec``, ``mpdd`` or ``synthetic`` (recorded; validates category names for a root).
        ks: support sizes (deduplicated, sorted).
        runs: support sets per (category, k).
        seed: non-negative base seed.
        categories: restrict to these categories (default: all in ``counts``, or every category
            under ``root`` that has a ``train/good`` folder).

    Returns:
        ``{"version": 1, "dataset", "seed", "runs", "ks", "generator",
        "categories": {cat: {"n_train_good": n, "supports": {"k": [[files of run 0], ...]},
        "skipped": {"k": reason}}}}``.

    Raises:
        ValueError: bad ks/runs/seed, or both/neither of counts and root.
        DatasetError: root problems, unknown category, category without train/good images.

    Example:
        >>> m = make_manifest(counts={"toothbrush": 60}, ks=(1, 2, 64), runs=10)
        >>> len(m["categories"]["toothbrush"]["supports"]["2"]), m["categories"]["toothbrush"]["skipped"]
        (10, {'64': 'k=64 > 60 train/good images'})
    """
    ks, runs, seed = _check_params(ks, runs, seed)
    check_dataset_name(dataset)
    if (counts is None) == (root is None):
        raise ConfigError("Give exactly one of counts= (official file counts) or root= (a dataset folder).")
    files_by_category: dict[str, list[str]] = {}
    if counts is not None:
        names = list(categories) if categories is not None else sorted(counts)
        unknown = [c for c in names if c not in counts]
        if unknown:
            raise DatasetError(f"No count for categories {unknown}; counts are given for: {', '.join(sorted(counts))}.")
        for category in names:
            n = counts[category]
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ConfigError(f"count for {category!r} must be a positive int, got {n!r}.")
            files_by_category[category] = _official_names(int(n))
    else:
        root = Path(root)
        if categories is None:
            names = [c for c in list_categories(root, dataset) if (root / c / "train" / GOOD).is_dir()]
            if not names:
                raise DatasetError(f"No category under {root} has a train/good folder to draw supports from.")
        else:
            names = list(categories)
        for category in names:
            files_by_category[category] = _root_train_files(root, dataset, category)
    return {
        "version": MANIFEST_VERSION,
        "dataset": dataset,
        "seed": seed,
        "runs": runs,
        "ks": ks,
        "generator": GENERATOR,
        "categories": {c: _category_entry(files_by_category[c], c, ks, runs, seed) for c in sorted(files_by_category)},
    }


# --------------------------------------------------------------------------- saving / loading
def _key_order(key: Any) -> tuple[int, int, str]:
    # k keys ("1", "2", ..., "32") in numeric order, other keys alphabetically: stable either way.
    text = str(key)
    return (0, int(text), "") if text.isdigit() else (1, 0, text)


def manifest_to_json(manifest: Mapping[str, Any]) -> str:
    """Stable text form: sorted keys (k keys numerically), 1-space indent, each support list on one line.

    A hand-rolled writer because ``json.dumps(indent=...)`` puts every file name on its own line
    (10,000 lines for MVTec); here one run is one line, which keeps diffs and reviews readable.

    Example:
        >>> manifest_to_json({"b": [["x", "y"]], "a": 1})
        '{\\n "a": 1,\\n "b": [\\n  ["x", "y"]\\n ]\\n}\\n'
    """

    def dump(value: Any, depth: int) -> str:
        pad, inner = " " * depth, " " * (depth + 1)
        if isinstance(value, Mapping):
            if not value:
                return "{}"
            items = [f"{inner}{json.dumps(str(k))}: {dump(value[k], depth + 1)}" for k in sorted(value, key=_key_order)]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, (list, tuple)):
            if all(not isinstance(v, (Mapping, list, tuple)) for v in value):
                return json.dumps(list(value), ensure_ascii=False, separators=(", ", ": "))
            return "[\n" + ",\n".join(f"{inner}{dump(v, depth + 1)}" for v in value) + f"\n{pad}]"
        return json.dumps(value, ensure_ascii=False)

    return dump(manifest, 0) + "\n"


def save_manifest(manifest: Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write a manifest atomically in the stable text form of :func:`manifest_to_json`.

    Args:
        manifest: as returned by :func:`make_manifest`.
        path: output file (parent folders are created).

    Returns:
        The path written.

    Example:
        >>> save_manifest(make_manifest(counts={"bottle": 209}, ks=(2,), runs=1), "/tmp/m.json")  # doctest: +SKIP
    """
    from fsad.utils import atomic_write_text  # the kit's atomic writer (temp file + os.replace)

    _validate(manifest, "<in memory>")
    atomic_write_text(path, manifest_to_json(manifest))
    return Path(path)


def _validate(manifest: Any, where: str) -> None:
    if not isinstance(manifest, Mapping):
        raise DatasetError(f"Manifest {where} is not a JSON object.")
    version = manifest.get("version")
    if version != MANIFEST_VERSION:
        raise DatasetError(
            f"Manifest {where} has version {version!r}; this kit reads version {MANIFEST_VERSION}. "
            "Regenerate it with `python -m data_tools supports ...`."
        )
    missing = [key for key in ("dataset", "seed", "runs", "categories") if key not in manifest]
    if missing:
        raise DatasetError(f"Manifest {where} lacks the key(s) {missing}.")
    for category, entry in manifest["categories"].items():
        if not isinstance(entry, Mapping) or "supports" not in entry or "n_train_good" not in entry:
            raise DatasetError(f"Manifest {where}: category {category!r} lacks 'supports' or 'n_train_good'.")


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a manifest file.

    Args:
        path: JSON file written by :func:`save_manifest`.

    Returns:
        The manifest dict.

    Raises:
        DatasetError: file missing, not JSON, wrong version or malformed (the path is named).

    Example:
        >>> load_manifest(default_manifest_path("mvtec"))["runs"]
        10
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(
            f"Manifest file {path} does not exist. Create one with "
            "`python -m data_tools supports --root DIR --dataset D --out FILE`."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"Manifest {path} is not valid JSON: {err}.") from err
    _validate(manifest, str(path))
    return manifest


def default_manifest_path(dataset: str) -> Path:
    """Path of the committed manifest for a dataset (it may not exist, e.g. for mpdd).

    Example:
        >>> default_manifest_path("mvtec").name, default_manifest_path("synthetic").name
        ('mvtec_ad.json', 'synthetic.json')
    """
    check_dataset_name(dataset)
    return MANIFEST_DIR / _DEFAULT_FILES[dataset]


# --------------------------------------------------------------------------- using
def support_files(manifest: Mapping[str, Any], category: str, k: int, run: int) -> list[str]:
    """The support files of one (category, k, run).

    Args:
        manifest: a loaded manifest.
        category: category name.
        k: support size.
        run: run index, ``0 <= run < manifest["runs"]``.

    Returns:
        Paths relative to the category folder, e.g. ``["train/good/017.png", ...]``.

    Raises:
        DatasetError: unknown category, k (says why a k was skipped, e.g. too few images) or run,
            listing the valid values.

    Example:
        >>> support_files(load_manifest(default_manifest_path("mvtec")), "bottle", 2, 0)  # doctest: +SKIP
        ['train/good/....png', 'train/good/....png']
    """
    categories = manifest["categories"]
    if category not in categories:
        raise DatasetError(
            f"Category {category!r} is not in this {manifest.get('dataset')} manifest; "
            f"it has: {', '.join(sorted(categories))}."
        )
    entry = categories[category]
    key = str(k)
    if key not in entry["supports"]:
        reason = entry.get("skipped", {}).get(key)
        available = ", ".join(sorted(entry["supports"], key=int)) or "none"
        why = (
            f"it was skipped: {reason}, so a {k}-shot run is impossible for {category!r}"
            if reason
            else "it was not generated"
        )
        raise DatasetError(f"k={k} has no support sets for {category!r} ({why}). Available k: {available}.")
    sets = entry["supports"][key]
    if isinstance(run, bool) or not isinstance(run, (int, np.integer)) or not 0 <= run < len(sets):
        raise DatasetError(f"run={run!r} is out of range for {category!r} k={k}: valid runs are 0..{len(sets) - 1}.")
    return list(sets[run])


def check_manifest_files(
    manifest: Mapping[str, Any], root: str | os.PathLike, categories: Sequence[str] | None = None
) -> int:
    """Check that every support file of the manifest exists under ``root``.

    Args:
        manifest: a loaded manifest.
        root: dataset root.
        categories: only these categories (default: all in the manifest).

    Returns:
        Number of distinct files checked.

    Raises:
        DatasetError: root or category folder missing, a category not in the manifest, or files
            missing (names up to 10 of them and the count, and the pool size the manifest expects).

    Example:
        >>> check_manifest_files(load_manifest(default_manifest_path("mvtec")),
        ...                      "shared/data/mvtec_ad_subset", ["bottle"])  # doctest: +SKIP
        209
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"Dataset root {root} does not exist.")
    names = list(categories) if categories is not None else sorted(manifest["categories"])
    checked = 0
    problems: list[str] = []
    for category in names:
        if category not in manifest["categories"]:
            raise DatasetError(
                f"Category {category!r} is not in this manifest; it has: {', '.join(sorted(manifest['categories']))}."
            )
        entry = manifest["categories"][category]
        category_dir = root / category
        if not category_dir.is_dir():
            problems.append(f"{category_dir} (category folder missing)")
            continue
        files = sorted({f for sets in entry["supports"].values() for run in sets for f in run})
        checked += len(files)
        missing = [f for f in files if not (category_dir / f).is_file()]
        if missing:
            shown = ", ".join(str(category_dir / f) for f in missing[:10])
            problems.append(
                f"{len(missing)} of {len(files)} support files missing for {category!r} "
                f"(the manifest expects {entry['n_train_good']} train/good images): {shown}"
                + (" ..." if len(missing) > 10 else "")
            )
    if problems:
        raise DatasetError(
            f"The manifest does not match the data under {root}: "
            + "; ".join(problems)
            + ". Use the manifest made for this data, or build one from it with "
            "`python -m data_tools supports --root ROOT ...` (manifest_for does this)."
        )
    return checked


def manifest_for(
    root: str | os.PathLike,
    dataset: str,
    ks: Iterable[int] = DEFAULT_KS,
    runs: int = DEFAULT_RUNS,
    seed: int = 0,
    categories: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The support sets to use for the data under ``root``: the published ones where they fit.

    For each category with ``train/good`` images under ``root``: if the committed manifest
    (:func:`default_manifest_path`) exists, has the same seed, at least ``runs`` runs, the
    requested k and the same ``n_train_good`` as the folder, its sets are used (truncated to
    ``runs``); otherwise sets are drawn from the folder's own sorted file list with the same
    generator. ``manifest["origin"][category]`` says which. The files are then checked to exist.

    Args:
        root: dataset root.
        dataset: ``mvtec``, ``mpdd`` or ``synthetic``.
        ks: support sizes; runs: sets per (category, k); seed: base seed.
        categories: restrict to these categories (default: every one with train/good under root).

    Returns:
        A manifest dict (same format as :func:`make_manifest`, plus ``"origin"``).

    Raises:
        DatasetError: root problems, or files of the chosen sets missing.

    Example:
        >>> m = manifest_for("shared/data/mvtec_ad_subset", "mvtec", ks=(2,), runs=3)  # doctest: +SKIP
        >>> m["origin"]                                                               # doctest: +SKIP
        {'bottle': 'published data_tools/manifests/mvtec_ad.json', 'capsule': 'generated from root'}
    """
    built = make_manifest(root=root, dataset=dataset, ks=ks, runs=runs, seed=seed, categories=categories)
    path = default_manifest_path(dataset)
    published = load_manifest(path) if path.is_file() else None
    origin: dict[str, str] = {}
    for category, entry in built["categories"].items():
        origin[category] = "generated from root"
        if published is None or published["seed"] != built["seed"] or published["runs"] < built["runs"]:
            continue
        ref = published["categories"].get(category)
        if ref is None or ref["n_train_good"] != entry["n_train_good"]:
            continue
        if not all(k in ref["supports"] for k in entry["supports"]):
            continue
        entry["supports"] = {k: [list(r) for r in ref["supports"][k][: built["runs"]]] for k in entry["supports"]}
        origin[category] = f"published {path.relative_to(MANIFEST_DIR.parent.parent).as_posix()}"
    built["origin"] = origin
    check_manifest_files(built, root)
    return built


# --------------------------------------------------------------------------- CLI
def register_cli(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``supports`` to a ``python -m data_tools`` subparser set.

    Example:
        python -m data_tools supports --counts-from mvtec-official --out data_tools/manifests/mvtec_ad.json
        python -m data_tools supports --root data/synthetic --dataset synthetic --k 1 2 4 8 --out m.json
    """
    parser = subparsers.add_parser(
        "supports",
        help="write a seeded support-set manifest (train/good files per category, k and run)",
        description="Draw few-shot support sets from each category's sorted train/good files with a seeded "
        "RNG and write them as JSON. Same counts/files + seed -> byte-identical file.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--root", type=Path, help="dataset root holding <category>/train/good/")
    source.add_argument(
        "--counts-from",
        choices=sorted(COUNT_SOURCES),
        help="use official file counts instead of a folder (mvtec-official: MVTec AD's 15 categories)",
    )
    parser.add_argument(
        "--dataset", choices=("mvtec", "mpdd", "synthetic"), help="dataset family (required with --root)"
    )
    parser.add_argument("--categories", nargs="+", help="only these categories (default: all)")
    parser.add_argument(
        "--k", nargs="+", type=int, default=list(DEFAULT_KS), help="support sizes (default: 1 2 4 8 16 32)"
    )
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="support sets per category and k (default: 10)")
    parser.add_argument("--seed", type=int, default=0, help="base seed (default: 0)")
    parser.add_argument("--out", type=Path, required=True, help="output JSON file")
    parser.set_defaults(func=_cli)
    return parser


def _cli(args: argparse.Namespace) -> int:
    from fsad.utils import check_output_file

    check_output_file(args.out, "--out")  # before any folder is scanned
    if args.counts_from is not None:
        dataset, counts = COUNT_SOURCES[args.counts_from]
        if args.dataset not in (None, dataset):
            raise DatasetError(
                f"--counts-from {args.counts_from} gives {dataset} counts; drop --dataset {args.dataset}."
            )
        manifest = make_manifest(
            counts=counts, dataset=dataset, ks=args.k, runs=args.runs, seed=args.seed, categories=args.categories
        )
    else:
        if args.dataset is None:
            raise DatasetError("--dataset is required with --root (mvtec, mpdd or synthetic).")
        manifest = make_manifest(
            root=args.root, dataset=args.dataset, ks=args.k, runs=args.runs, seed=args.seed, categories=args.categories
        )
    save_manifest(manifest, args.out)
    for category, entry in manifest["categories"].items():
        skipped = f"  skipped k: {', '.join(entry['skipped'])}" if entry["skipped"] else ""
        print(f"{category:<16} n={entry['n_train_good']:<5} k: {', '.join(entry['supports']) or '-'}{skipped}")
    print(
        f"wrote {args.out} ({len(manifest['categories'])} categories, {manifest['runs']} runs, seed {manifest['seed']})"
    )
    return 0
