"""Papermill batches: grid expansion, failure recorded and batch continues, resume skips, results collected."""

from __future__ import annotations

import json
import subprocess
import sys

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
    path.write_text(
        f"name: g\nparameters: {{fail: false}}\njobs:\n"
        f"  - notebook: {tmp_path / 'nb.ipynb'}\n    grid: {{k: [2, 4]}}\n"
        f"  - notebook: {tmp_path / 'nb.ipynb'}\n    parameters: {{fail: true, k: 8}}\n"
    )
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


# --------------------------------------------------------------------------- issue 16: the four batch-runner faults
def test_relative_runs_dir_keeps_every_output_where_the_shell_is(tmp_path, monkeypatch):
    """Notebooks run in their own folder; a relative --runs-dir must still mean the shell's folder."""
    notebooks, shell = tmp_path / "nbs", tmp_path / "shell"
    notebooks.mkdir(), shell.mkdir()
    _notebook(notebooks / "nb.ipynb", WRITE_RESULTS)
    grid = shell / "grid.yaml"
    grid.write_text(f"name: g\njobs:\n  - notebook: {notebooks / 'nb.ipynb'}\n    grid: {{k: [2, 4]}}\n")
    monkeypatch.chdir(shell)
    assert main(["batch", "grid.yaml", "--runs-dir", "rel"]) == 0
    rows = collect_results(shell / "rel" / "g")
    assert sorted(r["image_auroc"] for r in rows) == [0.52, 0.54]
    assert (shell / "rel" / "g" / "results.csv").read_text().count("\n") == 3  # header + 2 rows, not empty
    assert not (notebooks / "rel").exists()


def test_device_is_not_part_of_the_cell_folder_so_resume_works_on_another_gpu(grid, tmp_path):
    on_first = expand_jobs(load_grid(grid), tmp_path / "runs", overrides={"device": "cuda:0"})
    on_second = expand_jobs(load_grid(grid), tmp_path / "runs", overrides={"device": "cuda:1"})
    assert [j.output_dir for j in on_first] == [j.output_dir for j in on_second]
    assert [j.parameters["device"] for j in on_second] == ["cuda:1"] * 3
    first, _ = run_batch(grid, tmp_path / "runs", overrides={"device": "cuda:0"})
    again, _ = run_batch(grid, tmp_path / "runs", resume=True, overrides={"device": "cuda:1"})
    assert [s["skipped"] for s in again] == [True, True, False]
    # What a cell computes still names its folder.
    other_k = expand_jobs(load_grid(grid), tmp_path / "runs", overrides={"k": 3})  # 2 cells: fail true/false
    assert len({j.output_dir for j in other_k} | {j.output_dir for j in on_first}) == 5


def test_set_is_one_pair_per_flag_and_does_not_swallow_the_grid(grid, tmp_path, capsys):
    from fsad.cli import build_parser

    args = build_parser().parse_args(["batch", "--set", "k=3", str(grid), "--set", "fail=false"])
    assert args.grid == str(grid) and args.set == ["k=3", "fail=false"]
    # Both overrides reach every cell: k=3 everywhere, and the failing job no longer fails.
    assert main(["batch", "--set", "k=3", str(grid), "--set", "fail=false", "--runs-dir", str(tmp_path / "r")]) == 0
    assert sorted(r["image_auroc"] for r in collect_results(tmp_path / "r" / "g")) == [
        0.53
    ]  # all 3 cells became one: one folder, one row
    assert main(["batch", str(grid), "--set", "k"]) == 2
    assert "--set expects KEY=VALUE" in capsys.readouterr().err


def test_commands_quoted_in_example_grids_exist():
    """Every `python -m fsad|data_tools ...` a grid's comments tell the reader to run parses with the real CLI."""
    import re
    import shlex
    from pathlib import Path

    from data_tools.__main__ import build_parser as data_parser
    from fsad.cli import build_parser as fsad_parser

    grids = sorted((Path(__file__).resolve().parents[1] / "notebooks" / "grids").glob("*.yaml"))
    found = 0
    for path in grids:
        for line in path.read_text().splitlines():
            if not line.lstrip().startswith("#"):
                continue
            for tool, rest in re.findall(r"python -m (fsad|data_tools) ([^()`]*)", line):
                parser = fsad_parser() if tool == "fsad" else data_parser()
                try:
                    parser.parse_args(shlex.split(rest))
                except SystemExit:
                    pytest.fail(f"{path.name}: `python -m {tool} {rest.strip()}` is not a valid command")
                found += 1
    assert found >= 5
    text = (grids[0].parent / "mvtec_full_gpu.yaml").read_text()
    assert "python -m data_tools download --dataset mvtec --to" in text


# --------------------------------------------------------------------------- atomic cells
def test_a_killed_attempt_leaves_nothing_that_counts(grid, tmp_path):
    """An attempt folder without its commit (a killed run) is never collected, and resume re-runs the cell."""
    runs = tmp_path / "runs"
    statuses, _ = run_batch(grid, runs)
    job = expand_jobs(load_grid(grid), runs / "g")[0]
    # Simulate a re-execution of cell 0 killed half-way (its attempt folder holds a results file already).
    half = job.output_dir.with_name(f".{job.output_dir.name}.attempt-deadbeef")
    half.mkdir()
    cell = {"method": "regad", "category": "c", "k": 99, "run": 0, "image_auroc": 0.99}
    (half / "r.json").write_text(json.dumps({"format": "fsad-results-v1", "cells": [cell]}))
    assert sorted(r["image_auroc"] for r in collect_results(runs / "g")) == [0.52, 0.54]
    # The next batch removes the leftover attempt and, resuming, re-runs only the failed cell.
    again, csv_path = run_batch(grid, runs, resume=True)
    assert not half.exists()
    assert [s["skipped"] for s in again] == [True, True, False]
    assert csv_path.read_text().count("\n") == 3  # no duplicate rows
    assert not list(runs.rglob(".*attempt-*"))


def test_commit_keeps_the_first_done_and_replaces_a_failure(grid, tmp_path):
    from fsad.runner import execute_job, read_status, record_failure

    runs = tmp_path / "runs"
    jobs = expand_jobs(load_grid(grid), runs)
    first = execute_job(jobs[0], resume=False, batch_id="b1")
    assert first["status"] == "done" and not first["skipped"]
    # A retry of the same batch (its worker died after committing) does not run again.
    assert execute_job(jobs[0], resume=False, batch_id="b1")["skipped"]
    # A worker lost for good: recorded failed with the reason, unless the cell had already committed.
    assert record_failure(jobs[0], "lost", batch_id="b1")["status"] == "done"
    lost = record_failure(jobs[1], "WorkerCrashedError: gave up after 2 retries", batch_id="b1")
    assert lost["status"] == "failed" and read_status(jobs[1])["error"].startswith("WorkerCrashedError")
    # A later successful run replaces the failure (one folder, one status, one results file).
    redo = execute_job(jobs[1], resume=True, batch_id="b2")
    assert redo["status"] == "done" and read_status(jobs[1])["status"] == "done"
    assert sorted(r["image_auroc"] for r in collect_results(runs)) == [0.52, 0.54]
    assert not list(runs.rglob(".*"))  # no attempt or replaced folders left behind


def test_ray_executor_is_imported_only_when_asked_for(grid, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from fsad.runner import run_batch; from fsad.cli import build_parser; "
        f"run_batch({str(grid)!r}, {str(tmp_path / 'runs')!r}, progress=False); "
        "print('ray' in sys.modules, 'fsad.ray_executor' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split()[-2:] == ["False", "False"]
    with pytest.raises(ValueError, match="Unknown executor"):
        run_batch(grid, tmp_path / "runs", executor="dask")


def test_results_csv_is_load_results_in_percent(grid, tmp_path):
    """The batch's results.csv is fsad.results.load_results over its committed files: metrics in %, config columns."""
    import pandas as pd

    _, csv_path = run_batch(grid, tmp_path / "runs")
    table = pd.read_csv(csv_path)
    assert sorted(table["image_auroc"]) == [52.0, 54.0]  # the notebooks stored 0.52 and 0.54
    assert {"results_file", "dataset", "backbone", "weights_sha256", "k", "run", "fsad_kit"} <= set(table.columns)
    assert all(not f.startswith("/") for f in table["results_file"])


def test_the_batch_runner_does_not_import_torch():
    # Every Ray worker imports fsad.runner before its first cell; torch's import (about 2 s) would be paid per
    # worker for nothing, since the notebooks' kernels import what they need themselves.
    code = (
        "import sys, fsad.runner, fsad.results; print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
