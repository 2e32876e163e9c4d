"""Tests for data_tools.datasets: image/mask reading, the dataset class, and its errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_tools.constants import IMAGENET_MEAN, IMAGENET_STD, MVTEC_CATEGORIES
from data_tools.datasets import (
    AnomalyDataset,
    DatasetError,
    check_category,
    list_categories,
    load_image,
    load_mask,
    load_supports,
)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_fake_category(
    root: Path,
    category: str = "bottle",
    size: int = 16,
    n_train: int = 3,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    masks: bool = True,
) -> Path:
    """A tiny MVTec-layout category: grey images with a bright square defect and its mask."""
    defects = {"broken": 2, "crack": 1} if defects is None else defects
    cat = root / category
    rng = np.random.default_rng(0)
    for i in range(n_train):
        _png(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    for i in range(n_good):
        _png(cat / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    for defect, n in defects.items():
        for i in range(n):
            image = np.full((size, size, 3), 40, np.uint8)
            image[2:6, 2:6] = 250
            _png(cat / "test" / defect / f"{i:03d}.png", image)
            if masks:
                mask = np.zeros((size, size), np.uint8)
                mask[2:6, 2:6] = 255
                _png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return cat


# ------------------------------------------------------------------ load_image / load_mask
def test_load_image_normalises_with_imagenet_statistics(tmp_path: Path) -> None:
    path = _png(tmp_path / "c.png", np.tile(np.array([255, 0, 128], np.uint8), (10, 20, 1)))
    raw = load_image(path, 8, normalize=False)
    norm = load_image(path, 8)
    assert raw.shape == norm.shape == (3, 8, 8) and raw.dtype == torch.float32
    expected_raw = torch.tensor([1.0, 0.0, 128 / 255]).view(3, 1, 1).expand(3, 8, 8)
    torch.testing.assert_close(raw, expected_raw, atol=1e-6, rtol=0)
    expected = (expected_raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    torch.testing.assert_close(norm, expected, atol=1e-5, rtol=0)


def test_load_image_grey_becomes_three_equal_channels(tmp_path: Path) -> None:
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    path = _png(tmp_path / "g.png", grey)
    out = load_image(path, 8, normalize=False)
    assert out.shape == (3, 8, 8)
    torch.testing.assert_close(out[0], out[1])
    torch.testing.assert_close(out[0], torch.from_numpy(grey).float() / 255)


def test_load_mask_binarises_then_nearest_resizes(tmp_path: Path) -> None:
    mask = np.zeros((4, 4), np.uint8)
    mask[:, :2] = 1  # value 1, not 255: a 0/1 mask is binary too
    mask[3, 3] = 1
    out = load_mask(_png(tmp_path / "m.png", mask), 8)
    expected = np.repeat(np.repeat(mask > 0, 2, axis=0), 2, axis=1).astype(np.float32)
    assert out.shape == (1, 8, 8)
    np.testing.assert_array_equal(out[0].numpy(), expected)
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "m255.png", mask * 255), 8).numpy(), out.numpy())
    mask[0, 3] = 7  # a third value (JPEG noise looks like this): refused by name, never binarised with > 0
    with pytest.raises(DatasetError, match=r"m7\.png is not binary: it holds 3 distinct values \(0, 1, 7\)"):
        load_mask(_png(tmp_path / "m7.png", mask), 8)


def test_truncated_png_is_named(tmp_path: Path) -> None:
    path = _png(tmp_path / "t.png", np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"t\.png"):
        load_image(path, 8)
    with pytest.raises(DatasetError, match="does not exist"):
        load_image(tmp_path / "none.png", 8)


def test_bad_image_size_rejected(tmp_path: Path) -> None:
    path = _png(tmp_path / "a.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="image_size"):
        load_image(path, 0)


# ------------------------------------------------------------------ names and roots
def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist") as info:
        list_categories(tmp_path / "nowhere", "mvtec")
    assert str(tmp_path / "nowhere") in str(info.value)


def test_unknown_category_lists_valid_names(tmp_path: Path) -> None:
    make_fake_category(tmp_path)
    with pytest.raises(DatasetError) as info:
        AnomalyDataset(tmp_path, "bottel", dataset="mvtec")
    assert "bottel" in str(info.value) and all(c in str(info.value) for c in MVTEC_CATEGORIES)
    with pytest.raises(DatasetError, match="Categories present under .*: bottle"):
        check_category(tmp_path, "mvtec", "zipper")
    with pytest.raises(DatasetError, match="mvtec, mpdd, synthetic"):
        check_category(tmp_path, "kolektor", "bottle")


def test_list_categories_filters_by_dataset(tmp_path: Path) -> None:
    make_fake_category(tmp_path, "bottle")
    make_fake_category(tmp_path, "weave")
    (tmp_path / "notes").mkdir()  # no train/ or test/: not a category
    assert list_categories(tmp_path, "mvtec") == ["bottle"]
    assert list_categories(tmp_path, "synthetic") == ["bottle", "weave"]
    with pytest.raises(DatasetError, match="single category folder"):
        list_categories(tmp_path / "bottle", "synthetic")


# ------------------------------------------------------------------ AnomalyDataset
def test_dataset_items_labels_and_masks(tmp_path: Path) -> None:
    make_fake_category(tmp_path)
    train = AnomalyDataset(tmp_path, "bottle", split="train", image_size=8)
    assert len(train) == 3 and train.labels == [0, 0, 0] and set(train.defect_types) == {"good"}
    test = AnomalyDataset(tmp_path, "bottle", split="test", image_size=8)
    assert test.has_masks
    assert test.defect_types == ["good", "good", "broken", "broken", "crack"]
    assert test.labels == [0, 0, 1, 1, 1]
    assert [Path(p).name for p in test.paths] == ["000.png", "001.png", "000.png", "001.png", "000.png"]
    good, bad = test[0], test[2]
    assert set(good) == {"image", "label", "mask", "defect_type", "path"}
    assert good["image"].shape == (3, 8, 8) and good["mask"].shape == (1, 8, 8)
    assert good["mask"].sum() == 0 and good["label"] == 0
    expected = np.zeros((8, 8), np.float32)
    expected[1:3, 1:3] = 1  # the 4x4 square at (2..5) of 16 px -> (1..2) of 8 px
    np.testing.assert_array_equal(bad["mask"][0].numpy(), expected)
    assert bad["label"] == 1 and bad["defect_type"] == "broken" and bad["path"].endswith("broken/000.png")


def test_dataset_without_ground_truth_is_image_level(tmp_path: Path) -> None:
    make_fake_category(tmp_path, masks=False)
    test = AnomalyDataset(tmp_path, "bottle", image_size=8)
    assert not test.has_masks and sum(test.labels) == 3
    assert all(test[i]["mask"].sum() == 0 for i in range(len(test)))


def test_defect_without_mask_is_named(tmp_path: Path) -> None:
    cat = make_fake_category(tmp_path)
    (cat / "ground_truth" / "crack" / "000_mask.png").unlink()
    with pytest.raises(DatasetError) as info:
        AnomalyDataset(tmp_path, "bottle", image_size=8)
    assert str(cat / "test" / "crack" / "000.png") in str(info.value)
    assert str(cat / "ground_truth" / "crack" / "000_mask.png") in str(info.value)


def test_mask_size_mismatch_names_both(tmp_path: Path) -> None:
    cat = make_fake_category(tmp_path)
    mask = cat / "ground_truth" / "broken" / "001_mask.png"
    _png(mask, np.zeros((10, 12), np.uint8))
    test = AnomalyDataset(tmp_path, "bottle", image_size=8)
    with pytest.raises(DatasetError) as info:
        test[3]
    assert str(mask) in str(info.value) and str(cat / "test" / "broken" / "001.png") in str(info.value)
    assert "12x10" in str(info.value) and "16x16" in str(info.value)


def test_truncated_image_in_dataset_is_named(tmp_path: Path) -> None:
    cat = make_fake_category(tmp_path, size=64)
    bad = cat / "test" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:100])
    test = AnomalyDataset(tmp_path, "bottle", image_size=8)
    with pytest.raises(DatasetError, match=str(bad)):
        test[1]


def test_missing_split_and_bad_split(tmp_path: Path) -> None:
    cat = make_fake_category(tmp_path)
    with pytest.raises(DatasetError, match="valid|expected one of"):
        AnomalyDataset(tmp_path, "bottle", split="val")
    for f in (cat / "train" / "good").iterdir():
        f.unlink()
    (cat / "train" / "good").rmdir()
    (cat / "train").rmdir()
    with pytest.raises(DatasetError, match=r"train.*missing"):
        AnomalyDataset(tmp_path, "bottle", split="train")


def test_files_subset_and_supports(tmp_path: Path) -> None:
    make_fake_category(tmp_path)
    files = ["train/good/002.png", "test/crack/000.png"]
    ds = AnomalyDataset(tmp_path, "bottle", image_size=8, files=files)
    assert ds.labels == [0, 1] and ds.defect_types == ["good", "crack"]
    assert ds[1]["mask"].sum() > 0
    supports = load_supports(tmp_path, "bottle", ["train/good/002.png", "train/good/000.png"], 8)
    assert supports.shape == (2, 3, 8, 8)
    torch.testing.assert_close(supports[0], load_image(tmp_path / "bottle/train/good/002.png", 8))
    with pytest.raises(DatasetError, match="009.png"):
        load_supports(tmp_path, "bottle", ["train/good/009.png"], 8)
    with pytest.raises(DatasetError, match="Empty"):
        load_supports(tmp_path, "bottle", [], 8)


# ------------------------------------------------------------------ real data
@pytest.mark.real_data
def test_real_bottle_counts_and_masks(shared_data_root: Path) -> None:
    root = shared_data_root / "mvtec_ad_subset"
    assert len(AnomalyDataset(root, "bottle", split="train", image_size=32)) == 209
    test = AnomalyDataset(root, "bottle", split="test", image_size=32)
    assert len(test) == 83 and sum(test.labels) == 63 and test.has_masks
    assert sorted(set(test.defect_types)) == ["broken_large", "broken_small", "contamination", "good"]
    for i in range(len(test)):
        item = test[i]
        assert item["image"].shape == (3, 32, 32)
        mask_sum = float(item["mask"].sum())
        assert (mask_sum > 0) == (item["label"] == 1), item["path"]
        assert set(item["mask"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.real_data
def test_real_other_layouts(shared_data_root: Path) -> None:
    screw = AnomalyDataset(shared_data_root / "mvtec_ad_256", "screw", image_size=32)
    assert not screw.has_masks and len(screw) == 160 and sum(screw.labels) == 119
    item = screw[len(screw) - 1]
    assert item["image"].shape == (3, 32, 32) and item["mask"].sum() == 0
    raw = load_image(item["path"], 32, normalize=False)  # screw is grey: three equal channels
    torch.testing.assert_close(raw[0], raw[2])
    plate = AnomalyDataset(shared_data_root / "mpdd_subset", "metal_plate", dataset="mpdd", image_size=32)
    assert len(plate) == 97 and set(plate.defect_types) == {"good", "defective"} and plate.has_masks
    assert plate[len(plate) - 1]["mask"].sum() > 0
    samples = AnomalyDataset(shared_data_root / "mvtec_ad_samples_nomask", "zipper", image_size=32)
    assert len(samples) == 9 and not samples.has_masks
    with pytest.raises(DatasetError, match="missing"):
        AnomalyDataset(shared_data_root / "mvtec_ad_samples_nomask", "zipper", split="train")
    with pytest.raises(DatasetError, match="metal_plate"):
        AnomalyDataset(shared_data_root / "mpdd_subset", "bottle", dataset="mpdd")
