from __future__ import annotations

import pytest

from data_tools.combine import combine_roots
from data_tools.datasets import DatasetError, list_categories


def _category(root, name):
    (root / name / "train" / "good").mkdir(parents=True)
    (root / name / "test" / "good").mkdir(parents=True)


def test_combine_links_categories_from_several_roots(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _category(a, "bottle")
    _category(b, "screw")
    assert combine_roots([a, b], tmp_path / "all") == ["bottle", "screw"]
    assert list_categories(tmp_path / "all", "mvtec") == ["bottle", "screw"]
    assert (tmp_path / "all" / "screw").resolve() == (b / "screw").resolve()
    assert combine_roots([a, b], tmp_path / "all", categories=["screw"]) == ["screw"]  # rerun replaces links


def test_combine_refuses_duplicates_and_unknown(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    _category(a, "bottle")
    _category(b, "bottle")
    with pytest.raises(DatasetError, match="in both"):
        combine_roots([a, b], tmp_path / "all")
    with pytest.raises(DatasetError, match="not under any"):
        combine_roots([a], tmp_path / "x", categories=["zipper"])
