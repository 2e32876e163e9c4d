"""The widgets in a real JupyterLab, driven by headless Debian Chromium through Playwright.

Starts ``jupyter lab`` on 127.0.0.1 (a free port, a random token, settings/workspaces/runtime in a temp
folder) serving a temp copy of notebooks/09_interactive_explorer.ipynb whose parameters point at a tiny
synthetic set (smoke mode); runs all cells through JupyterLab's own command, waits for the explorer to
render and the run to finish, moves the k slider with the keyboard and checks that the AUROC line changes, then moves the map
viewer's threshold to its maximum and checks the decision text. Screenshots: runs/browser/widget_*.png.

Chromium is Debian's (/usr/bin/chromium, installed by .ci/install_browser.sh); Playwright never downloads
a browser here. Locally the test skips when Chromium is missing; under FSAD_REQUIRE_BROWSER=1 (set by .ci/run) it fails.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

from data_tools.synthetic import generate_synthetic_dataset

REPO_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO_ROOT / "notebooks" / "09_interactive_explorer.ipynb"
SCREENSHOTS = REPO_ROOT / "runs" / "browser"
CHROMIUM = Path(os.environ.get("FSAD_CHROMIUM", "/usr/bin/chromium"))
REQUIRE_BROWSER = os.environ.get("FSAD_REQUIRE_BROWSER", "").lower() in {"1", "true", "yes"}  # set by .ci/run
# Without the background-networking flags Chromium keeps dialling Google's hosts, which this closed
# network refuses; --no-sandbox because CI runs as root.
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
# Bounded waits (seconds). The kernel's first import of torch dominates the run-all wait on a slow CPU.
SERVER_START_S = 90
PAGE_LOAD_S = 90
KERNEL_READY_S = 90
RUN_ALL_S = 240
INTERACTION_S = 90
SERVER_STOP_S = 20

pytestmark = pytest.mark.browser


def _require(condition: bool, message: str) -> None:
    if not condition:
        if REQUIRE_BROWSER:
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for_server(process: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"jupyter lab exited with {process.returncode} before serving:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"jupyter lab did not answer {url} within {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM lets the server shut its kernels down; the process group (ours) is killed if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(SERVER_STOP_S)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the server's session: its kernel and nothing else
    except (ProcessLookupError, PermissionError):
        pass
    process.wait(SERVER_STOP_S)


def _prepare(tmp_path: Path) -> tuple[Path, str]:
    """A served folder holding the notebook with injected smoke parameters (as papermill would)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    data = generate_synthetic_dataset(
        tmp_path / "data", seed=0, image_size=64, n_train=4, n_test_good=3, n_test_per_defect=2, categories=["washer"]
    )
    served = tmp_path / "served"
    served.mkdir()
    notebook = load_notebook_node(str(NOTEBOOK))  # papermill's reader (it adds the cell tags it expects)
    # The committed notebook's kernelspec must be the plain python3 one, which the server's (venv) jupyter
    # provides; a missing kernelspec would open JupyterLab's kernel picker and stall the run.
    assert notebook.metadata["kernelspec"]["name"] == "python3"
    notebook = parameterize_notebook(
        notebook,
        {
            "smoke": True,
            "data_root": str(data),
            "categories": ["washer"],
            "device": "cpu",
            "output_dir": str(tmp_path / "out"),
            "backbone": "mobilenet_v2",
            "weights": "imagenet",
        },
    )
    nbformat.write(notebook, served / NOTEBOOK.name)
    return served, NOTEBOOK.name


def _server_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    for name, sub in (
        ("JUPYTER_CONFIG_DIR", "config"),
        ("JUPYTER_RUNTIME_DIR", "runtime"),
        ("JUPYTER_DATA_DIR", "data_dir"),
        ("IPYTHONDIR", "ipython"),
    ):
        env[name] = str(tmp_path / "jupyter" / sub)  # no user config or state leaks in or out
    # The kernel (started by the server, cwd = the served folder) must import this checkout's fsad even
    # when the package is not installed into the venv.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _lab_settings(tmp_path: Path) -> Path:
    """User settings: no news/update checks (the network is closed and their toasts cover widgets)."""
    settings = tmp_path / "jupyter" / "lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    notification.parent.mkdir(parents=True)
    notification.write_text(json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    # Render every cell, not only those in view: the explorer sits mid-notebook and run-all scrolls to the end,
    # and JupyterLab 4's default windowing would take its widgets out of the page.
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text(json.dumps({"windowingMode": "none"}))
    return settings


def _errors_on_page(page) -> str:
    texts = page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], .fsad-explorer .widget-html",
        "els => els.map(e => e.innerText).join('\\n---\\n')",
    )
    return texts[-4000:]


def test_explorer_in_jupyterlab(tmp_path: Path) -> None:
    _require(
        CHROMIUM.is_file(),
        f"{CHROMIUM} is missing: install Debian's chromium (`.ci/install_browser.sh`, "
        "i.e. apt-get install -y chromium); Playwright must not download a browser.",
    )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:
        _require(False, f"playwright is not installed in this environment ({error}); `make venv` installs it.")

    served, name = _prepare(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyter.log"
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--IdentityProvider.token={token}",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.root_dir={served}",
        "--LabApp.expose_app_in_browser=True",
        f"--LabApp.user_settings_dir={_lab_settings(tmp_path)}",
        f"--LabApp.workspaces_dir={tmp_path / 'jupyter' / 'workspaces'}",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")  # CI containers run as root; the server refuses that otherwise
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with log.open("w") as log_file:
        server = subprocess.Popen(
            command,
            cwd=served,
            env=_server_env(tmp_path),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_server(server, f"{base}/api/status?token={token}", log, SERVER_START_S)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=60_000
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.set_default_timeout(INTERACTION_S * 1000)
                page.goto(
                    f"{base}/lab/tree/{name}?token={token}", wait_until="domcontentloaded", timeout=PAGE_LOAD_S * 1000
                )
                # JupyterLab's own API (exposed by --LabApp.expose_app_in_browser): wait for the notebook
                # panel and its kernel, then run every cell with the same command as Run > Run All Cells.
                page.wait_for_function(
                    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " return !!(w && w.sessionContext && w.content && w.content.widgets.length); }",
                    timeout=PAGE_LOAD_S * 1000,
                )
                kernel = page.evaluate(
                    "async () => { const w = window.jupyterapp.shell.currentWidget;"
                    " await w.sessionContext.ready; const k = w.sessionContext.session.kernel;"
                    " return k ? k.name : null; }"
                )
                assert kernel == "python3", f"the notebook opened with kernel {kernel!r}, expected python3"
                page.wait_for_function(
                    "() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status === 'idle'",
                    timeout=KERNEL_READY_S * 1000,
                )
                # Run every cell and wait for the whole run (bounded): the notebook's last cell sets k itself,
                # so the slider is moved only after that, and the change seen is the browser's doing.
                outcome = page.evaluate(
                    "ms => Promise.race([window.jupyterapp.commands.execute('notebook:run-all-cells')"
                    ".then(ok => ok ? 'done' : 'failed'), new Promise(r => setTimeout(() => r('timeout'), ms))])",
                    RUN_ALL_S * 1000,
                )
                auroc = page.locator(".fsad-auroc")
                if outcome != "done" or not auroc.count() or "image AUROC" not in auroc.inner_text():
                    page.screenshot(path=str(SCREENSHOTS / "widget_failure.png"))
                    pytest.fail(
                        f"running the notebook in JupyterLab ended with {outcome!r} (limit {RUN_ALL_S} s) "
                        f"and no AUROC line; page errors:\n{_errors_on_page(page)}\n"
                        f"server log:\n{log.read_text()[-2000:]}"
                    )
                rendered_s = time.monotonic() - started
                before = auroc.inner_text()
                assert "k = 2" in before, before  # the notebook's last cell left k at its largest value
                explorer = page.locator(".fsad-explorer")
                explorer.scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "widget_before.png"))

                # Move the k slider one step down with the keyboard, as a user tabbing to it would.
                handle = page.locator(".fsad-k .noUi-handle")
                handle.focus()
                handle.press("ArrowLeft")
                page.wait_for_function(
                    "before => { const e = document.querySelector('.fsad-auroc');"
                    " return e && e.innerText !== before && e.innerText.includes('image AUROC'); }",
                    arg=before,
                    timeout=INTERACTION_S * 1000,
                )
                after = auroc.inner_text()
                assert "k = 1" in after and "22 support views" in after, after
                assert page.locator(".fsad-k .widget-readout").inner_text().strip() == "1"
                explorer.scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "widget_after.png"))

                # The map viewer: threshold to its maximum (End key) -> no image is flagged defective.
                decision = page.locator(".fsad-decision")
                decision.scroll_into_view_if_needed()
                first = decision.inner_text()
                threshold = page.locator(".fsad-threshold .noUi-handle")
                threshold.focus()
                threshold.press("End")
                page.wait_for_function(
                    "before => { const e = document.querySelector('.fsad-decision');"
                    " return e && e.innerText !== before; }",
                    arg=first,
                    timeout=INTERACTION_S * 1000,
                )
                assert "0 false alarms" in decision.inner_text() and "→ GOOD" in decision.inner_text()
                page.locator(".fsad-viewer").scroll_into_view_if_needed()
                page.screenshot(path=str(SCREENSHOTS / "widget_viewer.png"))
            finally:
                browser.close()
    finally:
        _stop(server)
    print(f"explorer rendered after {rendered_s:.1f} s; whole browser test {time.monotonic() - started:.1f} s")
