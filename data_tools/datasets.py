"""One dataset API for MVTec AD, MPDD and the synthetic set (all in MVTec's folder layout).

Layout read here (the official MVTec AD layout; MPDD and the synthetic set use the same)::

    <root>/<category>/train/good/*.png
    <root>/<category>/test/good/*.png
    <root>/<category>/test/<defect>/NNN.png
    <root>/<category>/ground_truth/<defect>/NNN_mask.png     (optional as a whole, see below)

A category with no ``ground_truth/`` folder at all (e.g. the 256-px MVTec ``screw`` copy in
``shared/data/mvtec_ad_256``) is *image-level only*: :attr:`AnomalyDataset.has_masks` is ``False``
and every mask is zeros, so callers must skip pixel metrics. When ``ground_truth/`` exists,
every defect image must have its mask, of the same size as the image.

Every data problem raises :class:`DatasetError` naming the offending path. Nothing is cached
globally: each item is read from disk when asked for.

Example:
    >>> ds = AnomalyDataset("shared/data/mvtec_ad_subset", "bottle", split="test", image_size=64)
    >>> item = ds[0]
    >>> item["image"].shape, item["mask"].shape, item["label"]
    (torch.Size([3, 64, 64]), torch.Size([1, 64, 64]), 0)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode

from data_tools.constants import (
    DATASETS,
    GOOD,
    IMAGE_SUFFIXES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    KNOWN_CATEGORIES,
    MASK_SUFFIX,
)
from fsad.errors import ConfigError, DatasetError, ImageFormatError

__all__ = [
    "DatasetError",
    "ImageFormatError",
    "image_to_rgb",
    "mask_to_binary",
    "SPLITS",
    "AnomalyDataset",
    "check_category",
    "check_dataset_name",
    "image_files",
    "list_categories",
    "load_image",
    "load_mask",
    "load_supports",
    "mask_path_for",
    "read_image",
]

SPLITS: tuple[str, ...] = ("train", "test")


# --------------------------------------------------------------------------- names and folders
def check_dataset_name(dataset: str) -> str:
    """Validate a dataset family name.

    Args:
        dataset: one of :data:`data_tools.constants.DATASETS` (``mvtec``, ``mpdd``, ``synthetic``).

    Returns:
        The same name.

    Raises:
        DatasetError: for any other name, listing the valid ones.

    Example:
        >>> check_dataset_name("mpdd")
        'mpdd'
    """
    if dataset not in DATASETS:
        raise DatasetError(f"Unknown dataset {dataset!r}: expected one of {', '.join(DATASETS)}.")
    return dataset


def _check_root(root: str | os.PathLike) -> Path:
    root = Path(root).expanduser()
    if not root.exists():
        raise DatasetError(
            f"Dataset root {root} does not exist. Pass the folder that holds the category folders "
            f"(e.g. <root>/bottle/train/good), or create the synthetic set with "
            f"`python -m data_tools synthetic --out {root}`."
        )
    if not root.is_dir():
        raise DatasetError(f"Dataset root {root} is not a folder.")
    return root


def _is_category_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".") and any((path / split).is_dir() for split in SPLITS)


def list_categories(root: str | os.PathLike, dataset: str = "mvtec") -> list[str]:
    """Categories present under ``root``: folders holding ``train/`` or ``test/``.

    For ``mvtec`` and ``mpdd`` only the official category names are returned (a misnamed folder is
    ignored here and reported by ``python -m data_tools verify``); for ``synthetic`` any folder is.

    Args:
        root: dataset root, e.g. ``.../mvtec_anomaly_detection``.
        dataset: ``mvtec``, ``mpdd`` or ``synthetic``.

    Returns:
        Sorted category names.

    Raises:
        DatasetError: root missing, or no category folder under it (with a hint when ``root`` is
            itself a category folder).

    Example:
        >>> list_categories("shared/data/mvtec_ad_subset", "mvtec")
        ['bottle', 'capsule']
    """
    check_dataset_name(dataset)
    root = _check_root(root)
    found = sorted(p.name for p in root.iterdir() if _is_category_dir(p))
    known = KNOWN_CATEGORIES[dataset]
    categories = found if known is None else [c for c in found if c in known]
    if not categories:
        if any((root / split).is_dir() for split in SPLITS):
            raise DatasetError(
                f"{root} looks like a single category folder (it holds train/ or test/); "
                f"pass its parent {root.parent} as the dataset root."
            )
        hint = "" if known is None else f" Valid {dataset} categories: {', '.join(known)}."
        extra = f" Folders found: {', '.join(found)}." if found else ""
        raise DatasetError(
            f"No {dataset} category folders under {root}: expected <root>/<category>/train/good "
            f"and/or <root>/<category>/test/.{hint}{extra}"
        )
    return categories


def check_category(root: str | os.PathLike, dataset: str, category: str) -> Path:
    """Resolve ``root/category`` and check that it exists and is a valid name for ``dataset``.

    Args:
        root: dataset root.
        dataset: ``mvtec``, ``mpdd`` or ``synthetic``.
        category: category folder name.

    Returns:
        Path of the category folder.

    Raises:
        DatasetError: root missing; name unknown for the dataset (lists the valid names); folder
            missing (lists the categories present).

    Example:
        >>> check_category("shared/data/mvtec_ad_subset", "mvtec", "bottle").name
        'bottle'
    """
    check_dataset_name(dataset)
    root = _check_root(root)
    if any((root / split).is_dir() for split in SPLITS):
        raise DatasetError(
            f"--data-root {root} looks like a single category folder (it holds train/ or test/); "
            f"pass its parent {root.parent} as the dataset root."
        )
    known = KNOWN_CATEGORIES[dataset]
    if known is not None and category not in known:
        raise DatasetError(f"Unknown {dataset} category {category!r}. Valid categories: {', '.join(known)}.")
    path = root / category
    if not _is_category_dir(path):
        try:
            present = ", ".join(list_categories(root, dataset))
        except DatasetError:
            present = "none"
        raise DatasetError(
            f"Category folder {path} is missing or holds neither train/ nor test/. "
            f"Categories present under {root}: {present}."
        )
    return path


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files skipped).

    Args:
        folder: a folder such as ``<cat>/train/good``.

    Returns:
        Sorted paths with a suffix from :data:`data_tools.constants.IMAGE_SUFFIXES`.

    Example:
        >>> len(image_files("shared/data/mvtec_ad_subset/bottle/train/good"))
        209
    """
    folder = Path(folder)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def mask_path_for(category_dir: str | os.PathLike, image_path: str | os.PathLike) -> Path:
    """MVTec mask path of a test image: ``ground_truth/<defect>/<stem>_mask.png``.

    Example:
        >>> mask_path_for("bottle", "bottle/test/broken_large/003.png").as_posix()
        'bottle/ground_truth/broken_large/003_mask.png'
    """
    image_path = Path(image_path)
    return Path(category_dir) / "ground_truth" / image_path.parent.name / f"{image_path.stem}{MASK_SUFFIX}"


# --------------------------------------------------------------------------- reading images
def read_image(path: str | os.PathLike) -> Image.Image:
    """Open and fully decode an image with PIL, so a truncated or corrupt file fails here.

    Args:
        path: image file.

    Returns:
        The loaded PIL image (mode as stored).

    Raises:
        DatasetError: missing, unreadable, truncated or corrupt file (the message names it).

    Example:
        >>> read_image("shared/data/mvtec_ad_256/screw/train/good/000.png").mode
        'L'
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"Image file {path} does not exist.")
    image = None
    try:
        image = Image.open(path)
        # Decode now (Image.open only reads the header). Pillow closes a file it opened by name
        # once a single-frame image is loaded, so no copy is needed to detach it.
        image.load()
        if getattr(image, "fp", None) is not None:  # multi-frame formats keep the file open
            copy = image.copy()
            image.close()
            return copy
        return image
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        if image is not None:
            image.close()
        raise DatasetError(
            f"Cannot read image {path}: {err}. The file is truncated or corrupt; "
            f"re-download or re-extract it (python -m data_tools verify finds every such file)."
        ) from err


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ConfigError(f"image_size must be a positive int, got {size!r}.")
    return int(size)


# --------------------------------------------------------------------------- image modes
#: PIL modes turned into 8-bit RGB by PIL's own conversion: grey (MVTec screw, grid, zipper) becomes 3 equal
#: channels, a palette its colours, CMYK and YCbCr their RGB; an alpha channel is dropped (colours kept as stored).
RGB_CONVERTIBLE_MODES = ("RGB", "1", "L", "P", "LA", "La", "PA", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr")
#: 16-bit grey modes (and PIL's 32-bit "I", which 16-bit PNGs open as in some Pillow versions): scaled by 1/257 so
#: 0..65535 maps exactly onto 0..255. An "I" image with values outside 0..65535 is refused.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
#: Values a mask may hold: 0 (normal) and one defect value. Anything else (e.g. JPEG noise) is refused by name.
MASK_DEFECT_VALUES = (1, 255, 65535)


def _sixteen_bit_to_l(image: Image.Image, path: str | os.PathLike | None) -> Image.Image:
    values = np.asarray(image).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ImageFormatError(
            f"Image {path} (PIL mode {image.mode}) holds values outside 0..65535 "
            f"({values.min()}..{values.max()}); save it as an 8-bit or 16-bit PNG."
        )
    # Rounding 65535 / 257 = 255 exactly; integer arithmetic keeps it exact for every value.
    return Image.fromarray(((values * 2 + 257) // 514).astype(np.uint8), "L")


def image_to_rgb(image: Image.Image, path: str | os.PathLike | None = None) -> Image.Image:
    """An image of any PIL mode the kit accepts as 8-bit RGB (see :data:`RGB_CONVERTIBLE_MODES`).

    Raises:
        ImageFormatError: a mode without a faithful conversion (32-bit float ``F``, ``LAB``, ``HSV``, ...), or
            an ``I`` image outside 0..65535; the message names the file and the mode.

    Example:
        >>> image_to_rgb(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0))
        (255, 255, 255)
    """
    if image.mode in SIXTEEN_BIT_MODES:
        image = _sixteen_bit_to_l(image, path)
    elif image.mode not in RGB_CONVERTIBLE_MODES:
        raise ImageFormatError(
            f"Image {path} has PIL mode {image.mode}, which the kit does not convert (supported: "
            f"8-bit grey/RGB/palette, with or without alpha, CMYK, YCbCr, 16-bit grey); "
            "save it as an 8-bit RGB or grey PNG."
        )
    if image.mode == "La":  # premultiplied alpha: PIL converts it via LA
        image = image.convert("LA")
    return image if image.mode == "RGB" else image.convert("RGB")


def mask_to_binary(mask: Image.Image, path: str | os.PathLike | None = None) -> np.ndarray:
    """A ground-truth mask as a bool array, refusing any mask that is not binary.

    A mask holds 0 (normal) and one defect value: 255 or 1 (65535 for 16-bit masks); a grey or RGB mask must
    have equal channels. A mask saved with lossy compression (JPEG under a ``.png`` name) has intermediate
    values and is refused, since binarising it with ``> 0`` grows every defect region.

    Raises:
        ImageFormatError: a non-binary mask, a colour mask, or an unsupported mode (the file is named).

    Example:
        >>> mask_to_binary(Image.new("L", (2, 2), 255)).all()
        np.True_
    """
    mode = mask.mode
    if mode == "1":
        return np.asarray(mask, dtype=bool)
    if mode in SIXTEEN_BIT_MODES:
        values = np.asarray(mask).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageFormatError(
                f"Mask {path} (PIL mode {mode}) holds values outside 0..65535; a mask holds only "
                "0 and 255 (or 0 and 1)."
            )
    elif mode in ("L", "LA", "La"):
        values = np.asarray(mask.getchannel("L") if mode != "L" else mask)
    elif mode in RGB_CONVERTIBLE_MODES:
        rgb = np.asarray(mask.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()):
            raise ImageFormatError(
                f"Mask {path} (PIL mode {mode}) has coloured pixels; a mask must be black (0) and "
                "white (255). Save it as a 1-channel PNG."
            )
        values = rgb[..., 0]
    else:
        raise ImageFormatError(f"Mask {path} has PIL mode {mode}; a mask must be a 1-channel PNG holding 0 and 255.")
    present = np.flatnonzero(np.bincount(values.ravel().astype(np.int64), minlength=1)) if values.size else []
    defect = [int(v) for v in present if v != 0]
    if len(defect) > 1 or (defect and defect[0] not in MASK_DEFECT_VALUES):
        shown = ", ".join(str(int(v)) for v in present[:6]) + (" ..." if len(present) > 6 else "")
        raise ImageFormatError(
            f"Mask {path} is not binary: it holds {len(present)} distinct values ({shown}); a mask "
            "holds only 0 and 255 (or 0 and 1). Lossy compression (JPEG) causes this: re-export the "
            "mask as PNG, or threshold it at half range yourself."
        )
    return values > 0


def _image_to_tensor(
    image: Image.Image, image_size: int, normalize: bool, path: str | os.PathLike | None = None
) -> torch.Tensor:
    image = image_to_rgb(image, path)
    # PIL resize with antialias (torchvision forwards PIL input to Image.resize), like the
    # transforms.Resize used by the RegAD authors' loader.
    image = TF.resize(image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    tensor = TF.to_tensor(image)
    if normalize:
        tensor = TF.normalize(tensor, IMAGENET_MEAN, IMAGENET_STD)
    return tensor


def _mask_to_tensor(mask: Image.Image, image_size: int, path: str | os.PathLike | None = None) -> torch.Tensor:
    binary = mask_to_binary(mask, path)
    # Binarise first, then NEAREST resize so the result stays exactly {0, 1}.
    resized = Image.fromarray(binary.astype(np.uint8) * 255).resize((image_size, image_size), Image.NEAREST)
    return torch.from_numpy(np.asarray(resized) > 0).to(torch.float32).unsqueeze(0)


def load_image(path: str | os.PathLike, image_size: int, normalize: bool = True) -> torch.Tensor:
    """Read an image as an RGB float tensor, resized (bilinear, antialiased) and ImageNet-normalised.

    Args:
        path: image file (any PIL mode; grey images become 3 equal channels).
        image_size: output side S.
        normalize: subtract :data:`IMAGENET_MEAN` and divide by :data:`IMAGENET_STD`; ``False``
            leaves values in [0, 1].

    Returns:
        Tensor[3, S, S] float32.

    Raises:
        DatasetError: missing, truncated or corrupt file (named).

    Example:
        >>> load_image("shared/data/mvtec_ad_subset/bottle/train/good/000.png", 64).shape
        torch.Size([3, 64, 64])
    """
    return _image_to_tensor(read_image(path), _check_size(image_size), normalize, path)


def load_mask(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Read a ground-truth mask, binarised (> 0) and NEAREST-resized.

    Args:
        path: mask file (``ground_truth/<defect>/NNN_mask.png``).
        image_size: output side S.

    Returns:
        Tensor[1, S, S] float32 with values in {0, 1}.

    Raises:
        DatasetError: missing, truncated or corrupt file (named).

    Example:
        >>> m = load_mask("shared/data/mvtec_ad_subset/bottle/ground_truth/broken_large/000_mask.png", 64)
        >>> m.shape, sorted(m.unique().tolist())
        (torch.Size([1, 64, 64]), [0.0, 1.0])
    """
    return _mask_to_tensor(read_image(path), _check_size(image_size), path)


def load_supports(
    root: str | os.PathLike, category: str, files: Sequence[str], image_size: int, normalize: bool = True
) -> torch.Tensor:
    """Load a support set listed by relative paths (as in a manifest) into one batch.

    Args:
        root: dataset root.
        category: category folder under ``root``.
        files: paths relative to the category folder, e.g. ``["train/good/003.png", ...]``.
        image_size: output side S.
        normalize: ImageNet normalisation (see :func:`load_image`).

    Returns:
        Tensor[k, 3, S, S] float32, in the order of ``files``.

    Raises:
        DatasetError: empty list, missing category folder or file (all missing files are named).

    Example:
        >>> load_supports("shared/data/mvtec_ad_subset", "bottle", ["train/good/000.png"], 64).shape
        torch.Size([1, 3, 64, 64])
    """
    category_dir = _check_root(root) / category
    if not files:
        raise DatasetError(f"Empty support list for {category_dir}: give at least one train/good file.")
    if not category_dir.is_dir():
        raise DatasetError(f"Category folder {category_dir} does not exist.")
    paths = [category_dir / f for f in files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} support file(s) missing under {category_dir}: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else "")
        )
    return torch.stack([load_image(p, image_size, normalize) for p in paths])


# --------------------------------------------------------------------------- the dataset
class AnomalyDataset(Dataset):
    """Images of one category and split, in MVTec's layout, with labels, masks and defect types.

    ``split="train"`` lists ``train/good`` only (all label 0). ``split="test"`` lists
    ``test/good`` first, then every defect folder in name order (label 1). Masks come from
    ``ground_truth/<defect>/<stem>_mask.png``; good images get an all-zero mask. A category without
    any ``ground_truth/`` folder has :attr:`has_masks` ``False`` and all-zero masks for every image.

    Args:
        root: dataset root (holds the category folders).
        category: category name (checked against the dataset's official names for mvtec/mpdd).
        split: ``"train"`` or ``"test"``.
        image_size: side S of the square output images and masks.
        dataset: ``"mvtec"``, ``"mpdd"`` or ``"synthetic"``.
        files: optional subset, as paths relative to the category folder (e.g. a manifest's support
            list ``["train/good/003.png"]``); then ``split`` only names the subset in messages and the
            labels follow the folders (``good`` → 0, else 1).
        normalize: ImageNet normalisation of the images.

    Attributes:
        paths: image paths (str). labels: 0/1 per image. defect_types: folder name per image
        (``"good"`` for normal). mask_paths: mask path or ``None`` per image. has_masks: see above.

    Raises:
        DatasetError: unknown category (lists valid names), missing split folder, empty split,
            defect image without its mask (when ``ground_truth/`` exists), and, when an item is
            read, a truncated image or a mask whose size differs from its image (both named).

    Example:
        >>> ds = AnomalyDataset("shared/data/mvtec_ad_subset", "bottle", "test", image_size=64)
        >>> len(ds), sum(ds.labels), ds.has_masks
        (83, 63, True)
        >>> ds[80]["image"].shape, ds[80]["mask"].shape
        (torch.Size([3, 64, 64]), torch.Size([1, 64, 64]))
    """

    def __init__(
        self,
        root: str | os.PathLike,
        category: str,
        split: str = "test",
        image_size: int = 224,
        dataset: str = "mvtec",
        files: Sequence[str] | None = None,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        if split not in SPLITS:
            raise DatasetError(f"Unknown split {split!r}: expected one of {', '.join(SPLITS)}.")
        self.root = Path(root)
        self.category = category
        self.split = split
        self.dataset = dataset
        self.image_size = _check_size(image_size)
        self.normalize = normalize
        self.category_dir = check_category(root, dataset, category)
        self.has_masks = (self.category_dir / "ground_truth").is_dir()

        if files is not None:
            paths = self._from_files(files)
        else:
            paths = self._from_split()
        self.paths: list[str] = [str(p) for p in paths]
        self.defect_types: list[str] = [p.parent.name for p in paths]
        self.labels: list[int] = [0 if d == GOOD else 1 for d in self.defect_types]
        self.mask_paths: list[str | None] = []
        missing: list[str] = []
        for path, label in zip(paths, self.labels):
            if label == 0 or not self.has_masks:
                self.mask_paths.append(None)
                continue
            mask = mask_path_for(self.category_dir, path)
            if not mask.is_file():
                missing.append(f"{path} (expected {mask})")
            self.mask_paths.append(str(mask))
        if missing:
            raise DatasetError(
                f"{len(missing)} defect image(s) in {self.category_dir} have no ground-truth mask although "
                f"{self.category_dir / 'ground_truth'} exists: "
                + "; ".join(missing[:5])
                + (" ..." if len(missing) > 5 else "")
            )

    def _from_split(self) -> list[Path]:
        split_dir = self.category_dir / self.split
        if not split_dir.is_dir():
            raise DatasetError(f"Split folder {split_dir} is missing (expected {split_dir}/good/*.png).")
        if self.split == "train":
            folders = [split_dir / GOOD]
            if not folders[0].is_dir():
                raise DatasetError(f"Folder {folders[0]} is missing: the train split holds normal images only.")
        else:
            defects = sorted(
                p for p in split_dir.iterdir() if p.is_dir() and p.name != GOOD and not p.name.startswith(".")
            )
            folders = ([split_dir / GOOD] if (split_dir / GOOD).is_dir() else []) + defects
        paths = [p for folder in folders for p in image_files(folder)]
        if not paths:
            raise DatasetError(
                f"No images found in {split_dir} (looked in {', '.join(f.name for f in folders) or 'no subfolders'})."
            )
        return paths

    def _from_files(self, files: Sequence[str]) -> list[Path]:
        if len(files) == 0:
            raise DatasetError(f"Empty file list for {self.category_dir}.")
        paths = [self.category_dir / f for f in files]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} listed file(s) missing: {', '.join(missing[:5])}"
                + (" ..." if len(missing) > 5 else "")
            )
        return paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        image = read_image(path)
        mask_path = self.mask_paths[index]
        if mask_path is None:
            mask = torch.zeros(1, self.image_size, self.image_size)
        else:
            mask_image = read_image(mask_path)
            if mask_image.size != image.size:
                raise DatasetError(
                    f"Mask {mask_path} is {mask_image.size[0]}x{mask_image.size[1]} but its image {path} is "
                    f"{image.size[0]}x{image.size[1]}: a mask must have its image's size."
                )
            mask = _mask_to_tensor(mask_image, self.image_size, mask_path)
        return {
            "image": _image_to_tensor(image, self.image_size, self.normalize, path),
            "label": self.labels[index],
            "mask": mask,
            "defect_type": self.defect_types[index],
            "path": path,
        }

    def __repr__(self) -> str:
        return (
            f"AnomalyDataset(root={str(self.root)!r}, category={self.category!r}, split={self.split!r}, "
            f"n={len(self)}, defects={sum(self.labels)}, image_size={self.image_size}, "
            f"has_masks={self.has_masks})"
        )


def load_test_set(root: str | os.PathLike, category: str, image_size: int, dataset: str = "mvtec") -> dict[str, Any]:
    """A category's whole test split as stacked arrays, checked to hold both classes.

    Evaluation scores the test set against many support sets, so it is loaded once.

    Returns:
        ``{"images": Tensor[M,3,S,S], "masks": bool ndarray [M,S,S], "labels": int ndarray [M],
        "has_masks": bool, "defect_types": list[str], "paths": list[str]}``

    Raises:
        DatasetError: the split has only good or only defective images (AUROC would be undefined).
    """
    test_set = AnomalyDataset(root, category, split="test", image_size=image_size, dataset=dataset)
    labels = np.asarray(test_set.labels)
    if len(labels) == 0 or labels.min() == labels.max():
        only = "no" if len(labels) == 0 else ("only good" if labels.max() == 0 else "only defective")
        raise DatasetError(
            f"{category}: the test split under {root} has {only} images, so AUROC is undefined. "
            "Evaluate a category with both good and defective test images."
        )
    items = [test_set[i] for i in range(len(test_set))]
    return {
        "images": torch.stack([item["image"] for item in items]),
        "masks": torch.stack([item["mask"] for item in items])[:, 0].numpy().astype(bool),
        "labels": labels,
        "has_masks": test_set.has_masks,
        "defect_types": list(test_set.defect_types),
        "paths": list(test_set.paths),
    }
