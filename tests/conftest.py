"""Shared fixtures: every test gets its own store in a temp dir and a clean API state."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest

import flowillower as fw
from flowillower import api, args


@pytest.fixture(autouse=True)
def clean_state(tmp_path, monkeypatch):
    """Fresh module-level state and a private store for each test."""
    monkeypatch.setenv("FLOWILLOWER_DIR", str(tmp_path / "project"))
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    api._current = None
    api._debug = False
    api._defaults.clear()
    api._scope = None  # a sweep job's settings (integrations.hydra)
    api._watchers.clear()
    args.cli_kwargs.clear()
    args.replay_overrides = None
    yield
    if api._current is not None and api._current.status is None:
        api._current.finish()
    api._current = None
    api._debug = False


@pytest.fixture
def store_dir(tmp_path) -> Path:
    return tmp_path / "project" / ".flowillower"


@pytest.fixture
def run_script(tmp_path):
    """Run a Python script in a subprocess (the way users run training scripts)."""

    def run(source: str, *argv: str, cwd: Path | None = None, env: dict | None = None,
            check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        script = (cwd or tmp_path) / "train_script.py"
        script.write_text(textwrap.dedent(source))
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.run([sys.executable, str(script), *argv], cwd=cwd or tmp_path,
                              env=full_env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"script failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment for a child script: no flowillower or test settings
    leaking in, this checkout's package on PYTHONPATH, then `extra`."""
    import flowillower

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FLOWILLOWER_", "FW_TEST_")) and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(Path(flowillower.__file__).resolve().parent.parent)
    env.update(extra)
    return env


def only_run(store: Path):
    """The single run directory in a store (fails if there isn't exactly one)."""
    runs = sorted((store / "runs").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


T = TypeVar("T")


def ok(response):
    """The JSON of an HTTP answer that must be 200 (its text in the failure otherwise)."""
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.02,
             what: str = "") -> T:
    """Poll `predicate` until it returns something truthy and return that; fail after
    `timeout` seconds. Tests wait on a condition, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for "
                                 f"{what or getattr(predicate, '__name__', predicate)}")
        time.sleep(interval)


__all__ = ["fw", "only_run", "wait_for", "require_browser", "in_ci", "CHROMIUM"]


# -- a real browser: Debian's chromium driven by Playwright ----------------------------------
CHROMIUM = "/usr/bin/chromium"  # the very binary `browser` launches (executable_path)


def in_ci() -> bool:
    """True on CI (`CI=true`, as CI services set it), where nothing may be skipped for a
    missing tool: CI installs them."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_browser():
    """Playwright's sync API, once it and the chromium the tests launch are both there.

    Without them a developer's run skips the browser tests (module-level); CI fails them.
    """
    missing = ""
    try:
        from playwright import sync_api
    except ImportError as exc:
        missing = f"playwright is not installed ({exc})"
    else:
        if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
            missing = f"{CHROMIUM}, the browser these tests launch, is not there"
    if missing:
        if in_ci():
            pytest.fail(f"CI must run the browser tests: {missing}", pytrace=False)
        pytest.skip(f"needs Debian's chromium and playwright: {missing}",
                    allow_module_level=True)
    return sync_api


# One chromium serves a stretch of browser modules in a row (the test_ui_* files): starting
# Playwright and chromium costs about a second and a half per module. It is closed before
# a module that uses no browser runs, because a live sync Playwright keeps an asyncio loop
# running in this thread (asyncio.run() would refuse in that module).
_shared_browser: dict = {}


def _close_browser() -> None:
    if _shared_browser:
        try:
            _shared_browser.pop("browser").close()
        finally:
            _shared_browser.pop("playwright").__exit__(None, None, None)


@pytest.fixture(scope="session", autouse=True)
def _browser_closed_at_the_end() -> Iterator[None]:
    yield
    _close_browser()


@pytest.fixture(scope="module", autouse=True)
def _browser_only_in_browser_modules(request) -> None:
    module = request.module
    if not any("browser" in item.fixturenames for item in request.session.items
               if getattr(item, "module", None) is module):
        _close_browser()


@pytest.fixture(scope="module")
def browser():
    """Headless chromium for a test module (shared with the browser modules run right
    after it; each test still gets a fresh context through `page`)."""
    sync_api = require_browser()
    if _shared_browser and not _shared_browser["browser"].is_connected():
        _close_browser()  # a crashed chromium is started afresh
    if not _shared_browser:
        manager = sync_api.sync_playwright()
        p = manager.__enter__()
        _shared_browser["playwright"] = manager
        try:
            _shared_browser["browser"] = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--headless", "--no-sandbox", "--disable-gpu",
                "--disable-background-networking"])
        except BaseException:
            _shared_browser.pop("playwright").__exit__(None, None, None)
            raise
    return _shared_browser["browser"]


@pytest.fixture
def page(browser):
    """A fresh page; any JavaScript error on it fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.dialogs = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.set_default_timeout(10000)
    yield pg
    context.close()
    assert not pg.errors, pg.errors


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB tmpfs (a disk that fills up), unmounted afterwards; needs root."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        try:
            fw.finish()  # a run a failed test left open must not write after the unmount
        finally:
            if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(disk)], check=True)


@contextmanager
def ui_server(store_root: Path, **app_options) -> Iterator[str]:
    """`flowillower ui`'s app on a free loopback port, in a thread; yields its URL."""
    import uvicorn

    from flowillower.server.app import create_app

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(create_app(store_root, **app_options), host="127.0.0.1",
                                        port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, timeout=30, what="the UI server to start")
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        srv.should_exit = True
        thread.join(5)


@contextmanager
def static_server(folder: Path) -> Iterator[str]:
    """`python -m http.server` serving `folder` on a free loopback port; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind",
                             "127.0.0.1", "-d", str(folder)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), 0.1).close()
            return True
        except OSError:
            return False

    try:
        wait_for(listening, timeout=10, what="python -m http.server to listen")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(5)


def fill_disk(disk: Path) -> Path:
    """Fill the disk to the last byte with a ballast file."""
    ballast = disk / "ballast"
    with open(ballast, "wb", buffering=0) as fh:
        for size in (65536, 4096, 256, 1):
            try:
                while fh.write(b"\xa5" * size):
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return ballast
