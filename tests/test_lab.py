"""`make lab` serves the course (token auth on) and stops cleanly; the setup is idempotent."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV = Path(sys.prefix)  # the environment running these tests is the one make uses


@pytest.fixture(scope="module")
def current_venv() -> Path:
    """The venv under test, checked to match the lock file, so no target below starts a rebuild."""
    stamp = VENV / ".crosslab-lock"
    if not stamp.is_file():
        pytest.skip(f"{VENV} was not built by scripts/setup_venv.sh (no {stamp.name}); run `make test`")
    # Same key as scripts/setup_venv.sh: sha256 of requirements.lock + pyproject.toml, 16 hex digits.
    want = hashlib.sha256((ROOT / "requirements.lock").read_bytes()
                          + (ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]
    if stamp.read_text().strip() != want:
        pytest.fail(f"{VENV} was built from another requirements.lock/pyproject.toml; run `make setup`")
    return VENV


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        # SO_REUSEADDR: connections left in TIME_WAIT do not count, a listening socket does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)  # signal 0: only asks whether any process of the group exists
    except ProcessLookupError:
        return False
    return True


def _argv_with(needle: str) -> list[str]:
    """Command lines of running processes that contain ``needle`` (what `ps` shows every user)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes()
        except OSError:  # the process ended meanwhile, or is not ours to read
            continue
        if needle.encode() in argv:
            shown = argv.replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{cmdline.parent.name}: {shown}")
    return found


def test_setup_rerun_skips_install(current_venv):
    # The acceptance: re-running the setup with an unchanged lock installs nothing.
    env = {**os.environ, "VENV": str(current_venv)}
    p = subprocess.run(["bash", "scripts/setup_venv.sh"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == f"environment: {current_venv} is up to date", p.stdout + p.stderr


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_serves_course_and_stops(current_venv, tmp_path):
    port, token = _free_port(), "crosslab-test-" + os.urandom(8).hex()
    env = {**os.environ, "VENV": str(current_venv), "CROSSLAB_LAB_TOKEN": token,
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}
    log = tmp_path / "lab.log"
    with open(log, "wb") as out:
        # Its own process group: make, bash and jupyter all receive the stop signal.
        proc = subprocess.Popen(["make", "--no-print-directory", "lab", f"PORT={port}"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"make lab exited with {proc.returncode}:\n{log.read_text()}")
            try:
                status, _ = _get(f"{base}/lab?token={token}")
            except OSError:  # not listening yet
                status = None
            if status == 200:
                break
            time.sleep(0.5)
        assert status == 200, f"/lab did not answer 200 within 60 s (last: {status}):\n{log.read_text()}"

        # The token is on no process's command line (`ps` shows those to every local user).
        if Path("/proc/self/cmdline").is_file():
            assert not _argv_with(token), _argv_with(token)

        # Token auth is on: the API refuses a request without it.
        assert _get(f"{base}/api/status")[0] == 403
        assert _get(f"{base}/api/status?token=wrong")[0] == 403
        # The server's root is the course's notebooks/ folder.
        code, body = _get(f"{base}/api/contents?token={token}")
        assert code == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert "sanitize.cfg" in names and all((ROOT / "notebooks" / n).exists() for n in names)
        text = log.read_text()
        assert f"http://127.0.0.1:{port}/lab?token={token}" in text
        assert "is up to date" in text  # `make lab` ran the setup, which found nothing to do
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"JupyterLab ignored SIGTERM for 30 s:\n{log.read_text()}")

    # Stopped by its PID's group: no process of it is left, nothing listens on the port.
    deadline = time.monotonic() + 15
    while (_group_alive(proc.pid) or _port_in_use(port)) and time.monotonic() < deadline:
        time.sleep(0.2)  # jupyter may still be closing after make exited
    assert not _group_alive(proc.pid), f"processes of the lab's group {proc.pid} are still running"
    assert not _port_in_use(port), f"port {port} is still taken after stopping the lab"
    with pytest.raises(OSError):
        _get(f"{base}/lab?token={token}")
