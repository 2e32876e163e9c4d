"""Build hook only (all metadata is in pyproject.toml): the wheel carries the notebooks and their grids.

The notebooks live at the repository's top level (`notebooks/`, fixed by the project layout), outside any
package, so setuptools would leave them out. A course that installs the wheel needs them
(`python -m fsad notebooks copy DIR`), so build_py copies them into the package as `fsad/_notebooks`
(see fsad.paths.notebooks_dir). Editable installs and checkouts read `notebooks/` directly.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithNotebooks(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "fsad" / "_notebooks"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(
            ROOT / "notebooks", target, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "runs")
        )


setup(cmdclass={"build_py": BuildPyWithNotebooks})
