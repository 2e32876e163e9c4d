"""Papermill batches: run notebooks over parameter grids headlessly, resumably, and collect their results.

A grid file (YAML) lists notebooks, fixed parameters and a grid of values::

    name: table5-synthetic            # results go to runs/<name>/
    parameters: {smoke: true}         # shared by every job
    jobs:
      - notebook: notebooks/03_augmentation_ablation.ipynb
        parameters: {category: washer}
        grid: {k: [2, 4], seed: [0, 1]}   # cartesian product -> 4 executions

Each execution (a *cell* of the grid) gets its own folder ``<runs>/<grid>/<notebook>/<slug>/``, named after
the parameters that determine its results (not ``device`` or ``output_dir``, so ``--resume`` on another GPU
finds it). A cell runs in a private attempt folder beside it (``.<slug>.attempt-<id>``, the ``output_dir`` its
notebook sees) and is committed by one atomic rename once its ``status.json`` (the commit marker) is written:
a killed or retried attempt never leaves half a result in the cell folder, and two attempts of one cell never
both land (the first commit wins). ``resume`` skips cells whose status says done, whichever executor made
them; a failing notebook is recorded (its executed copy keeps the traceback) and the batch goes on.

Executors: ``local`` runs the cells one after another in this process; ``ray`` runs each cell as a Ray task
(:mod:`fsad.ray_executor`, imported only then) with the same outputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import time
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import yaml

from fsad.errors import ConfigError, MissingFileError
from fsad.files import atomic_write_json, atomic_write_text, check_output_dir
from fsad.paths import runs_dir as default_runs_dir
from fsad.paths import source_checkout

KERNEL_NAME = "python3"  # the kernel of the interpreter running the batch (papermill's default)
EXECUTORS = ("local", "ray")
# Parameters that say where or on what a cell runs, not what it computes: left out of the cell's folder name.
RUNTIME_PARAMETERS = frozenset({"output_dir", "device"})
STATUS_FILE = "status.json"  # the commit marker: written last, inside the attempt folder, before the rename
ATTEMPT_TAG = ".attempt-"


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
        return self.output_dir / STATUS_FILE


def _slug(parameters: dict[str, Any]) -> str:
    """Readable and unique folder name for one parameter combination (runtime parameters left out)."""
    kept = {k: v for k, v in parameters.items() if k not in RUNTIME_PARAMETERS}
    text = "_".join(f"{k}-{v}" for k, v in sorted(kept.items()))
    text = "".join(c if c.isalnum() or c in "-_." else "-" for c in text)[:80] or "default"
    digest = hashlib.sha1(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:8]
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
    if not isinstance(grid["jobs"], list) or not all(
        isinstance(job, dict) and "notebook" in job for job in grid["jobs"]
    ):
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
            raise ConfigError(
                f"--set {item!r}: the value is not valid YAML ({_yaml_problem(error)}); "
                "quote strings that hold ':' or brackets."
            ) from None
    return overrides


def expand_jobs(grid: dict[str, Any], runs_dir: Path, overrides: dict[str, Any] | None = None) -> list[Job]:
    """Cartesian product of each job's grid, with shared parameters, job parameters and overrides merged.

    ``runs_dir`` is made absolute here: notebooks run with their own folder as working directory, so a
    relative ``output_dir`` would land beside the notebook instead of where the shell meant.
    """
    runs_dir = Path(runs_dir).expanduser().resolve()
    jobs = []
    for entry in grid["jobs"]:
        notebook = resolve_notebook(entry["notebook"], grid.get("_file"))
        if not notebook.is_file():
            raise MissingFileError(f"Grid {grid['name']!r} names {notebook}, which does not exist.")
        axes = entry.get("grid", {}) or {}
        names = sorted(axes)
        for values in itertools.product(*(axes[n] if isinstance(axes[n], list) else [axes[n]] for n in names)):
            parameters = {
                **grid.get("parameters", {}),
                **entry.get("parameters", {}),
                **dict(zip(names, values)),
                **(overrides or {}),
            }
            output_dir = runs_dir / notebook.stem / _slug(parameters)
            parameters["output_dir"] = str(output_dir)
            jobs.append(Job(notebook, parameters, output_dir))
    return jobs


def read_status(job: Job) -> dict[str, Any] | None:
    """The committed status of a cell, or None when it never committed."""
    try:
        return json.loads(job.status_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _notebook_name(job: Job) -> str:
    checkout = source_checkout()
    return str(
        job.notebook.relative_to(checkout) if checkout and job.notebook.is_relative_to(checkout) else job.notebook
    )


def _commit(attempt: Path, final: Path) -> bool:
    """Move a finished attempt folder into place; False (attempt discarded) when a done commit is already there."""
    for _ in range(3):
        previous = None
        if final.exists():
            status = read_status(Job(Path("x"), {}, final))
            if status is not None and status.get("status") == "done":
                shutil.rmtree(attempt, ignore_errors=True)
                return False
            # A failed (or marker-less) older commit is replaced; it is moved aside first since a folder
            # cannot be renamed over a non-empty one.
            previous = final.with_name(f".{final.name}.replaced-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(final, previous)
            except FileNotFoundError:
                previous = None
        try:
            os.rename(attempt, final)
        except OSError:  # another attempt committed in between: look again
            if previous is not None and not final.exists():
                os.rename(previous, final)
            continue
        if previous is not None:
            shutil.rmtree(previous, ignore_errors=True)
        return True
    raise RuntimeError(
        f"Could not commit {attempt} to {final}: the folder keeps changing (two batches on one runs folder at once?)."
    )


def execute_job(job: Job, resume: bool, batch_id: str | None = None) -> dict[str, Any]:
    """Execute one notebook with papermill; never raises for a notebook error, records it instead.

    Args:
        job: the cell.
        resume: skip it when a done status is already committed.
        batch_id: the batch this execution belongs to; a retry of a cell that this batch already committed
            (a worker that died after its commit) is skipped even without ``resume``.
    """
    import papermill

    committed = read_status(job)
    if (
        committed is not None
        and committed.get("status") == "done"
        and (resume or (batch_id is not None and committed.get("batch_id") == batch_id))
    ):
        return {**committed, "skipped": True}
    job.output_dir.parent.mkdir(parents=True, exist_ok=True)
    attempt = job.output_dir.with_name(f".{job.output_dir.name}{ATTEMPT_TAG}{uuid.uuid4().hex[:12]}")
    attempt.mkdir()
    start = time.perf_counter()
    status: dict[str, Any] = {
        "notebook": _notebook_name(job),
        "parameters": job.parameters,
        "executed": str(job.executed_path),
        "batch_id": batch_id,
    }
    try:
        papermill.execute_notebook(
            str(job.notebook),
            str(attempt / job.notebook.name),
            parameters={**job.parameters, "output_dir": str(attempt)},
            kernel_name=KERNEL_NAME,
            cwd=str(job.notebook.parent),
            progress_bar=False,
        )
        status["status"] = "done"
    except Exception as error:  # noqa: BLE001 - a failed notebook is a result to record, not a crash
        status["status"] = "failed"
        status["error"] = f"{type(error).__name__}: {str(error).strip().splitlines()[-1] if str(error).strip() else ''}"
        status["traceback"] = traceback.format_exc(limit=3)
    status["seconds"] = round(time.perf_counter() - start, 2)
    atomic_write_json(attempt / STATUS_FILE, status)
    if not _commit(attempt, job.output_dir):
        return {**read_status(job), "skipped": True}
    return {**status, "skipped": False}


def record_failure(job: Job, reason: str, batch_id: str | None = None) -> dict[str, Any]:
    """Commit a failed status for a cell that never reported back (its worker died more often than retried).

    A done commit already in place (the worker died after committing) is kept and returned instead.
    """
    committed = read_status(job)
    if committed is not None and committed.get("status") == "done":
        return {**committed, "skipped": False}
    job.output_dir.parent.mkdir(parents=True, exist_ok=True)
    attempt = job.output_dir.with_name(f".{job.output_dir.name}{ATTEMPT_TAG}{uuid.uuid4().hex[:12]}")
    attempt.mkdir()
    status = {
        "notebook": _notebook_name(job),
        "parameters": job.parameters,
        "executed": str(job.executed_path),
        "batch_id": batch_id,
        "status": "failed",
        "error": reason,
        "seconds": 0.0,
    }
    atomic_write_json(attempt / STATUS_FILE, status)
    _commit(attempt, job.output_dir)
    return {**(read_status(job) or status), "skipped": False}


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def remove_stale_attempts(runs_dir: Path) -> int:
    """Delete attempt folders left by killed executions (never read; called before a batch and after its tasks)."""
    removed = 0
    for path in sorted(runs_dir.rglob(f".*{ATTEMPT_TAG}*")) + sorted(runs_dir.rglob(".*.replaced-*")):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
    return removed


def results_files(runs_dir: Path) -> list[Path]:
    """The committed fsad results JSON files under ``runs_dir``.

    Attempt folders (hidden, not yet committed) are never read, so a killed or running execution adds nothing.
    """
    files = []
    for path in sorted(runs_dir.rglob("*.json")):
        if _hidden(path, runs_dir):
            continue
        try:
            document = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(document, dict) and document.get("format") == "fsad-results-v1":
            files.append(path)
    return files


def collect_results(runs_dir: Path) -> list[dict[str, Any]]:
    """Every cell of every committed results file under ``runs_dir`` as stored (fractions), with its file."""
    rows = []
    for path in results_files(runs_dir):
        for cell in json.loads(path.read_text()).get("cells", []):
            flat = {"results_file": str(path.relative_to(runs_dir))}
            flat.update({k: v for k, v in cell.items() if not isinstance(v, (list, dict))})
            rows.append(flat)
    return rows


def write_results_csv(runs_dir: Path, path: Path) -> None:
    """``results.csv`` of a batch: :func:`fsad.results.load_results` over its committed results files (one row
    per cell, metrics in %, config, weights SHA-256, kit version and commit), ``results_file`` relative to
    ``runs_dir`` so two batches of the same grid give the same table wherever they ran."""
    from fsad.results import load_results

    frame = load_results(results_files(runs_dir))
    frame.insert(0, "results_file", [str(Path(source).relative_to(runs_dir)) for source in frame["source"]])
    atomic_write_text(path, frame.drop(columns="source").to_csv(index=False, lineterminator="\n"))


def run_batch(
    grid_path: str | Path,
    runs_root: str | Path | None = None,
    resume: bool = False,
    overrides: dict[str, Any] | None = None,
    executor: str = "local",
    address: str | None = None,
    gpus_per_job: float = 0,
    cpus_per_job: float = 1,
    max_retries: int = 2,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], Path]:
    """Run a grid; returns the per-execution statuses (in grid order) and the collected-results CSV path.

    Args:
        grid_path: the grid YAML.
        runs_root: results go to ``<runs_root>/<grid name>/`` (a relative path is taken from the current folder;
            default :func:`fsad.paths.runs_dir`, never inside the installed package).
        resume: skip cells already done (by either executor).
        overrides: parameters set in every cell (``--set KEY=VALUE``).
        executor: ``local`` (one cell after another, here) or ``ray`` (one Ray task per cell).
        address: Ray only: cluster address (``auto``, ``HOST:PORT``); None starts a local Ray for the run.
        gpus_per_job, cpus_per_job: Ray only: resources each cell reserves.
        max_retries: Ray only: times a cell whose worker died is retried before it is recorded as failed.
        progress: show a progress bar.
    """
    if executor not in EXECUTORS:
        raise ConfigError(f"Unknown executor {executor!r}; choose one of {', '.join(EXECUTORS)}.")
    grid = load_grid(grid_path)
    runs_root = Path(runs_root if runs_root is not None else default_runs_dir()).expanduser().resolve()
    check_output_dir(runs_root, "--runs-dir")  # before any notebook runs
    runs_dir = runs_root / grid["name"]
    jobs = expand_jobs(grid, runs_dir, overrides)
    batch_id = uuid.uuid4().hex
    if runs_dir.is_dir():
        remove_stale_attempts(runs_dir)
    if executor == "local":
        from tqdm.auto import tqdm

        statuses = [
            execute_job(job, resume, batch_id) for job in tqdm(jobs, desc=f"batch {grid['name']}", disable=not progress)
        ]
    else:
        from fsad.ray_executor import RayOptions, map_tasks

        options = RayOptions(address=address, num_gpus=gpus_per_job, num_cpus=cpus_per_job, max_retries=max_retries)
        statuses = map_tasks(
            execute_job,
            [(job, resume, batch_id) for job in jobs],
            options,
            on_lost=lambda args, reason: record_failure(args[0], reason, batch_id),
            desc=f"batch {grid['name']}",
            progress=progress,
        )
    runs_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_attempts(runs_dir)  # every task has returned: what is left is from attempts killed on the way
    csv_path = runs_dir / "results.csv"
    write_results_csv(runs_dir, csv_path)
    atomic_write_json(
        runs_dir / "batch.json",
        {"grid": str(grid_path), "executor": executor, "batch_id": batch_id, "statuses": statuses},
    )
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
