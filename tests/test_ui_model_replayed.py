"""The model page marks statistics `flowillower replay --watch` computed afterwards, in a
real browser: the toolbar counts them, each replayed series and compared value says
"replayed", a run that watched its model shows no mark, and a run without statistics
suggests the `--watch` command."""

from __future__ import annotations

import time

import pytest

from flowillower.run import Run
from flowillower.server.demo import demo_graph
from flowillower.store.format import write_replay_file
from tests.conftest import require_browser, ui_server

playwright_api = require_browser()
expect = playwright_api.expect


def _stats(step: int, base: float) -> dict:
    return {"act/fc1/mean": base + step / 100, "grad/fc1.weight/norm": 0.5,
            "act/fc1/hist": {"min": -1.0, "max": 1.0, "counts": [0, 5, 10, 5, 0]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """replayed: its statistics only in a replay file (as replay --watch writes them);
    watched: logged by the run itself; bare: a graph and no statistics."""
    root = tmp_path_factory.mktemp("model-replayed") / ".flowillower"
    ids = {}
    for name in ("replayed", "watched", "bare"):
        run = Run("model-replayed", name, dir=root, snapshot=False)
        run.log_metrics({"loss": 1.0}, 0)
        if name == "watched":
            for step in (0, 10):
                run.log_metrics(_stats(step, 2.0), step, role="watch")
        run.write_json("model/graph.json", demo_graph())
        run.finish()
        ids[name] = run.id
        if name == "replayed":
            rows = [(key, "watch", "object" if key.endswith("/hist") else "float", {}, step,
                     time.time(), value)
                    for step in (0, 10) for key, value in _stats(step, 1.0).items()]
            write_replay_file(run.dir, "20260101-000000-watchrep", rows,
                              [{"event": "replay", "watch": {"name": "model", "every": 1}}])
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def test_replayed_statistics_are_marked(page, server, store):
    ids = store[1]
    page.goto(f"{server}#/model/{ids['replayed']}?node=m:fc1:0")
    expect(page.locator(".toolbar .watch-replayed")).to_have_text("3 statistics replayed")
    detail = page.locator(".detail")
    expect(detail.locator(".stat-replayed .replayed-mark")).to_have_count(2)  # two charts
    expect(detail.locator(".mono", has_text="act/fc1/hist").locator(".replayed-mark")
           ).to_have_text("replayed")
    # Compared with the watched run: its own values carry no mark, the replayed ones do.
    page.goto(f"{server}#/model/{ids['replayed']}?vs={ids['watched']}&node=m:fc1:0")
    row = page.locator("table.cmp-stats tr[data-key='act/fc1/mean'] td")
    expect(row.nth(1)).to_contain_text("replayed")
    expect(row.nth(2)).to_have_text("2.1")


def test_watched_and_bare_runs(page, server, store):
    ids = store[1]
    page.goto(f"{server}#/model/{ids['watched']}?node=m:fc1:0")
    expect(page.locator(".detail h4", has_text="Statistics over steps")).to_be_visible()
    expect(page.locator(".detail .mono", has_text="act/fc1/hist")).to_be_visible()
    assert page.locator(".detail .replayed-mark").count() == 0
    assert page.locator(".toolbar .watch-replayed").count() == 0
    page.goto(f"{server}#/model/{ids['bare']}?node=m:fc1:0")
    expect(page.locator(".detail .missing code")).to_have_text(
        f"flowillower replay --watch model --runs {ids['bare']}")
