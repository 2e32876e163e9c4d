"""The course website: executed notebooks -> a static Sphinx + MyST-NB site (``make book``).

Usage::

    python -m fsad demo --resume                      # executed smoke notebooks under runs/smoke/
    python -m fsad.book --executed runs/smoke --out runs/book
    # open runs/book/html/index.html

The site is built offline: notebooks are not re-executed (their outputs, figures included, are shown as executed)
and MathJax is served from the site (``sphinx-mathjax-offline``). Sphinx and MyST-NB come with the ``docs`` extra
(``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import nbformat

from fsad.paths import runs_dir

REPO_ROOT = Path(__file__).resolve().parents[1]
CONF = REPO_ROOT / "docs" / "book" / "conf.py"

INDEX = """# fsad-kit: a course on few-shot anomaly detection

These pages are the kit's tutorials, executed in smoke mode (tiny sizes on the embedded synthetic data, or the
real subsets where a notebook uses them), in course order. Each starts with its learning goals, prerequisites
and run times, and ends with a summary, exercises with solutions and references. Numbers printed in smoke mode
only show that every cell runs; each notebook says what its full mode reproduces.

To run them yourself: `make lab` opens JupyterLab on `notebooks/` with the kit's kernel.

```{{toctree}}
:maxdepth: 1
:numbered:

{pages}
```
"""


class BookError(RuntimeError):
    """The site cannot be built (no notebooks, Sphinx missing, Sphinx failed)."""


def find_executed(executed_dir: str | Path) -> list[Path]:
    """One executed notebook per tutorial under ``executed_dir`` (the newest when several), in course order.

    ``make demo`` writes ``runs/smoke/<stem>/<parameters>/<stem>.ipynb``; a flat folder of notebooks works too.
    Course order is the file names' order (00, 01, ..., 03, 03b, 04, 05, 05b, ...).
    """
    root = Path(executed_dir)
    if not root.is_dir():
        raise BookError(
            f"{root} does not exist: run `make demo` (or `python -m fsad demo`) first, or pass "
            "--executed FOLDER with executed notebooks."
        )
    newest: dict[str, Path] = {}
    for path in sorted(root.rglob("[0-9][0-9]*_*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        if path.stem not in newest or path.stat().st_mtime > newest[path.stem].stat().st_mtime:
            newest[path.stem] = path
    if not newest:
        raise BookError(f"no executed notebooks (NN_name.ipynb) under {root}: run `make demo` first.")
    return [newest[stem] for stem in sorted(newest)]


def _unexecuted(path: Path) -> bool:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    return bool(code) and not any(c.get("outputs") for c in code)


def build_book(notebooks: Sequence[str | Path], out_dir: str | Path, quiet: bool = True) -> Path:
    """Build the site from executed notebooks (in the given order) into ``<out_dir>/html``.

    Returns:
        the path of ``index.html``.

    Raises:
        BookError: no notebook, a notebook without outputs (not executed), Sphinx/MyST-NB not installed, or a
            failed build (the message names Sphinx's exit status and log).
    """
    try:
        from sphinx.cmd.build import build_main
    except ImportError as error:
        raise BookError(
            "Sphinx is not installed: pip install -c constraints.txt -e '.[docs]' "
            "(or `make venv`, which installs the docs extra)."
        ) from error
    paths = [Path(p) for p in notebooks]
    if not paths:
        raise BookError("no notebooks to build the site from.")
    bare = [p.name for p in paths if _unexecuted(p)]
    if bare:
        raise BookError(f"{bare} have no outputs: the site shows executed notebooks (run `make demo` first).")
    out = Path(out_dir)
    source = out / "source"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    shutil.copy2(CONF, source / "conf.py")
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:  # papermill's injected parameters cell is noise on a course page
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags:
                cell.metadata["tags"] = [*tags, "remove-cell"]
        nbformat.write(nb, source / path.name)
    (source / "index.md").write_text(INDEX.format(pages="\n".join(p.stem for p in paths)))
    html = out / "html"
    args = ["-b", "html", "-j", "1", str(source), str(html), "-d", str(out / "doctrees")]
    status = build_main(args + (["-q"] if quiet else []))
    if status != 0:
        raise BookError(f"sphinx-build exited with status {status} (rerun without --quiet to see why).")
    index = html / "index.html"
    if not index.is_file() or not (html / "_static" / "mathjax" / "tex-chtml.js").is_file():
        raise BookError(f"the build finished but {index} or the offline MathJax files are missing.")
    return index


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsad.book", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--executed",
        default=str(runs_dir() / "smoke"),
        help="folder with executed notebooks (default: runs/smoke, written by make demo)",
    )
    parser.add_argument("--out", default=str(runs_dir() / "book"), help="site folder (html/ inside)")
    parser.add_argument("--verbose", action="store_true", help="show Sphinx's output")
    args = parser.parse_args(argv)
    try:
        index = build_book(find_executed(args.executed), args.out, quiet=not args.verbose)
    except BookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"course site: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
