"""The lessons' explorer in a real browser: JupyterLab serves a small notebook that calls
``minisd3.course.plotting.explorer`` (the ipywidgets path the lessons take in a live kernel), headless
Chromium runs it, moves the slider, and the figure must change.

Needs Debian's chromium (``apt-get install chromium``; ``.ci/run`` installs it) and the ``playwright``
package; playwright's own browser download is never used. In CI (``CI`` set) a missing browser fails the
test; on a developer machine without it the test skips. Everything runs on localhost.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import nbformat
import pytest

CHROMIUM = Path(os.environ.get("MINISD3_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
TIMEOUT_MS = 90_000  # generous: a cold JupyterLab and kernel on a busy two-core machine

EXPLORER_CELL = '''\
%matplotlib inline
import matplotlib.pyplot as plt
import torch

from minisd3.course.plotting import explorer, plot_points, plot_vector_field
from minisd3.marginal_field import marginal_velocity_field
from minisd3.toy2d import eight_gaussians_mixture

plt.rcParams["figure.dpi"] = 80
mixture = eight_gaussians_mixture()
field = marginal_velocity_field(mixture)
generator = torch.Generator().manual_seed(0)
x0, noise = mixture.sample(300, generator), torch.randn(300, 2, generator=generator)


def render(ax, t):
    plot_points(ax, (1 - t) * x0 + t * noise, "", color="tab:orange")  # z_t of random pairs
    plot_vector_field(ax, field, t, title=f"exact marginal field at t = {t:.2f}", n=11)


explorer(render, controls={"t": [1.0, 0.75, 0.5, 0.25, 0.0]}, panel_size=3.5)
'''


# True once the open notebook's kernel has started and is idle (needs --LabApp.expose_app_in_browser).
KERNEL_IDLE = """() => {
    const app = window.jupyterapp;
    const widget = app && app.shell.currentWidget;
    const kernel = widget && widget.sessionContext && widget.sessionContext.session
        && widget.sessionContext.session.kernel;
    return Boolean(kernel) && kernel.status === 'idle';
}"""


def _missing(reason: str):
    """Fail in CI, which must run the browser test; skip with ``reason`` elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the browser test")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_server(url: str, process: subprocess.Popen, log: Path, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"JupyterLab did not answer at {url} within {seconds:.0f} s:\n{log.read_text()[-3000:]}")


def _start_lab(folder: Path, port: int, token: str) -> tuple[subprocess.Popen, Path]:
    env = {k: v for k, v in os.environ.items() if k not in ("MINISD3_STATIC", "MPLBACKEND")}  # a live kernel: widgets
    env.update(JUPYTER_CONFIG_DIR=str(folder / "config"), JUPYTER_RUNTIME_DIR=str(folder / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(folder / "settings"), JUPYTERLAB_WORKSPACES_DIR=str(folder / "workspaces"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    log = folder / "lab.log"
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={folder / 'work'}",
               "--ServerApp.allow_root=True", "--LabApp.news_url=None", "--LabApp.expose_app_in_browser=True",
               "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)  # the server and its kernel: a session of their own
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def test_explorer_slider_redraws_the_figure_in_jupyterlab(tmp_path):
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run installs it)")
    try:
        from playwright import sync_api
    except ImportError:
        _missing("no playwright (pip install -r requirements.txt)")
    (tmp_path / "work").mkdir()
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(EXPLORER_CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "work" / "explorer.ipynb")

    port, token = _free_port(), uuid.uuid4().hex
    base = f"http://127.0.0.1:{port}"
    process, log = _start_lab(tmp_path, port, token)
    try:
        _wait_for_server(f"{base}/api/status?token={token}", process, log)
        with sync_api.sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
            try:
                page = context.pages[0] if context.pages else context.new_page()
                page.set_default_timeout(TIMEOUT_MS)
                page.goto(f"{base}/lab/tree/explorer.ipynb?token={token}")
                # Run the cell through JupyterLab's own command once its kernel is idle: a key press sent while
                # the editor or the kernel is still starting is lost on a busy machine (CI failed that way once).
                page.wait_for_function(KERNEL_IDLE, timeout=2 * TIMEOUT_MS)
                page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

                image = page.locator(".jp-OutputArea-output .widget-interact img").first
                try:
                    image.wait_for(state="visible", timeout=2 * TIMEOUT_MS)
                except sync_api.TimeoutError:
                    outputs = page.locator(".jp-OutputArea").all_inner_texts()
                    pytest.fail(f"no explorer image after {2 * TIMEOUT_MS / 1000:.0f} s; cell output: {outputs!r}; "
                                f"JupyterLab log:\n{log.read_text()[-2000:]}")
                before = image.get_attribute("src")
                readout = page.locator(".widget-interact .widget-readout").first
                assert readout.inner_text().strip() == "1.0", readout.inner_text()

                page.locator(".widget-interact .noUi-handle").first.focus()
                page.keyboard.press("ArrowRight")  # one option on: t = 0.75
                page.wait_for_function("([before]) => { const img = document.querySelector("
                                       "'.jp-OutputArea-output .widget-interact img'); "
                                       "return img !== null && img.src !== before; }", arg=[before])
                assert readout.inner_text().strip() == "0.75"
                after = page.locator(".jp-OutputArea-output .widget-interact img").first.get_attribute("src")
                assert after.startswith("data:image/png") and after != before
            finally:
                context.close()
    finally:
        _stop(process)
        shutil.rmtree(tmp_path / "chromium-profile", ignore_errors=True)
