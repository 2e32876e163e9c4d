"""Tests for data_tools.verify and the `python -m data_tools verify` command (exit 2 on each bad input)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_tools.__main__ import main
from data_tools.constants import MPDD_CATEGORIES
from data_tools.verify import verify_dataset

REPO = Path(__file__).resolve().parents[1]


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def make_fake(root: Path, category: str = "bottle", size: int = 16, masks: bool = True) -> Path:
    """train/good ×3, test/good ×2, test/broken ×2 (+ masks when asked), test/crack ×1 (+ mask)."""
    cat = root / category
    rng = np.random.default_rng(0)
    for i in range(3):
        _png(cat / "train" / "good" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    for i in range(2):
        _png(cat / "test" / "good" / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
    for defect, n in {"broken": 2, "crack": 1}.items():
        for i in range(n):
            _png(cat / "test" / defect / f"{i:03d}.png", rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
            if masks:
                mask = np.zeros((size, size), np.uint8)
                mask[1:4, 1:4] = 255
                _png(cat / "ground_truth" / defect / f"{i:03d}_mask.png", mask)
    return cat


def _run(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    code = main(["verify", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_valid_dataset_prints_counts(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_fake(tmp_path)
    code, out, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 0, err
    lines = {tuple(line.split()[:3]): line.split()[3:] for line in out.splitlines() if line.startswith("bottle")}
    assert lines[("bottle", "train", "good")] == ["3", "-"]
    assert lines[("bottle", "test", "good")] == ["2", "-"]
    assert lines[("bottle", "test", "broken")] == ["2", "2"]
    assert lines[("bottle", "test", "crack")] == ["1", "1"]
    assert any(line.split()[:3] == ["total", "8", "3"] for line in out.splitlines())
    report = verify_dataset(tmp_path, "mvtec")
    assert report.ok and report.has_masks == {"bottle": True}
    assert report.counts[("bottle", "test", "broken")] == 2


def test_missing_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(capsys, "--root", str(tmp_path / "nope"), "--dataset", "mvtec")
    assert code == 2 and str(tmp_path / "nope") in err and "does not exist" in err


def test_missing_split(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path, masks=False)
    for path in sorted((cat / "test").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    (cat / "test").rmdir()
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 2 and f"{cat / 'test'}: missing split" in err


def test_train_required_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path)
    for path in (cat / "train" / "good").iterdir():
        path.unlink()
    (cat / "train" / "good").rmdir()
    (cat / "train").rmdir()
    code, out, _ = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 0 and "test only" in out
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec", "--require-splits", "train", "test")
    assert code == 2 and f"{cat / 'train'}: missing split" in err


def test_defect_without_mask(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path)
    (cat / "ground_truth" / "broken" / "001_mask.png").unlink()
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 2
    assert f"{cat / 'test' / 'broken' / '001.png'}: defect image without its mask" in err
    assert str(cat / "ground_truth" / "broken" / "001_mask.png") in err


def test_no_ground_truth_is_image_level_only(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_fake(tmp_path, "screw", masks=False)
    code, out, _ = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 0 and "screw: image-level only" in out


def test_mask_size_mismatch(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path)
    mask = _png(cat / "ground_truth" / "crack" / "000_mask.png", np.zeros((8, 9), np.uint8))
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 2 and f"{mask}: mask is 9x8 but its image" in err and "16x16" in err


def test_truncated_png_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path, size=64)
    bad = cat / "train" / "good" / "001.png"
    bad.write_bytes(bad.read_bytes()[:200])
    garbage = cat / "test" / "good" / "001.png"
    garbage.write_bytes(b"not a png at all")
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 2
    assert f"{bad}: unreadable or truncated image" in err
    assert f"{garbage}: unreadable or truncated image" in err


def test_orphan_mask(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path)
    orphan = _png(cat / "ground_truth" / "crack" / "005_mask.png", np.zeros((16, 16), np.uint8))
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mvtec")
    assert code == 2 and f"{orphan}: mask without its image" in err


def test_unknown_category_lists_valid(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    make_fake(tmp_path, "metal_plates")
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mpdd")
    assert code == 2 and "unknown mpdd category 'metal_plates'" in err
    assert all(name in err for name in MPDD_CATEGORIES)
    make_fake(tmp_path, "metal_plate")
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "mpdd", "--categories", "tubes")
    assert code == 2 and "category folder missing" in err and "metal_plate" in err
    # synthetic accepts any folder name
    code, _, err = _run(capsys, "--root", str(tmp_path), "--dataset", "synthetic")
    assert code == 0, err


def test_category_folder_given_as_root(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    cat = make_fake(tmp_path)
    code, _, err = _run(capsys, "--root", str(cat), "--dataset", "mvtec")
    assert code == 2 and "single category folder" in err


def test_module_entry_point_exit_status(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "data_tools", "verify", "--root", str(tmp_path / "x"), "--dataset", "mvtec"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and str(tmp_path / "x") in result.stderr


@pytest.mark.real_data
@pytest.mark.parametrize(
    "subset, dataset",
    [
        ("mvtec_ad_subset", "mvtec"),
        ("mpdd_subset", "mpdd"),
        ("mvtec_ad_256", "mvtec"),
        ("mvtec_ad_samples_nomask", "mvtec"),
    ],
)
def test_shared_subsets_verify(
    shared_data_root: Path, capsys: pytest.CaptureFixture, subset: str, dataset: str
) -> None:
    code, out, err = _run(capsys, "--root", str(shared_data_root / subset), "--dataset", dataset)
    assert code == 0, err
    if subset == "mvtec_ad_256":
        assert "screw: image-level only" in out
    if subset == "mvtec_ad_subset":
        assert any(line.split()[:5] == ["bottle", "test", "broken_small", "22", "22"] for line in out.splitlines())
