"""Tests for data_tools.synthetic: determinism, layout, exact masks, misalignment, CLI."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools import synthetic as syn

SMALL = dict(image_size=64, n_train=3, n_test_good=2, n_test_per_defect=2)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> Path:
    return syn.generate_synthetic_dataset(tmp_path_factory.mktemp("syn") / "a", seed=3, **SMALL)


def test_categories_cover_textures_objects_and_misalignment():
    assert len(syn.SYNTHETIC_CATEGORIES) >= 4
    assert len(set(syn.TEXTURE_CATEGORIES) & set(syn.SYNTHETIC_CATEGORIES)) >= 2
    assert len(set(syn.OBJECT_CATEGORIES) & set(syn.SYNTHETIC_CATEGORIES)) >= 2
    assert set(syn.MISALIGNED_CATEGORIES) <= set(syn.OBJECT_CATEGORIES)
    assert all(len(syn.DEFECT_TYPES[c]) >= 2 for c in syn.SYNTHETIC_CATEGORIES)


def test_same_seed_gives_byte_identical_tree(small_root, tmp_path):
    again = syn.generate_synthetic_dataset(tmp_path / "b", seed=3, **SMALL)
    first, second = _tree_hashes(small_root), _tree_hashes(again)
    assert len(first) == len(syn.expected_files(None, 3, 2, 2)) + 2  # + SYNTHETIC.json and the marker file
    assert first == second


def test_different_seed_gives_different_images(small_root, tmp_path):
    other = syn.generate_synthetic_dataset(tmp_path / "c", seed=4, categories=["weave", "bracket"], **SMALL)
    a, b = _tree_hashes(small_root), _tree_hashes(other)
    common = [k for k in b if k.endswith(".png") and "/train/" in k]
    assert common and all(a[k] != b[k] for k in common)


def test_layout_counts_and_mask_properties(small_root):
    info = json.loads((small_root / syn.SYNTHETIC_INFO_FILE).read_text())
    assert info["seed"] == 3 and info["generator"] == syn.GENERATOR_VERSION and info["image_size"] == 64
    for cat in syn.SYNTHETIC_CATEGORIES:
        base = small_root / cat
        assert sorted(p.name for p in (base / "train" / "good").iterdir()) == ["000.png", "001.png", "002.png"]
        assert len(list((base / "test" / "good").glob("*.png"))) == 2
        assert not (base / "ground_truth" / "good").exists()  # good images have no mask, as in MVTec
        assert sorted(p.name for p in (base / "test").iterdir()) == sorted(("good",) + syn.DEFECT_TYPES[cat])
        for defect in syn.DEFECT_TYPES[cat]:
            for i in range(2):
                image = Image.open(base / "test" / defect / f"{i:03d}.png")
                mask = Image.open(base / "ground_truth" / defect / f"{i:03d}_mask.png")
                assert image.mode == "RGB" and mask.mode == "L"
                assert image.size == mask.size == (64, 64)
                values = np.unique(np.asarray(mask))
                assert set(values.tolist()) == {0, 255}, (cat, defect, values)
                frac = (np.asarray(mask) > 0).mean()
                assert 0.001 < frac < 0.1, (cat, defect, frac)  # visible, not the whole image


@pytest.mark.parametrize("category", syn.SYNTHETIC_CATEGORIES)
def test_defect_changes_exactly_the_mask(category):
    for defect in syn.DEFECT_TYPES[category]:
        clean, none_mask = syn.render_sample(category, 0, f"test/{defect}", 1, None, 64)
        broken, mask = syn.render_sample(category, 0, f"test/{defect}", 1, defect, 64)
        assert not none_mask.any()
        diff = np.abs(clean.astype(int) - broken.astype(int)).max(axis=2)
        assert mask.sum() >= 6
        assert (diff[~mask] == 0).all(), f"{category}/{defect} changed pixels outside its mask"
        # almost every masked pixel changed, and visibly on average (8-bit levels)
        assert (diff[mask] > 0).mean() > 0.9, (category, defect)
        assert diff[mask].mean() > 15, (category, defect, diff[mask].mean())


def test_normal_images_vary_but_keep_statistics():
    images = np.stack([syn.render_sample("weave", 0, "train/good", i, None, 64)[0] for i in range(4)]).astype(float)
    assert all(np.abs(images[0] - images[i]).mean() > 3 for i in range(1, 4))
    means = images.mean(axis=(1, 2, 3))
    assert means.std() < 0.1 * means.mean()  # colour/lighting jitter is mild


def test_misaligned_category_moves_and_rotates_its_part():
    size = 128
    centroids, angles = [], []
    for i in range(10):
        image, _ = syn.render_sample("bracket", 0, "train/good", i, None, size)
        # the brown part vs the grey cloth: red clearly above blue
        part = image[..., 0].astype(int) - image[..., 2].astype(int) > 40
        ys, xs = np.nonzero(part)
        centroids.append((xs.mean(), ys.mean()))
        cov = np.cov(np.stack([xs, ys]))
        angles.append(0.5 * np.degrees(np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])))
    centroids = np.array(centroids)
    assert centroids.std(axis=0).max() > 0.02 * size  # several px of translation
    assert np.ptp(angles) > 8.0  # orientation changes by more than a few degrees
    # the aligned object stays put
    washer = []
    for i in range(6):
        image, _ = syn.render_sample("washer", 0, "train/good", i, None, size)
        ys, xs = np.nonzero(image.mean(axis=2) > 90)
        washer.append((xs.mean(), ys.mean()))
    assert np.array(washer).std(axis=0).max() < 0.02 * size


def test_ensure_generates_once_and_regenerates_on_change(tmp_path):
    root = tmp_path / "ens"
    kwargs = dict(image_size=32, n_train=1, n_test_good=1, n_test_per_defect=1, categories=["marble"])
    syn.ensure_synthetic_dataset(root, seed=0, **kwargs)
    marker = root / "marble" / "train" / "good" / "000.png"
    stamp = marker.stat().st_mtime_ns
    syn.ensure_synthetic_dataset(root, seed=0, **kwargs)
    assert marker.stat().st_mtime_ns == stamp  # complete and same options: untouched
    (root / "marble" / "test" / "crack" / "000.png").unlink()
    syn.ensure_synthetic_dataset(root, seed=0, **kwargs)
    assert (root / "marble" / "test" / "crack" / "000.png").is_file()  # incomplete: regenerated
    before = marker.read_bytes()
    syn.ensure_synthetic_dataset(root, seed=1, **kwargs)
    assert json.loads((root / syn.SYNTHETIC_INFO_FILE).read_text())["seed"] == 1
    assert marker.read_bytes() != before


def test_default_root_is_inside_the_repo():
    root = syn.default_synthetic_root()
    assert root.parts[-2:] == ("data", "synthetic")
    assert (root.parent.parent / "data_tools" / "synthetic.py").is_file()


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="valid: weave, marble"):
        syn.generate_synthetic_dataset(tmp_path, categories=["carpet"], **SMALL)
    with pytest.raises(ValueError, match="image_size"):
        syn.render_sample("weave", 0, "train/good", 0, None, 8)
    with pytest.raises(ValueError, match="valid: hole, stain, thread"):
        syn.render_sample("weave", 0, "test/crack", 0, "crack", 64)
    with pytest.raises(ValueError, match="n_train"):
        syn.generate_synthetic_dataset(tmp_path, n_train=0)


def test_cli_writes_dataset_and_preview(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    syn.register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli"
    args = parser.parse_args(
        [
            "synthetic",
            "--out",
            str(out),
            "--seed",
            "2",
            "--image-size",
            "48",
            "--n-train",
            "2",
            "--n-test-good",
            "1",
            "--n-test-per-defect",
            "1",
            "--categories",
            "washer",
            "weave",
            "--preview",
        ]
    )
    assert args.func(args) == 0
    assert (out / "washer" / "ground_truth" / "missing" / "000_mask.png").is_file()
    assert not (out / "marble").exists()
    preview = Image.open(out / "preview.png")
    assert preview.width > 4 * 128 and preview.height > 2 * 128
    assert "preview" in capsys.readouterr().out
    bad = parser.parse_args(["synthetic", "--out", str(out), "--n-train", "0"])
    assert bad.func(bad) == 2
    assert "n_train" in capsys.readouterr().err
