"""Course copies of the notebooks (`python -m fsad notebooks DIR [--student]`)."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from fsad.cli import main
from fsad.course import SOLUTION_TAG, copy_notebooks


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """A notebooks folder with an executed exercise cell, its solution and a grid."""
    folder = tmp_path / "source"
    (folder / "grids").mkdir(parents=True)
    (folder / "grids" / "smoke.yaml").write_text("name: smoke\njobs:\n  - notebook: 00_a.ipynb\n")
    notebook = nbformat.v4.new_notebook()
    question = nbformat.v4.new_code_cell(
        "x = 1 + 1", execution_count=3, outputs=[nbformat.v4.new_output("stream", text="2\n")]
    )
    solution = nbformat.v4.new_code_cell("print(x)", metadata={"tags": [SOLUTION_TAG]})
    notebook.cells = [nbformat.v4.new_markdown_cell("# Exercise"), question, solution]
    nbformat.write(notebook, folder / "00_a.ipynb")
    return folder


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_instructor_copy_keeps_solutions_and_clears_outputs(source: Path, tmp_path: Path) -> None:
    (written,) = copy_notebooks(tmp_path / "out", source=source)
    cells = _cells(written)
    assert len(cells) == 3 and SOLUTION_TAG in cells[2]["metadata"]["tags"]
    assert cells[1]["outputs"] == [] and cells[1]["execution_count"] is None
    assert (tmp_path / "out" / "grids" / "smoke.yaml").is_file()


def test_student_copy_drops_solution_cells_only(source: Path, tmp_path: Path) -> None:
    (written,) = copy_notebooks(tmp_path / "out", source=source, student=True)
    cells = _cells(written)
    assert ["".join(c["source"]) for c in cells] == ["# Exercise", "x = 1 + 1"]
    assert all(SOLUTION_TAG not in c["metadata"].get("tags", []) for c in cells)


def test_existing_notebooks_are_not_replaced_without_force(source: Path, tmp_path: Path) -> None:
    copy_notebooks(tmp_path / "out", source=source)
    edited = tmp_path / "out" / "00_a.ipynb"
    edited.write_text(edited.read_text().replace("1 + 1", "2 + 2"))
    with pytest.raises(FileExistsError, match="--force"):
        copy_notebooks(tmp_path / "out", source=source)
    assert "2 + 2" in edited.read_text()
    copy_notebooks(tmp_path / "out", source=source, force=True)
    assert "1 + 1" in edited.read_text()


def test_cli_copies_the_shipped_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    shipped = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]*.ipynb"))
    assert main(["notebooks", "--student", str(tmp_path / "course")]) == 0
    assert sorted(p.name for p in (tmp_path / "course").glob("*.ipynb")) == shipped
    for path in (tmp_path / "course").glob("*.ipynb"):
        assert not any(SOLUTION_TAG in c["metadata"].get("tags", []) for c in _cells(path)), path
    assert "student copies" in capsys.readouterr().out


def test_demo_runs_the_smoke_grid_into_the_default_runs_folder(monkeypatch, tmp_path, capsys) -> None:
    """`make demo` = `python -m fsad demo` with no --runs-dir: the smoke grid goes to fsad.paths.runs_dir()."""
    import fsad.runner

    calls = []

    def fake_run_batch(grid, root, resume=False, overrides=None):
        calls.append((Path(grid), Path(root), resume, overrides))
        return [], Path(root) / "smoke" / "results.csv"

    monkeypatch.setenv("FSAD_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(fsad.runner, "run_batch", fake_run_batch)
    assert main(["demo"]) == 0
    ((grid, root, resume, overrides),) = calls
    assert grid.name == "smoke.yaml" and grid.is_file() and root == tmp_path / "runs" and overrides is None
    assert str(tmp_path / "runs" / "smoke") in capsys.readouterr().out
    calls.clear()
    assert main(["demo", "--runs-dir", str(tmp_path / "elsewhere"), "--device", "cpu", "--resume"]) == 0
    assert calls[0][1:] == (tmp_path / "elsewhere", True, {"device": "cpu"})
