"""A real browser: JupyterLab + headless Chromium (playwright) runs lesson 06 and searches by typing.

Needs Debian's chromium (``apt-get install -y chromium``; ``.ci/run`` installs it) and the
``playwright`` Python package (its own browser download is not used). JupyterLab serves a
temporary copy of ``notebooks/`` so nothing is written back into the repository. The
screenshot lands in ``build/test-artifacts/browser_search.png``.
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

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
RUN_ALL_TIMEOUT_MS = 540_000  # cold feature cache + training on a busy 2-core CPU

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a free port with a known token, serving a temporary copy of notebooks/."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install it with `apt-get install -y chromium` "
                    "(.ci/run does this) to run the browser test")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    # Fit (or load) the lesson's pipelines first, untimed, as the lessons before it would have: the
    # test is about the page, and a cold cache on a busy 2-core machine takes minutes.
    import crosslab as cl

    ds = cl.data.load_clipart()
    for name in cl.pipelines.APP_PIPELINES:
        cl.create_pipeline(name, ds, progress=False).search("warm", k=1)
    root = tmp_path_factory.mktemp("lab")
    nbdir = root / "notebooks"
    shutil.copytree(ROOT / "notebooks", nbdir)
    # Start from a blank lesson: no stored outputs or widget state that could be mistaken
    # for the live app.
    import nbformat

    nb_path = nbdir / "06_search_app.ipynb"
    nb = nbformat.read(nb_path, as_version=4)
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, nb_path)
    port, token = _free_port(), uuid.uuid4().hex
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--port-retries=0", f"--ServerApp.root_dir={nbdir}", f"--IdentityProvider.token={token}",
           f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    # JupyterLab 4 renders only the cells in view ("windowing"); the test needs the app's
    # cell in the page whatever is scrolled into view, so switch windowing off for this server.
    settings = root / "settings"
    tracker = settings / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
    tracker.parent.mkdir(parents=True)
    tracker.write_text('{"windowingMode": "none", "autoStartDefaultKernel": true}')
    news = settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings"
    news.parent.mkdir(parents=True)
    news.write_text('{"fetchNews": "false", "checkForUpdates": false}')
    env = os.environ | {"JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
                        "JUPYTERLAB_SETTINGS_DIR": str(settings)}
    log = open(root / "lab.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(cmd, cwd=nbdir, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while True:
        try:
            with urllib.request.urlopen(f"{url}/lab?token={token}", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGTERM) if proc.poll() is None else None
            pytest.fail(f"JupyterLab did not start: {(root / 'lab.log').read_text()[-2000:]}")
        time.sleep(1)
    yield url, token, nbdir
    os.killpg(proc.pid, signal.SIGTERM)  # the server and its kernels (own process group)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_search_app_in_a_real_browser(lab):
    from playwright.sync_api import sync_playwright

    url, token, _ = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/lab/workspaces/{uuid.uuid4().hex[:12]}/tree/06_search_app.ipynb"
                      f"?reset&token={token}")
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
            # A fresh settings folder may still ask which kernel to start: take the default.
            select = page.locator(".jp-Dialog .jp-mod-accept", has_text="Select")
            try:
                select.wait_for(timeout=10_000)
                select.click()
            except Exception:  # no dialog: the kernel started by itself
                pass
            # "Run All" before the kernel is up is fine: JupyterLab queues the cells.
            page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
            page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

            query = page.locator(".crosslab-t2i-query input")
            query.wait_for(timeout=RUN_ALL_TIMEOUT_MS)
            # The last cell (checks) ends with an empty query: the app asks for words.
            message = page.locator(".crosslab-t2i-message")
            page.wait_for_function(
                "() => { const m = document.querySelector('.crosslab-t2i-message');"
                " return m && m.innerText.includes('type a few words'); }",
                timeout=RUN_ALL_TIMEOUT_MS,
            )
            # ... and every code cell has run: each prompt shows its execution count, none "[ ]" or
            # "[*]" (the app says "type a few words" already when it first appears, and the checks
            # cell still changes the query after that; typing before it ends would race it).
            page.wait_for_function(
                "() => { const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]"
                ".map(e => e.innerText.trim()); return p.length > 0 && p.every(t => /^\\[\\d+\\]:?$/.test(t)); }",
                timeout=RUN_ALL_TIMEOUT_MS,
            )
            results = page.locator(".crosslab-t2i-results img")
            assert results.count() == 0

            query.click()
            query.fill("red apple")
            query.press("Enter")
            results.first.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => document.querySelectorAll('.crosslab-t2i-results img').length >= 8",
                timeout=60_000,
            )
            assert "red apple" in message.inner_text()
            sizes = results.evaluate_all("els => els.map(e => [e.naturalWidth, e.naturalHeight])")
            assert len(sizes) == 8 and all(w > 0 and h > 0 for w, h in sizes)  # decoded images
            page.locator(".crosslab-t2i-query").scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser_search.png"))
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "browser_search_failed.png"), full_page=True)
            raise
        finally:
            browser.close()
