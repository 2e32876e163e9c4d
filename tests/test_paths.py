"""Where outputs and the synthetic set go: never inside the package, overridable by environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsad import paths

ROOT = Path(__file__).resolve().parents[1]


def test_source_checkout_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(paths.RUNS_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.SYNTHETIC_DIR_ENV, raising=False)
    assert paths.source_checkout() == ROOT
    assert paths.runs_dir() == ROOT / "runs"
    assert paths.synthetic_data_dir() == ROOT / "data" / "synthetic"
    assert paths.notebooks_dir() == ROOT / "notebooks"
    assert paths.figures_dir() == ROOT / "figures"


def test_environment_variables_win(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(paths.RUNS_DIR_ENV, str(tmp_path / "r"))
    monkeypatch.setenv(paths.SYNTHETIC_DIR_ENV, str(tmp_path / "s"))
    assert paths.runs_dir() == tmp_path / "r"
    assert paths.synthetic_data_dir() == tmp_path / "s"


def test_installed_package_writes_to_cwd_and_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without a checkout (a wheel), outputs go under the working folder and the synthetic set to the cache."""
    monkeypatch.delenv(paths.RUNS_DIR_ENV, raising=False)
    monkeypatch.delenv(paths.SYNTHETIC_DIR_ENV, raising=False)
    monkeypatch.setattr(paths, "source_checkout", lambda: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert paths.runs_dir() == tmp_path / "runs"
    assert paths.figures_dir() == tmp_path / "runs" / "figures"
    assert paths.synthetic_data_dir() == tmp_path / "cache" / "fsad-kit" / "synthetic"
    assert paths.synthetic_data_dir().parts[-3:] != ("fsad", "data", "synthetic")


def test_notebooks_missing_from_an_installed_package_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(paths, "source_checkout", lambda: None)
    monkeypatch.setattr(paths, "_PACKAGE_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="wheel"):
        paths.notebooks_dir()


def test_notebooks_find_files_through_the_library_not_the_checkout() -> None:
    """A notebook copied out of the repository (`python -m fsad notebooks DIR`) must not assume a checkout."""
    import nbformat

    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        for needle in ("REPO_ROOT", "__file__", '"shared"'):
            assert needle not in code, f"{path.name} uses {needle}: resolve paths with fsad.paths / fsad.figures"
