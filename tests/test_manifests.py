"""Tests for data_tools.manifests: seeded support sets, counts == root, committed file, errors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest

from data_tools.__main__ import main
from data_tools.constants import MVTEC_TRAIN_GOOD_COUNTS
from data_tools.datasets import DatasetError
from data_tools.manifests import (
    MANIFEST_VERSION,
    check_manifest_files,
    default_manifest_path,
    load_manifest,
    make_manifest,
    manifest_for,
    manifest_to_json,
    save_manifest,
    support_files,
)


def fake_root(root: Path, counts: dict[str, int]) -> Path:
    """Empty files named like MVTec's train/good images (000.png ...): manifests never open them."""
    for category, n in counts.items():
        good = root / category / "train" / "good"
        good.mkdir(parents=True)
        for i in range(n):
            (good / f"{i:03d}.png").touch()
    return root


def test_counts_and_root_give_identical_manifests(tmp_path: Path) -> None:
    counts = {"bottle": 209, "toothbrush": 60, "screw": 320}
    root = fake_root(tmp_path / "data", counts)
    (root / "bottle" / "train" / "good" / ".DS_Store").touch()  # hidden junk is ignored
    from_counts = make_manifest(counts=counts, ks=(1, 2, 4, 8, 16, 32), runs=10, seed=0)
    from_root = make_manifest(root=root, dataset="mvtec", ks=(1, 2, 4, 8, 16, 32), runs=10, seed=0)
    assert from_counts == from_root
    assert manifest_to_json(from_counts) == manifest_to_json(from_root)


def test_cli_counts_and_root_write_the_same_bytes_as_the_committed_file(tmp_path: Path) -> None:
    root = fake_root(tmp_path / "mvtec", dict(MVTEC_TRAIN_GOOD_COUNTS))
    args = ["--k", "1", "2", "4", "8", "16", "32", "--runs", "10", "--seed", "0"]
    assert main(["supports", "--counts-from", "mvtec-official", *args, "--out", str(tmp_path / "a.json")]) == 0
    assert main(["supports", "--root", str(root), "--dataset", "mvtec", *args, "--out", str(tmp_path / "b.json")]) == 0
    a, b = (tmp_path / "a.json").read_bytes(), (tmp_path / "b.json").read_bytes()
    assert a == b
    assert a == default_manifest_path("mvtec").read_bytes()


def test_committed_mvtec_manifest_matches_generator() -> None:
    committed = load_manifest(default_manifest_path("mvtec"))
    assert committed == make_manifest(counts=MVTEC_TRAIN_GOOD_COUNTS, dataset="mvtec")
    assert sorted(committed["categories"]) == sorted(MVTEC_TRAIN_GOOD_COUNTS)
    assert committed["version"] == MANIFEST_VERSION and committed["seed"] == 0 and committed["runs"] == 10
    assert all(entry["skipped"] == {} for entry in committed["categories"].values())  # every n >= 32


def test_draws_follow_the_documented_generator() -> None:
    m = make_manifest(counts={"bottle": 209}, ks=(4,), runs=3, seed=5)
    rng = np.random.default_rng([5, zlib.crc32(b"bottle"), 4])
    expected = [[f"train/good/{i:03d}.png" for i in sorted(rng.choice(209, 4, replace=False))] for _ in range(3)]
    assert m["categories"]["bottle"]["supports"]["4"] == expected


def test_draw_properties() -> None:
    m = make_manifest(counts={"bottle": 209, "toothbrush": 60}, ks=(1, 2, 8, 32), runs=10, seed=0)
    for category, entry in m["categories"].items():
        for key, sets in entry["supports"].items():
            assert len(sets) == 10
            for files in sets:
                assert len(files) == int(key) == len(set(files))  # without replacement
                assert files == sorted(files)
                assert all(0 <= int(f[len("train/good/") : -4]) < entry["n_train_good"] for f in files)
            assert len({tuple(s) for s in sets}) > 1  # runs differ
    # each (category, k) has its own stream: other ks or fewer runs do not change a set
    alone = make_manifest(counts={"bottle": 209}, ks=(8,), runs=4, seed=0)
    assert alone["categories"]["bottle"]["supports"]["8"] == m["categories"]["bottle"]["supports"]["8"][:4]
    other_seed = make_manifest(counts={"bottle": 209}, ks=(8,), runs=4, seed=1)
    assert other_seed["categories"]["bottle"]["supports"] != alone["categories"]["bottle"]["supports"]


def test_k_too_large_for_the_pool_is_skipped_and_explained() -> None:
    m = make_manifest(counts={"capsule": 4}, ks=(2, 4, 8), runs=3)
    entry = m["categories"]["capsule"]
    assert sorted(entry["supports"], key=int) == ["2", "4"] and "8" in entry["skipped"]
    assert (
        entry["supports"]["4"]
        == [["train/good/000.png", "train/good/001.png", "train/good/002.png", "train/good/003.png"]] * 3
    )
    with pytest.raises(DatasetError, match=r"k=8 .*only 4|k=8 > 4"):
        support_files(m, "capsule", 8, 0)


def test_support_files_errors_list_what_exists() -> None:
    m = make_manifest(counts={"bottle": 209, "cable": 224}, ks=(2, 4), runs=3)
    assert len(support_files(m, "cable", 4, 2)) == 4
    with pytest.raises(DatasetError, match="bottle, cable"):
        support_files(m, "zipper", 2, 0)
    with pytest.raises(DatasetError, match="Available k: 2, 4"):
        support_files(m, "bottle", 16, 0)
    with pytest.raises(DatasetError, match=r"0\.\.2"):
        support_files(m, "bottle", 2, 3)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        make_manifest()
    with pytest.raises(ValueError, match="ks"):
        make_manifest(counts={"bottle": 10}, ks=(0,))
    with pytest.raises(ValueError, match="seed"):
        make_manifest(counts={"bottle": 10}, seed=-1)


def test_save_load_round_trip_and_validation(tmp_path: Path) -> None:
    m = make_manifest(counts={"bottle": 12}, ks=(1, 2), runs=2)
    path = save_manifest(m, tmp_path / "sub" / "m.json")
    assert load_manifest(path) == m
    text = path.read_text()
    assert '["train/good/' in text  # one run per line
    bad = dict(m, version=99)
    (tmp_path / "v.json").write_text(json.dumps(bad))
    with pytest.raises(DatasetError, match="version 99"):
        load_manifest(tmp_path / "v.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"x\.json is not valid JSON"):
        load_manifest(tmp_path / "x.json")
    with pytest.raises(DatasetError, match="does not exist"):
        load_manifest(tmp_path / "none.json")


def test_missing_files_under_root_are_named(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"bottle": 20})
    m = make_manifest(counts={"bottle": 209}, ks=(8,), runs=10)
    with pytest.raises(DatasetError) as info:
        check_manifest_files(m, root)
    assert "expects 209 train/good images" in str(info.value) and str(root / "bottle" / "train" / "good") in str(
        info.value
    )
    small = make_manifest(counts={"bottle": 20}, ks=(8,), runs=10)
    assert check_manifest_files(small, root) > 8
    with pytest.raises(DatasetError, match="not in this manifest"):
        check_manifest_files(small, root, ["cable"])


def test_manifest_for_prefers_the_published_sets(tmp_path: Path) -> None:
    root = fake_root(tmp_path, {"bottle": 209, "capsule": 5})
    m = manifest_for(root, "mvtec", ks=(2, 8), runs=4, seed=0)
    published = load_manifest(default_manifest_path("mvtec"))
    assert m["origin"]["bottle"].startswith("published")
    assert m["categories"]["bottle"]["supports"]["8"] == published["categories"]["bottle"]["supports"]["8"][:4]
    assert m["origin"]["capsule"] == "generated from root"  # 5 images, the official count is 219
    assert "8" in m["categories"]["capsule"]["skipped"]
    assert default_manifest_path("synthetic").name == "synthetic.json"
    with pytest.raises(DatasetError, match="mvtec, mpdd, synthetic"):
        default_manifest_path("visa")


@pytest.mark.real_data
def test_published_manifest_files_exist_for_real_bottle(shared_data_root: Path) -> None:
    root = shared_data_root / "mvtec_ad_subset"
    published = load_manifest(default_manifest_path("mvtec"))
    assert check_manifest_files(published, root, ["bottle"]) > 100
    assert (
        make_manifest(root=root, dataset="mvtec", categories=["bottle"])["categories"]["bottle"]
        == published["categories"]["bottle"]
    )
    with pytest.raises(DatasetError, match="capsule"):
        check_manifest_files(published, root, ["capsule"])  # the subset holds 4 of capsule's 219
