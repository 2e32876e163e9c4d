from __future__ import annotations

import json
import math

import pytest

from fsad.results import ResultsFile, format_table, summarise


def _cell(category, k, run, auroc):
    return {"method": "regad", "category": category, "k": k, "run": run, "image_auroc": auroc,
            "pixel_auroc": None, "aupro": None, "f1_max": 0.5, "adaptation_s": 1.0, "inference_images_per_s": 10.0}


def test_summary_mean_std_and_macro_average():
    cells = [_cell("a", 2, 0, 0.8), _cell("a", 2, 1, 0.6), _cell("b", 2, 0, 1.0)]
    rows = summarise(cells)
    by_cat = {r["category"]: r for r in rows}
    assert by_cat["a"]["image_auroc_mean"] == pytest.approx(0.7)
    assert by_cat["a"]["image_auroc_std"] == pytest.approx(0.1)
    assert by_cat["macro_average"]["image_auroc_mean"] == pytest.approx(0.85)  # mean of 0.7 and 1.0
    assert math.isnan(by_cat["a"]["pixel_auroc_mean"])  # image-level-only categories stay empty
    assert "macro_average" in format_table(rows)


def test_results_file_resume_and_mismatch(tmp_path):
    path = tmp_path / "r.json"
    first = ResultsFile(path, {"resume_key": {"x": 1}})
    first.add(_cell("a", 2, 0, 0.8))
    assert json.loads(path.read_text())["cells"][0]["image_auroc"] == 0.8
    assert path.with_suffix(".csv").read_text().startswith("method,category,k,runs")
    resumed = ResultsFile(path, {"resume_key": {"x": 1}}, resume=True)
    assert resumed.done() == {("regad", "a", 2, 0)}
    with pytest.raises(ValueError, match="different configuration"):
        ResultsFile(path, {"resume_key": {"x": 2}}, resume=True)
    fresh = ResultsFile(path, {"resume_key": {"x": 2}})
    assert fresh.done() == set()
