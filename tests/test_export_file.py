"""The exported site opened from a file says exactly how to serve it; a broken one says
what failed. Never "Loading..." forever (issue 19, item 6)."""

from __future__ import annotations

import functools
import http.server
import shlex
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowillower.server.demo import make_demo_store
from flowillower.server.export import export_site
from tests.conftest import require_browser, wait_for

playwright_api = require_browser()
expect = playwright_api.expect


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("exp") / ".flowillower"
    make_demo_store(root, runs=2, steps=50, names=["first", "second"])
    # A space and a quote-worthy name: the command shown must survive being pasted.
    out = root.parent / "my site"
    export_site(root, out, points=20)
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as res:
            return res.status == 200
    except OSError:
        return False


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve_copy(tmp_path) -> Iterator:
    """Serve a folder over HTTP from a thread; yields a function folder -> base URL."""
    servers = []

    def start(folder: Path) -> str:
        handler = functools.partial(_Quiet, directory=str(folder))
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_opened_from_a_file_shows_the_command_that_serves_it(site, page):
    page.goto((site / "index.html").as_uri())
    box = page.locator("#boot-msg")
    expect(box).to_be_visible()
    assert "served over HTTP" in box.inner_text()
    assert "Loading" not in page.locator("#view").inner_text()
    command = page.locator("#boot-msg code").inner_text()
    assert command == f'python -m http.server --bind 127.0.0.1 -d "{site}" 8000'
    url = page.locator("#boot-msg a").get_attribute("href")
    assert url == "http://127.0.0.1:8000/"

    # The command, pasted into a shell (a free port instead of 8000), serves the runs.
    port = _free_port()
    argv = shlex.split(command)
    argv[0], argv[-1] = sys.executable, str(port)
    proc = subprocess.Popen(argv, cwd="/", stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(base), timeout=15, what="http.server to answer")
        page.goto(base)
        expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
        expect(page.locator("#boot-msg")).to_have_count(0)
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_broken_export_says_what_failed(site, page, serve_copy, tmp_path):
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(site), str(broken)], check=True)
    (broken / "static" / "js" / "dom.js").unlink()  # a half-uploaded site
    page.goto(serve_copy(broken))
    box = page.locator("#boot-msg")
    expect(box).to_be_visible()
    text = box.inner_text()
    assert "failed to start" in text and "could not load static/js/dom.js" in text
    assert "Loading" not in page.locator("#view").inner_text()


def test_served_export_starts_without_a_message(site, page, serve_copy):
    page.goto(serve_copy(site))
    expect(page.locator("table.runs tr[data-id]")).to_have_count(2)
    assert page.locator("html").get_attribute("data-fw-started") == ""
    expect(page.locator("#boot-msg")).to_have_count(0)


def test_serve_command_pasted_into_a_shell_serves_the_site(tmp_path):
    root = tmp_path / ".flowillower"
    make_demo_store(root, runs=1, steps=20, names=["only"])
    out = tmp_path / "it's my site"  # a quote and a space: pasted as printed, still one path
    result = export_site(root, out, points=10)
    command = result["serve"]
    assert command.startswith("python -m http.server --bind 127.0.0.1 -d ")
    assert command.endswith(" 8000") and result["url"] == "http://127.0.0.1:8000/"
    port = _free_port()
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    proc = subprocess.Popen(["bash", "-c", "exec " + command[:-len("8000")] + str(port)],
                            cwd="/", env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _answers(base + "data/index.json"), timeout=15,
                 what="the printed command to serve the export")
        with urllib.request.urlopen(base + "index.html", timeout=5) as res:
            assert b'content="static"' in res.read()
    finally:
        proc.terminate()
        proc.wait(10)
