"""The course website (fsad.book): built from executed notebooks, equations and figures render offline.

The build runs on two small executed notebooks made here (an equation, a figure, a link between them), so it
takes seconds; `make book` builds the same way from every executed smoke notebook. With Chromium present
(/usr/bin/chromium, installed by .ci/install_browser.sh; required under FSAD_REQUIRE_BROWSER=1 as in .ci/run),
the index and one tutorial page are opened headless and MathJax's output and the figure are checked
(screenshots under runs/book_test/).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("sphinx", reason="the docs extra is not installed (pip install -e '.[docs]')")
pytest.importorskip("myst_nb", reason="the docs extra is not installed (pip install -e '.[docs]')")

from fsad.book import BookError, build_book, find_executed  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO_ROOT / "runs" / "book_test"
CHROMIUM = Path(os.environ.get("FSAD_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("FSAD_REQUIRE_BROWSER", "").lower() in {"1", "true", "yes"}
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]


def _png() -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [0, 1, 4])
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _executed_notebooks(folder: Path) -> list[Path]:
    first = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(
                "# 00 · First\n\nThe score is\n\n"
                "$$\\mathcal{M}(f) = \\sqrt{(f-\\mu)^\\top \\Sigma^{-1} (f-\\mu)}$$\n\n"
                "**Next:** [the second page](01_second.ipynb)."
            ),
            nbformat.v4.new_code_cell(
                "plot()",
                outputs=[nbformat.v4.new_output("display_data", data={"image/png": _png(), "text/plain": "<Figure>"})],
                execution_count=1,
            ),
        ]
    )
    injected = nbformat.v4.new_code_cell(
        "smoke = True  # papermill's", metadata={"tags": ["injected-parameters"]}, outputs=[], execution_count=1
    )
    first.cells.insert(1, injected)
    second = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell("# 01 · Second\n\nInline maths $\\epsilon I$ too."),
            nbformat.v4.new_code_cell(
                "print(1)", outputs=[nbformat.v4.new_output("stream", name="stdout", text="1\n")], execution_count=1
            ),
        ]
    )
    nested = folder / "01_second" / "smoke-True"  # the layout of make demo's runs/smoke/<stem>/<parameters>/
    nested.mkdir(parents=True)
    nbformat.write(first, folder / "00_first.ipynb")
    nbformat.write(second, nested / "01_second.ipynb")
    return [folder / "00_first.ipynb", nested / "01_second.ipynb"]


def test_book_builds_from_executed_notebooks_in_order(tmp_path: Path) -> None:
    _executed_notebooks(tmp_path / "executed")
    found = find_executed(tmp_path / "executed")
    assert [p.stem for p in found] == ["00_first", "01_second"]
    index = build_book(found, tmp_path / "site")
    html = index.parent
    page = (html / "00_first.html").read_text()
    assert "mathjax/tex-chtml.js" in page and "cdn" not in page.split("tex-chtml.js")[0][-200:], (
        "MathJax must be served from the site, not a CDN"
    )
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    assert "\\mathcal{M}(f)" in page and 'href="01_second.html"' in page
    assert "papermill's" not in page, "the injected parameters cell must not appear on the site"
    assert list((html / "_images").glob("*.png")), "the notebook's figure was not written"
    listing = index.read_text()
    assert listing.index("00_first.html") < listing.index("01_second.html")


def test_book_refuses_unexecuted_notebooks_and_empty_folders(tmp_path: Path) -> None:
    bare = tmp_path / "00_bare.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), bare)
    with pytest.raises(BookError, match="no outputs"):
        build_book([bare], tmp_path / "site")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BookError, match="make demo"):
        find_executed(tmp_path / "empty")


@pytest.mark.browser
def test_book_renders_equation_and_figure_in_chromium(tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        message = f"{CHROMIUM} is missing: install Debian's chromium (.ci/install_browser.sh)"
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)
    sync_api = pytest.importorskip("playwright.sync_api")
    index = build_book(find_executed(_executed_notebooks(tmp_path / "executed")[0].parent), tmp_path / "site")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.set_default_timeout(60_000)
            # The offline guarantee: any request leaving file:// fails the test.
            outside = []
            page.on(
                "request",
                lambda request: (
                    outside.append(request.url) if not request.url.startswith(("file://", "data:")) else None
                ),
            )
            page.goto(index.as_uri())
            assert page.locator("a[href='00_first.html']").count() >= 1
            page.screenshot(path=str(SCREENSHOTS / "index.png"), full_page=True)
            page.goto((index.parent / "00_first.html").as_uri())
            page.wait_for_selector("mjx-container", state="attached")  # MathJax typeset the equation
            assert page.locator("mjx-container").count() >= 1
            width = page.locator("mjx-container").first.bounding_box()["width"]
            assert width > 20, f"the rendered equation is {width} px wide"
            image = page.locator("img").first
            image.wait_for()
            assert page.evaluate("img => img.complete && img.naturalWidth > 0", image.element_handle())
            page.screenshot(path=str(SCREENSHOTS / "tutorial_page.png"), full_page=True)
            assert not outside, f"the site fetched from outside: {outside[:3]}"
        finally:
            browser.close()
