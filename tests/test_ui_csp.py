"""The live UI's security policy lets exactly its own start-up script run inline."""

from __future__ import annotations

import threading

import pytest

from flowillower.server.demo import make_demo_store
from tests.conftest import wait_for
from tests.test_ui_browser import _free_port


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    import uvicorn

    from flowillower.server.app import create_app

    root = tmp_path_factory.mktemp("csp") / ".flowillower"
    make_demo_store(root, runs=2, steps=20)
    srv = uvicorn.Server(uvicorn.Config(create_app(root, sync_interval=0.2),
                                        host="127.0.0.1", port=_free_port(),
                                        log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_for(lambda: srv.started, timeout=30, what="the UI server to start")
    yield f"http://127.0.0.1:{srv.config.port}/"
    srv.should_exit = True
    thread.join(5)


def test_start_up_script_runs_and_other_inline_scripts_do_not(page, live_url):
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text))
    response = page.goto(live_url)
    policy = response.headers["content-security-policy"]
    assert "'sha256-" in policy and "'unsafe-inline'" not in policy.split("style-src")[0]
    page.wait_for_selector("table.runs tr[data-id]")
    assert not [m for m in console if "Content Security Policy" in m], console
    # An injected inline script (not ours) is still refused.
    page.evaluate("""() => { const s = document.createElement('script');
                             s.textContent = 'window.__injected = 1';
                             document.head.appendChild(s); }""")
    assert page.evaluate("() => window.__injected") is None
