from __future__ import annotations

import json
import math

import pytest

from fsad.results import ResultsFile, format_table, summarise


def _cell(category, k, run, auroc):
    return {
        "method": "regad",
        "category": category,
        "k": k,
        "run": run,
        "image_auroc": auroc,
        "pixel_auroc": None,
        "aupro": None,
        "f1_max": 0.5,
        "adaptation_s": 1.0,
        "inference_images_per_s": 10.0,
    }


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
    with pytest.raises(ValueError, match=r"written with other options \(x: file has 1, this run 2\)"):
        ResultsFile(path, {"resume_key": {"x": 2}}, resume=True)
    fresh = ResultsFile(path, {"resume_key": {"x": 2}})
    assert fresh.done() == set()


RESULTS_DIR = __import__("pathlib").Path(__file__).resolve().parents[1] / "figures" / "results"


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == pytest.approx(b, rel=1e-12, abs=1e-15) if isinstance(a, float) else a == b


def test_summarise_reproduces_every_committed_summary():
    """The pandas summary equals the summary the committed results files were written with."""
    files = [
        f for f in sorted(RESULTS_DIR.rglob("*.json")) if json.loads(f.read_text()).get("format") == "fsad-results-v1"
    ]
    assert len(files) >= 10
    for file in files:
        document = json.loads(file.read_text())
        ours = summarise(document["cells"])
        assert len(ours) == len(document["summary"]), file
        for mine, theirs in zip(ours, document["summary"]):
            assert set(mine) == set(theirs), file
            for key in mine:
                assert _same(mine[key], theirs[key] if theirs[key] is not None else float("nan")), (file, key)


def test_summary_csv_is_in_percent(tmp_path):
    path = tmp_path / "r.json"
    results = ResultsFile(path, {"resume_key": {}})
    results.add(_cell("a", 2, 0, 0.8))
    import pandas as pd

    table = pd.read_csv(path.with_suffix(".csv"))
    assert table.loc[table.category == "a", "image_auroc_mean"].item() == pytest.approx(80.0)
    assert table.loc[table.category == "a", "adaptation_s_mean"].item() == pytest.approx(1.0)  # seconds stay seconds


def test_load_results_one_row_per_cell_in_percent(tmp_path):
    from fsad.results import load_results

    frame = load_results(RESULTS_DIR / "mobilenet_v2")
    documents = [json.loads(f.read_text()) for f in sorted((RESULTS_DIR / "mobilenet_v2").rglob("*.json"))]
    documents = [d for d in documents if d.get("format") == "fsad-results-v1"]
    assert len(frame) == sum(len(d["cells"]) for d in documents)
    assert set(frame.backbone) == {"mobilenet_v2"} and set(frame.weights) == {"imagenet"}
    assert frame.weights_sha256.str.startswith("cc028fe6").all()
    first = documents[0]["cells"][0]
    row = frame[
        (frame.source.str.endswith(".json"))
        & (frame.category == first["category"])
        & (frame.k == first["k"])
        & (frame.run == first["run"])
        & (frame.method == first["method"])
    ]
    assert 100 * first["image_auroc"] in list(row.image_auroc)
    assert frame.image_auroc.between(0, 100).all()
    assert not frame.duplicated(["source", "method", "category", "k", "run"]).any()
    # A file named explicitly must be a results file; a folder skips other JSON (manifests).
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a fsad-results-v1 results file"):
        load_results(bad)
    assert len(load_results(tmp_path)) == 0
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_results(tmp_path / "missing.json")


def test_every_committed_csv_is_the_percent_table_of_its_json():
    """The CSVs beside committed results and ablation JSON are what the current writers make (one unit: %)."""
    from pathlib import Path

    from fsad.ablation import rows_csv
    from fsad.results import summary_csv

    checked = 0
    for path in sorted((Path(__file__).resolve().parents[1] / "figures").rglob("*.json")):
        document = json.loads(path.read_text())
        csv = path.with_suffix(".csv")
        if not isinstance(document, dict) or not csv.is_file():
            continue
        if document.get("format") == "fsad-results-v1":
            expected = summary_csv(summarise(document["cells"]))
        elif path.stem in ("table5", "table6", "table7") and "rows" in document:
            expected = rows_csv(document["rows"])
        else:
            continue
        assert csv.read_text() == expected, f"{csv} is stale: regenerate it from {path.name}"
        checked += 1
    assert checked >= 70
