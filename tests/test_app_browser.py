"""A real browser on ``make app``'s page: Voila serves the collection search app, headless Chromium
types a query and sees result pictures, then uploads a picture and sees phrases for it.

The server is started exactly as ``make app`` starts it (``scripts/app.sh``, with DIR, PIPELINE,
PORT and a token in the environment) over a temporary folder of clip-art drawings. Needs
Debian's chromium (``.ci/run`` installs it) and the ``playwright`` package. The screenshot lands
in ``build/test-artifacts/app_search.png``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "build" / "test-artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = [pytest.mark.browser, pytest.mark.slow]
N_PICTURES = 40


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install it with `apt-get install -y chromium` (.ci/run does this)")
    pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    pytest.importorskip("voila", reason="voila is not installed (it is in the course's lock file)")
    import crosslab as cl

    root = tmp_path_factory.mktemp("app")
    folder = root / "my pictures"  # a space in the name, as real folders have
    folder.mkdir()
    ds = cl.data.load_clipart()
    # Fit (or load) the page's pipeline first, untimed, as the lessons would have: the test is about
    # the page, and a cold cache on a busy 2-core machine takes minutes.
    cl.create_pipeline("mlp+minilm", ds, progress=False)
    for rel in ds.images[:N_PICTURES]:
        shutil.copy(Path(ds.root) / rel, folder / Path(rel).name)
    (folder / "readme.txt").write_text("not a picture")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir())
    port, token = _free_port(), uuid.uuid4().hex
    env = os.environ | {"DIR": str(folder), "PIPELINE": "mlp+minilm", "PORT": str(port),
                        "CROSSLAB_APP_TOKEN": token, "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
                        "JUPYTER_CONFIG_DIR": str(root / "config")}
    log = open(root / "app.log", "wb")  # noqa: SIM115 (closed in teardown)
    proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "app.sh")], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600  # the first run indexes the folder (and may fit the pipeline)
    while True:
        try:
            with urllib.request.urlopen(f"{url}/?token={token}", timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGTERM) if proc.poll() is None else None
            pytest.fail(f"the app did not start: {(root / 'app.log').read_text(errors='replace')[-3000:]}")
        time.sleep(1)
    yield url, token, folder, before, root
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def test_the_page_needs_its_token(app_server):
    url, token, *_ = app_server
    for bad in (f"{url}/", f"{url}/?token=wrong{token}"):
        try:  # without the token the server sends the browser to its login form, not the app
            with urllib.request.urlopen(bad, timeout=10) as r:
                assert "/login" in r.url and "crosslab" not in r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            assert e.code in (401, 403)
    with urllib.request.urlopen(f"{url}/?token={token}", timeout=10) as r:
        assert "/login" not in r.url


def test_search_page_in_a_real_browser(app_server):
    from playwright.sync_api import sync_playwright

    url, token, folder, before, root = app_server
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            page.goto(f"{url}/?token={token}")
            query = page.locator(".crosslab-col-query input")
            query.wait_for(timeout=180_000)
            status = page.locator(".crosslab-col-status").inner_text()
            assert f"{N_PICTURES} pictures" in status, status
            query.fill("a red apple")
            query.press("Enter")
            page.wait_for_function(
                "() => document.querySelectorAll('.crosslab-col-results img').length >= 8", timeout=30_000)
            message = page.locator(".crosslab-col-message").inner_text()
            assert "top 8 of 40 pictures for 'a red apple'" in message, message
            names = page.locator(".crosslab-col-results figcaption").all_inner_texts()
            assert all(n.split()[0] == f"{i}." for i, n in enumerate(names, 1)), names
            # every result picture really rendered (a data URI that decoded to pixels)
            widths = page.eval_on_selector_all(".crosslab-col-results img", "els => els.map(e => e.naturalWidth)")
            assert len(widths) == 8 and all(w > 0 for w in widths), widths
            page.screenshot(path=str(ARTIFACTS / "app_search.png"))

            # picture -> phrases: upload one of the folder's drawings
            picture = sorted(folder.glob("*.png"))[0]
            with page.expect_file_chooser() as chooser:  # the button opens the system's file dialog
                page.locator(".crosslab-col-upload").click()
            chooser.value.set_files(str(picture))
            page.wait_for_function(
                "() => document.querySelectorAll('.crosslab-col-phrases tr').length >= 6", timeout=30_000)
            first = page.locator(".crosslab-col-results figcaption").first.inner_text()
            assert picture.name in first and "1.000" in first, first  # the picture itself comes first
            page.screenshot(path=str(ARTIFACTS / "app_upload.png"))
        finally:
            browser.close()
    # the user's folder was only read
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir()) == before
