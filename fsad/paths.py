"""Where the kit reads its shipped files and writes its outputs, in a checkout and in an installed wheel.

A course installs the kit into places it cannot write to (a read-only JupyterHub image, a system
site-packages), so nothing is ever written next to the code. The rules, one function each:

* :func:`source_checkout` — the repository root when the kit runs from a source checkout (an editable
  install or ``PYTHONPATH``), else ``None`` (an installed wheel).
* :func:`runs_dir` — default root of outputs (executed notebooks, results, figures):
  ``$FSAD_RUNS_DIR``, else ``<checkout>/runs`` in a checkout (what ``make demo`` documents), else
  ``./runs`` under the current directory.
* :func:`synthetic_data_dir` — the generated synthetic dataset: ``$FSAD_SYNTHETIC_DIR``, else
  ``<checkout>/data/synthetic``, else the user cache (``platformdirs``), e.g.
  ``~/.cache/fsad-kit/synthetic`` on Linux.
* :func:`figures_dir` — published tables and figures: ``<checkout>/figures``, else ``<runs>/figures``.
* :func:`notebooks_dir` — the shipped notebooks and grids: ``<checkout>/notebooks``, else the copy the
  wheel carries (``fsad/_notebooks``, added at build time by ``setup.py``). Copy them somewhere writable
  with ``python -m fsad notebooks DIR`` before running them from an installed kit.
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_CANDIDATE = _PACKAGE_DIR.parent

RUNS_DIR_ENV = "FSAD_RUNS_DIR"
SYNTHETIC_DIR_ENV = "FSAD_SYNTHETIC_DIR"
# Name of the notebooks folder inside an installed wheel (see setup.py).
WHEEL_NOTEBOOKS = "_notebooks"


def source_checkout() -> Path | None:
    """The repository root when running from a source checkout, else None (an installed wheel)."""
    root = _REPO_CANDIDATE
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def runs_dir() -> Path:
    """Default root for outputs; never inside the installed package."""
    if os.environ.get(RUNS_DIR_ENV):
        return Path(os.environ[RUNS_DIR_ENV]).expanduser().resolve()
    root = source_checkout()
    return root / "runs" if root is not None else Path.cwd().resolve() / "runs"


def synthetic_data_dir() -> Path:
    """Default location of the generated synthetic dataset; never inside the installed package."""
    if os.environ.get(SYNTHETIC_DIR_ENV):
        return Path(os.environ[SYNTHETIC_DIR_ENV]).expanduser().resolve()
    root = source_checkout()
    if root is not None:
        return root / "data" / "synthetic"
    import platformdirs

    return platformdirs.user_cache_path("fsad-kit") / "synthetic"


def figures_dir() -> Path:
    """Where ``make figures`` / notebook 08 publish tables and figures: the checkout's ``figures/`` (committed),
    else ``<runs>/figures`` for an installed kit."""
    root = source_checkout()
    return root / "figures" if root is not None else runs_dir() / "figures"


def notebooks_dir() -> Path:
    """The kit's notebooks (with ``grids/``): the checkout's, or the copy inside an installed wheel."""
    root = source_checkout()
    if root is not None:
        return root / "notebooks"
    shipped = _PACKAGE_DIR / WHEEL_NOTEBOOKS
    if shipped.is_dir():
        return shipped
    from fsad.errors import MissingFileError

    raise MissingFileError(
        f"The kit's notebooks are neither in a source checkout nor in the installed package ({shipped}). "
        "Reinstall fsad-kit from a wheel built by `python -m build` (it carries them) or clone the repository."
    )
