"""Papermill batches: run notebooks over parameter grids headlessly, resumably, and collect their results.

A grid file (YAML) lists notebooks, fixed parameters and a grid of values::

    name: table5-synthetic            # results go to runs/<name>/
    parameters: {smoke: true}         # shared by every job
    jobs:
      - notebook: notebooks/03_augmentation_ablation.ipynb
        parameters: {category: washer}
        grid: {k: [2, 4], seed: [0, 1]}   # cartesian product -> 4 executions

Each execution gets its own ``output_dir`` (injected as a parameter), its executed notebook beside
it, and a ``status.json`` once it finished. ``resume`` skips executions whose status says done; a
failing notebook is recorded (its executed copy keeps the traceback) and the batch goes on.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from fsad.errors import ConfigError, MissingFileError
from fsad.paths import runs_dir as default_runs_dir
from fsad.paths import source_checkout
from fsad.utils import atomic_write_json, atomic_write_text, check_output_dir

KERNEL_NAME = "python3"  # the kernel of the interpreter running the batch (papermill's default)


@dataclass
class Job:
    notebook: Path
    parameters: dict[str, Any]
    output_dir: Path

    @property
    def executed_path(self) -> Path:
        return self.output_dir / self.notebook.name

    @property
    def status_path(self) -> Path:
        return self.output_dir / "status.json"


def _slug(parameters: dict[str, Any]) -> str:
    """Readable and unique folder name for one parameter combination."""
    text = "_".join(f"{k}-{v}" for k, v in sorted(parameters.items()) if k != "output_dir")
    text = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:80] or "default"
    digest = hashlib.sha1(json.dumps(parameters, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{text}_{digest}"


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line out of PyYAML's multi-line message: what is wrong and where."""
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem}{where}"


def load_grid(path: str | Path) -> dict[str, Any]:
    """Read a grid YAML file.

    Raises:
        MissingFileError: no such file. ConfigError: malformed YAML or no ``jobs`` list (the file is named).
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"Grid file {path} does not exist (examples: notebooks/grids/*.yaml).")
    try:
        grid = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"Grid file {path} is not valid YAML ({_yaml_problem(error)}).") from None
    except UnicodeDecodeError as error:
        raise ConfigError(f"Grid file {path} is not UTF-8 text ({error}).") from None
    if not isinstance(grid, dict) or not grid.get("jobs"):
        raise ConfigError(f"{path}: a grid needs a 'jobs' list (see fsad/runner.py's docstring for the format).")
    if not isinstance(grid["jobs"], list) or not all(isinstance(job, dict) and "notebook" in job for job in grid["jobs"]):
        raise ConfigError(f"{path}: 'jobs' must be a list of mappings, each with a 'notebook' key.")
    grid.setdefault("name", path.stem)
    grid["_file"] = str(path.resolve())
    return grid


def resolve_notebook(notebook: str | Path, grid_file: str | Path | None) -> Path:
    """A grid's notebook path: absolute; else relative to the current folder; else relative to the notebooks
    folder holding the grid's ``grids/`` folder (a leading ``notebooks/`` is accepted), so the shipped grids run
    from the repository root, from inside ``notebooks/`` and from a ``python -m fsad notebooks copy`` folder."""
    path = Path(notebook)
    if path.is_absolute() or path.is_file():
        return path.resolve() if path.is_file() else path
    if grid_file is not None:
        notebooks_folder = Path(grid_file).resolve().parent.parent
        relative = Path(*path.parts[1:]) if path.parts and path.parts[0] == "notebooks" else path
        for candidate in (notebooks_folder / relative, notebooks_folder / path):
            if candidate.is_file():
                return candidate
    return path


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``--set KEY=VALUE`` items as a dict, each value parsed as YAML (``k=[2, 4]`` gives a list).

    Raises:
        ConfigError: an item without ``=``, or a value that is not valid YAML (the item is named).

    Example:
        >>> parse_overrides(["k=[2, 4]", "smoke=true"])
        {'k': [2, 4], 'smoke': True}
    """
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}.")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
                              "quote strings that hold ':' or brackets.") from None
    return overrides


def expand_jobs(grid: dict[str, Any], runs_dir: Path, overrides: dict[str, Any] | None = None) -> list[Job]:
    """Cartesian product of each job's grid, with shared parameters, job parameters and overrides merged."""
    jobs = []
    for entry in grid["jobs"]:
        notebook = resolve_notebook(entry["notebook"], grid.get("_file"))
        if not notebook.is_file():
            raise MissingFileError(f"Grid {grid['name']!r} names {notebook}, which does not exist.")
        axes = entry.get("grid", {}) or {}
        names = sorted(axes)
        for values in itertools.product(*(axes[n] if isinstance(axes[n], list) else [axes[n]] for n in names)):
            parameters = {**grid.get("parameters", {}), **entry.get("parameters", {}), **dict(zip(names, values)),
                          **(overrides or {})}
            output_dir = runs_dir / notebook.stem / _slug(parameters)
            parameters["output_dir"] = str(output_dir)
            jobs.append(Job(notebook, parameters, output_dir))
    return jobs


def execute_job(job: Job, resume: bool) -> dict[str, Any]:
    """Execute one notebook with papermill; never raises for a notebook error, records it instead."""
    import papermill

    if resume and job.status_path.is_file():
        status = json.loads(job.status_path.read_text())
        if status.get("status") == "done":
            return {**status, "skipped": True}
    job.output_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    checkout = source_checkout()
    shown = job.notebook.relative_to(checkout) if checkout and job.notebook.is_relative_to(checkout) else job.notebook
    status: dict[str, Any] = {"notebook": str(shown),
                              "parameters": job.parameters, "executed": str(job.executed_path)}
    try:
        papermill.execute_notebook(str(job.notebook), str(job.executed_path), parameters=job.parameters,
                                   kernel_name=KERNEL_NAME, cwd=str(job.notebook.parent), progress_bar=False)
        status["status"] = "done"
    except Exception as error:  # noqa: BLE001 - a failed notebook is a result to record, not a crash
        status["status"] = "failed"
        status["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        status["traceback"] = traceback.format_exc(limit=3)
    status["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(job.status_path, status)
    return {**status, "skipped": False}


def collect_results(runs_dir: Path) -> list[dict[str, Any]]:
    """Every cell of every fsad results JSON under ``runs_dir``, flattened with the job that produced it."""
    rows = []
    for path in sorted(runs_dir.rglob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(document, dict) or document.get("format") != "fsad-results-v1":
            continue
        for cell in document.get("cells", []):
            flat = {"results_file": str(path.relative_to(runs_dir))}
            flat.update({k: v for k, v in cell.items() if not isinstance(v, (list, dict))})
            rows.append(flat)
    return rows


def write_csv(rows: Iterable[dict[str, Any]], path: Path) -> None:
    import csv
    import io

    rows = list(rows)
    fields = sorted({key for row in rows for key in row}, key=lambda k: (k != "results_file", k))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def run_batch(grid_path: str | Path, runs_root: str | Path | None = None, resume: bool = False,
              overrides: dict[str, Any] | None = None) -> tuple[list[dict[str, Any]], Path]:
    """Run a grid; returns the per-execution statuses and the collected-results CSV path.

    ``runs_root`` defaults to :func:`fsad.paths.runs_dir` (never inside the installed package)."""
    from tqdm.auto import tqdm

    grid = load_grid(grid_path)
    runs_root = Path(runs_root if runs_root is not None else default_runs_dir()).resolve()
    check_output_dir(runs_root, "--runs-dir")  # before any notebook runs
    runs_dir = runs_root / grid["name"]
    jobs = expand_jobs(grid, runs_dir, overrides)
    statuses = []
    for job in tqdm(jobs, desc=f"batch {grid['name']}"):
        statuses.append(execute_job(job, resume))
    csv_path = runs_dir / "results.csv"
    write_csv(collect_results(runs_dir), csv_path)
    atomic_write_json(runs_dir / "batch.json", {"grid": str(grid_path), "statuses": statuses})
    return statuses, csv_path


def format_statuses(statuses: list[dict[str, Any]]) -> str:
    lines = [f"{'status':<8} {'seconds':>8}  notebook  parameters", "-" * 72]
    for s in statuses:
        state = "skipped" if s.get("skipped") else s["status"]
        params = {k: v for k, v in s["parameters"].items() if k != "output_dir"}
        lines.append(f"{state:<8} {s.get('seconds', 0):>8.1f}  {Path(s['notebook']).name}  {params}")
        if s["status"] == "failed":
            lines.append(f"{'':<18}{s['error']}  -> {s['executed']}")
    failed = sum(s["status"] == "failed" for s in statuses)
    lines.append(f"{len(statuses)} executions, {failed} failed")
    return "\n".join(lines)
