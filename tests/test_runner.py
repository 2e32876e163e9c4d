"""Papermill batches: grid expansion, failure recorded and batch continues, resume skips, results collected."""
from __future__ import annotations

import json

import nbformat
import pytest

from fsad.cli import main
from fsad.runner import collect_results, expand_jobs, load_grid, run_batch


def _notebook(path, body):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("k = 1\nfail = False\noutput_dir = '.'")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


WRITE_RESULTS = """
import json, pathlib
if fail:
    raise RuntimeError(f"boom k={k}")
out = pathlib.Path(output_dir); out.mkdir(parents=True, exist_ok=True)
cell = {"method": "regad", "category": "c", "k": k, "run": 0, "image_auroc": 0.5 + k / 100}
(out / "r.json").write_text(json.dumps({"format": "fsad-results-v1", "cells": [cell]}))
"""


@pytest.fixture
def grid(tmp_path):
    _notebook(tmp_path / "nb.ipynb", WRITE_RESULTS)
    path = tmp_path / "grid.yaml"
    path.write_text(f"name: g\nparameters: {{fail: false}}\njobs:\n"
                    f"  - notebook: {tmp_path / 'nb.ipynb'}\n    grid: {{k: [2, 4]}}\n"
                    f"  - notebook: {tmp_path / 'nb.ipynb'}\n    parameters: {{fail: true, k: 8}}\n")
    return path


def test_expand_jobs_cartesian_product_and_unique_dirs(grid, tmp_path):
    jobs = expand_jobs(load_grid(grid), tmp_path / "runs")
    assert [j.parameters["k"] for j in jobs] == [2, 4, 8]
    assert len({j.output_dir for j in jobs}) == 3
    assert all(j.parameters["output_dir"] == str(j.output_dir) for j in jobs)


def test_batch_records_failure_continues_and_resumes(grid, tmp_path):
    runs = tmp_path / "runs"
    statuses, csv_path = run_batch(grid, runs)
    assert [s["status"] for s in statuses] == ["done", "done", "failed"]
    assert "boom k=8" in statuses[2]["error"]
    failed_copy = json.loads(open(statuses[2]["executed"]).read())  # executed copy kept, with the error
    assert "boom k=8" in json.dumps(failed_copy)
    rows = collect_results(runs / "g")
    assert sorted(r["image_auroc"] for r in rows) == [0.52, 0.54]
    assert csv_path.read_text().count("\n") == 3
    again, _ = run_batch(grid, runs, resume=True)
    assert [s["skipped"] for s in again] == [True, True, False]  # failures are retried, successes not


def test_cli_batch_exit_code_and_missing_grid(grid, tmp_path, capsys):
    assert main(["batch", str(grid), "--runs-dir", str(tmp_path / "r2")]) == 1
    assert "1 failed" in capsys.readouterr().out
    assert main(["batch", str(tmp_path / "nope.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
