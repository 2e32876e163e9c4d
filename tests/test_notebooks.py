"""The notebooks: committed clean, parameterised for papermill, listed in the smoke grid, and executable in smoke mode.

Execution is one test per notebook (papermill, smoke=True, outputs under tmp_path, synthetic data). The whole
set must stay within the CI budget (about 10 minutes on a 2-core machine); each run prints its time.
"""

from __future__ import annotations

import ast
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
# Two digits, an optional letter for a notebook inserted later (03b), then "_": 00_quickstart, 03b_when_...
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb"))
GRIDS = REPO_ROOT / "notebooks" / "grids"
# Every notebook exposes these (the conventions in README / fsad.notebook.setup).
REQUIRED_PARAMETERS = {"smoke", "device", "data_root", "dataset", "seed", "output_dir"}
# Per-notebook budget in smoke mode on one busy CPU core (kernel start and imports included).
SMOKE_BUDGET_S = 120


def _ids(paths: list[Path]) -> list[str]:
    return [p.stem for p in paths]


def _parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode | None:
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    return tagged[0] if len(tagged) == 1 else None


def _assigned_names(source: str) -> set[str]:
    return {
        target.id
        for node in ast.parse(source).body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }


def test_notebooks_exist() -> None:
    names = {p.stem[:2] for p in NOTEBOOKS}
    assert {"05", "06", "07", "08"} <= names, f"missing evaluation/RCM/figure notebooks; found {sorted(names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernelspec must be python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_parameters_cell(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    cell = _parameters_cell(nb)
    assert cell is not None, f"{path.name}: needs exactly one cell tagged 'parameters'"
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert first_code is cell, f"{path.name}: the parameters cell must be the first code cell"
    names = _assigned_names(cell.source)
    missing = REQUIRED_PARAMETERS - names
    assert not missing, f"{path.name}: parameters cell lacks {sorted(missing)}"
    namespace: dict = {}
    exec(compile(cell.source, path.name, "exec"), namespace)  # plain literals only: must run on its own
    assert namespace["smoke"] is False, f"{path.name}: smoke must default to False (full run by default)"
    assert namespace["data_root"] is None and namespace["dataset"] == "synthetic", (
        f"{path.name}: default data must be the embedded synthetic set (data_root=None, dataset='synthetic')"
    )
    later = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c is not cell)
    assert "fsad.notebook import setup" in later and "setup(" in later, f"{path.name}: must call fsad.notebook.setup"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.stem.split("_")[0] in {"05", "06", "07", "08"}], ids=lambda p: p.stem
)
def test_evaluation_notebooks_take_protocol_parameters(path: Path) -> None:
    names = _assigned_names(_parameters_cell(nbformat.read(path, as_version=4)).source)
    assert {"image_size", "categories", "k", "runs", "backbone", "weights"} <= names
    if path.stem.split("_")[0] in {"05", "06"}:
        assert {"checkpoint_dir", "methods"} <= names
    if path.stem.startswith("08"):
        assert {"results_dir", "figures_dir"} <= names


def test_smoke_grid_lists_every_notebook() -> None:
    from fsad.runner import load_grid

    grid = load_grid(GRIDS / "smoke.yaml")
    listed = {Path(job["notebook"]).name for job in grid["jobs"]}
    assert listed == {p.name for p in NOTEBOOKS}, (
        f"smoke.yaml and notebooks/ disagree: only in grid {sorted(listed - {p.name for p in NOTEBOOKS})}, "
        f"only in notebooks/ {sorted({p.name for p in NOTEBOOKS} - listed)}"
    )
    assert grid["parameters"]["smoke"] is True


@pytest.mark.parametrize("name", ["smoke", "table5", "table6", "mvtec_full_gpu", "figures"])
def test_example_grids_expand(name: str, tmp_path: Path) -> None:
    from fsad.runner import expand_jobs, load_grid

    path = GRIDS / f"{name}.yaml"
    assert path.read_text().startswith("#"), f"{path.name}: start with a comment saying what it is for and its time"
    if name == "smoke" and not all(
        (REPO_ROOT / j["notebook"]).is_file() for j in yaml.safe_load(path.read_text())["jobs"]
    ):
        pytest.skip("a notebook of the smoke grid is not written yet (test_smoke_grid_lists_every_notebook says which)")
    jobs = expand_jobs(load_grid(path), tmp_path)
    assert jobs and all(job.notebook.is_file() for job in jobs)
    assert len({job.output_dir for job in jobs}) == len(jobs), "every execution needs its own output folder"
    if name == "mvtec_full_gpu":
        assert len(jobs) == 15 and all(
            job.parameters["runs"] == 10 and job.parameters["image_size"] == 224 for job in jobs
        )
        assert sorted(job.parameters["categories"][0] for job in jobs) == sorted(
            __import__("data_tools.constants", fromlist=["MVTEC_CATEGORIES"]).MVTEC_CATEGORIES
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_executes_in_smoke_mode(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    papermill = pytest.importorskip("papermill")
    # The kernel runs in notebooks/ and must import this checkout's fsad/data_tools even without `pip install -e`.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    parameters = {"smoke": True, "output_dir": str(tmp_path / "out")}
    if path.stem.startswith("08"):
        parameters["figures_dir"] = str(tmp_path / "figures")  # never write the published figures/ from a test
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path),
        str(tmp_path / path.name),
        parameters=parameters,
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    seconds = time.perf_counter() - start
    print(f"{path.name}: {seconds:.1f} s in smoke mode", file=sys.stderr)
    executed = nbformat.read(tmp_path / path.name, as_version=4)
    errors = [
        o
        for c in executed.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    assert (tmp_path / "out" / "context.json").is_file(), "setup() did not write context.json in output_dir"
    figures = list((tmp_path / "out" / "figures").glob("*.png"))
    assert figures, f"{path.name} saved no figure through fsad.viz.savefig"
    if path.stem.startswith("08"):
        published = {p.name for p in (tmp_path / "figures").glob("*.png")}
        tables = {p.name for p in (tmp_path / "figures" / "tables").glob("*.csv")}
        assert {"table5.png", "table6.png", "table7.png", "tsne.png"} <= published
        assert {"table5.csv", "table6.csv", "table7.csv", "paper_regad_per_category.csv"} <= tables
    assert seconds < SMOKE_BUDGET_S, f"{path.name} took {seconds:.0f} s in smoke mode (budget {SMOKE_BUDGET_S} s)"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.stem.split("_")[0] in {"02", "03", "03b", "04"}], ids=lambda p: p.stem
)
def test_registration_notebooks_load_the_shipped_checkpoint_by_default(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    namespace: dict = {}
    exec(compile(_parameters_cell(nb).source, path.name, "exec"), namespace)
    assert namespace.get("train_from_scratch") is False and namespace.get("checkpoint") is None, (
        f"{path.name}: needs train_from_scratch = False and checkpoint = None (the shipped checkpoint by default)"
    )
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "fsad.pretrained import" in code, f"{path.name}: must load the checkpoint through fsad.pretrained"
