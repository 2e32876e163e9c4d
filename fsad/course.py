"""Course copies of the notebooks: ``python -m fsad notebooks DIR [--student]``.

An installed kit carries its notebooks inside the package (read-only on a JupyterHub image), and instructors
hand students copies without the solutions. Both are a copy of :func:`fsad.paths.notebooks_dir` with the
outputs cleared (nbformat, the same library papermill uses), and for students without the cells tagged
``solution``. The grids travel along so ``python -m fsad batch grids/smoke.yaml`` runs from the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat

from fsad.errors import OutputError, OutputExistsError
from fsad.paths import notebooks_dir

SOLUTION_TAG = "solution"


def _is_solution(cell: nbformat.NotebookNode) -> bool:
    return SOLUTION_TAG in cell.get("metadata", {}).get("tags", [])


def clean_notebook(notebook: nbformat.NotebookNode, *, student: bool) -> nbformat.NotebookNode:
    """Outputs and execution counts cleared; for a student copy, the cells tagged ``solution`` removed."""
    cells = []
    for cell in notebook.cells:
        if student and _is_solution(cell):
            continue
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cells.append(cell)
    notebook.cells = cells
    return notebook


def copy_notebooks(
    destination: str | Path, *, student: bool = False, force: bool = False, source: str | Path | None = None
) -> list[Path]:
    """Copy the kit's notebooks (and ``grids/``) to ``destination``; returns the notebooks written.

    Refuses to replace notebooks already in ``destination`` (a student's edits) unless ``force``.
    """
    source = Path(source) if source is not None else notebooks_dir()
    destination = Path(destination).expanduser().resolve()
    if destination.exists() and not destination.is_dir():
        raise OutputError(f"{destination} is a file; give a folder to copy the notebooks into.")
    notebooks = sorted(source.glob("[0-9][0-9]*.ipynb"))
    existing = [destination / n.name for n in notebooks if (destination / n.name).exists()]
    if existing and not force:
        raise OutputExistsError(
            f"{existing[0]} already exists ({len(existing)} notebooks in {destination} would be "
            "replaced): choose another folder, or pass --force to overwrite them."
        )
    destination.mkdir(parents=True, exist_ok=True)
    written = []
    for path in notebooks:
        notebook = clean_notebook(nbformat.read(path, as_version=4), student=student)
        target = destination / path.name
        nbformat.write(notebook, target)
        written.append(target)
    if (source / "grids").is_dir():
        shutil.copytree(source / "grids", destination / "grids", dirs_exist_ok=True)
    return written
