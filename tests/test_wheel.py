"""The wheel a course installs: it carries the notebooks and licences, and runs a tutorial without writing into itself.

Builds the wheel from this checkout, installs it (no dependencies: they come from this project's venv through a
.pth file, so nothing is downloaded) into a fresh virtual environment, copies the notebooks out with
`python -m fsad notebooks --student DIR` (a student copy: it must still run), and runs notebook 00 there in smoke mode with papermill on a kernel of that
environment. The installed package directory is made read-only (chmod; root ignores it, so the test also
compares the package's file list and contents before and after) and every output must land under the working
folder or the user cache, never inside site-packages.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(command: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{command} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", out, ROOT])
    (built,) = out.glob("fsad_kit-*.whl")
    return built


def test_wheel_carries_notebooks_grids_and_licences(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert shipped and {f"fsad/_notebooks/{n}" for n in shipped} <= names
    assert {f"fsad/_notebooks/grids/{p.name}" for p in (ROOT / "notebooks" / "grids").glob("*.yaml")} <= names
    assert "fsad/assets/mobilenetv2-12-int8.onnx" in names and "data_tools/manifests/mvtec_ad.json" in names
    assert {f"fsad/figures/{p.name}" for p in (ROOT / "fsad" / "figures").glob("*.py")} <= names  # subpackage
    licences = [n for n in names if ".dist-info/licenses/" in n]
    assert any(n.endswith("/LICENSE") for n in licences) and any("mobilenetv2" in n for n in licences)


def test_installed_wheel_runs_a_tutorial_from_a_copy_without_writing_into_itself(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    _run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel])
    # Dependencies from this project's venv (appended after the new site-packages, so the wheel's fsad wins).
    (site / "zz_project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    package = site / "fsad"
    located = _run([python, "-c", "import fsad; print(fsad.__file__)"], cwd=tmp_path).stdout.strip()
    assert Path(located).parent == package

    work = tmp_path / "course"
    work.mkdir()
    env = {
        **os.environ,
        "HOME": str(tmp_path / "home"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "JUPYTER_PATH": str(tmp_path / "jupyter" / "share" / "jupyter"),
        "PYTHONPATH": "",
        "TORCH_HOME": os.environ.get("TORCH_HOME", str(Path.home() / ".cache" / "torch")),
    }
    for key in ("FSAD_RUNS_DIR", "FSAD_SYNTHETIC_DIR"):
        env.pop(key, None)
    _run([python, "-m", "ipykernel", "install", "--prefix", tmp_path / "jupyter", "--name", "fsad-kit"], env=env)

    before = _snapshot(package)
    os.chmod(package, 0o555)
    try:
        _run([python, "-m", "fsad", "notebooks", "--student", work / "notebooks"], cwd=work, env=env)
        assert (work / "notebooks" / "00_quickstart.ipynb").is_file() and (work / "notebooks" / "grids").is_dir()
        _run(
            [
                python,
                "-m",
                "papermill",
                "--no-progress-bar",
                "-k",
                "fsad-kit",
                "-p",
                "smoke",
                "True",
                work / "notebooks" / "00_quickstart.ipynb",
                work / "00_executed.ipynb",
            ],
            cwd=work / "notebooks",
            env=env,
            timeout=900,
        )
    finally:
        os.chmod(package, 0o755)
    assert _snapshot(package) == before, "running the notebook wrote into the installed package"
    assert not (site / "data").exists() and not (site / "runs").exists()
    assert (work / "00_executed.ipynb").is_file()
    written = [p for p in (work.rglob("*")) if p.is_file() and "notebooks" not in p.relative_to(work).parts[:1]]
    assert written, "the notebook wrote nothing under the working folder"
