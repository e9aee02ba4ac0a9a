"""The live UI's security policy lets exactly its own start-up script run inline."""

from __future__ import annotations

import pytest

from flowillower.server.demo import make_demo_store
from tests.conftest import ui_server


@pytest.fixture(scope="module")
def live_url(tmp_path_factory):
    root = tmp_path_factory.mktemp("csp") / ".flowillower"
    make_demo_store(root, runs=2, steps=20)
    with ui_server(root, sync_interval=0.2) as url:
        yield url


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
