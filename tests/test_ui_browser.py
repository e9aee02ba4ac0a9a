"""The UI in a real browser (Debian's chromium via Playwright): table, filters, charts,
run page, model graph, live updates, HTML payloads shown as text, and the static export
served by `python -m http.server`. Screenshots land in $TMPDIR/flowillower-ui-*.png."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from flowillower.run import Run
from flowillower.server.demo import make_demo_store
from tests.conftest import require_browser, static_server, ui_server, wait_for

# Skips the module without /usr/bin/chromium (the binary launched) or playwright; CI fails.
playwright_api = require_browser()
expect = playwright_api.expect
XSS = "<img src=x onerror=window.__pwned=1>"
SHOTS = Path(tempfile.gettempdir())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser") / ".flowillower"
    names = ["alpha", "beta", "gamma", "delta", XSS]
    ids = make_demo_store(root, runs=5, steps=200, names=names)
    live = Run("demo", "live-run", dir=root, snapshot=False)
    live.record_args({"lr": 0.5, "comment": "<script>window.__pwned=2</script>"})
    for step in range(20):
        live.log_metrics({"train/loss": 1.0}, step)
    live.flush()
    yield root, ids, live
    live.finish()


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


# The `browser` and `page` fixtures live in tests/conftest.py (the demo tests use them too).


def rows(pg) -> list[str]:
    return pg.eval_on_selector_all("table.runs tr[data-id] td:nth-child(2) a",
                                   "els => els.map(e => e.textContent)")


def wait_rows(pg, n: int) -> list[str]:
    # Locator waits, not wait_for_function: the UI's CSP forbids eval, rightly.
    expect(pg.locator("table.runs tr[data-id]")).to_have_count(n)
    return rows(pg)


def wait_image(pg, selector: str) -> None:
    wait_for(lambda: pg.locator(selector).count() and pg.locator(selector).first.evaluate(
        "img => img.complete && img.naturalWidth > 0"), timeout=10, interval=0.05,
        what=f"an image loaded at {selector}")


def test_table_lists_runs_and_shows_html_as_text(page, server):
    page.goto(server)
    names = wait_rows(page, 6)
    assert {"alpha", "beta", "gamma", "delta", "live-run", XSS} == set(names)
    assert page.evaluate("window.__pwned") is None and not page.dialogs
    assert page.locator("table.runs img").count() == 0  # the payload stayed text
    assert page.locator("td", has_text="<script>window.__pwned=2</script>").count() == 1
    assert page.locator("table.runs th", has_text="lr").count() >= 1
    page.screenshot(path=str(SHOTS / "flowillower-ui-table.png"))


@pytest.mark.parametrize("query, expected", [
    ("lr < 0.02 and optimizer == 'adam'", {"gamma"}),
    ("${'hyper-lr':[0.1, 0.003]}$", {"alpha", "delta", XSS}),
    ("gamma", {"gamma"}),
])
def test_filter_narrows_rows(page, server, query, expected):
    page.goto(server)
    wait_rows(page, 6)
    page.fill("input.search", query)
    page.press("input.search", "Enter")
    assert set(wait_rows(page, len(expected))) == expected
    if len(expected) > 1:  # an arg that never varies among them is folded away
        expect(page.locator(".folded")).to_contain_text("layers=3")
        assert page.locator("table.runs th", has_text="layers").count() == 0


def test_bad_filter_shows_error(page, server):
    page.goto(server)
    wait_rows(page, 6)
    page.fill("input.search", "lr <")
    page.press("input.search", "Enter")
    page.wait_for_selector(".error:has-text('bad filter')")


def test_select_two_runs_and_chart_them(page, server):
    page.goto(server)
    wait_rows(page, 6)
    for name in ("alpha", "beta"):
        page.locator("tr[data-id]", has_text=name).locator("input[type=checkbox]").check()
    page.click("text=Chart 2 selected")
    chart = page.locator('.chart[data-key="train/loss"]')
    chart.locator("canvas").first.wait_for()
    page.wait_for_selector('.chart[data-key="train/loss"][data-drawn="2"]')
    legend = chart.locator("table.legend tr a").all_text_contents()
    assert legend == ["alpha", "beta"]
    assert page.locator(".chart[data-drawn='2']").count() >= 4  # loss, lr, val/acc, val/loss
    page.screenshot(path=str(SHOTS / "flowillower-ui-charts.png"))


def test_run_page_shows_image_and_escapes_name(page, server, store):
    page.goto(f"{server}#/run/{store[1][4]}")
    page.wait_for_selector("h1.run-name")
    assert page.text_content("h1.run-name") == XSS
    wait_image(page, ".media img")
    page.locator(".media input[type=range]").fill("0")
    assert "step 50" in page.text_content(".media .muted")
    assert page.evaluate("window.__pwned") is None
    page.screenshot(path=str(SHOTS / "flowillower-ui-run.png"), full_page=True)


def test_model_page_draws_graph_and_node_stats(page, server, store):
    page.goto(f"{server}#/model/{store[1][0]}")
    page.wait_for_selector("svg g.node")
    assert page.locator("svg g.node").count() == 7  # x, fc1, act, fc2, add, head, output
    assert page.locator("svg g.cluster").count() == 1
    page.locator("svg g.node", has_text="fc1").click()
    page.wait_for_selector(".detail h3:has-text('fc1')")
    assert "Linear" in page.text_content(".detail")
    page.wait_for_selector(".detail .chart[data-drawn='1'] canvas")
    page.wait_for_selector(".detail canvas.heat")
    page.locator("svg g.node", has_text="fc1").dblclick()  # open: shows its op
    page.wait_for_selector("svg g.node.op:has-text('linear')")
    page.screenshot(path=str(SHOTS / "flowillower-ui-model.png"))


def test_live_chart_follows_a_running_run(page, server, store):
    _, _, live = store
    page.goto(f"{server}#/charts?runs={live.id}&m=train/loss")
    page.wait_for_selector(".chart[data-drawn='1']")
    last = page.locator(".chart table.legend tr:nth-child(2) td:nth-child(3)")
    assert last.text_content() == "1"
    for step in range(20, 30):
        live.log_metrics({"train/loss": 0.25}, step)
    live.flush()
    expect(last).to_have_text("0.25", timeout=15000)


def test_note_edit_saves_and_renders_text(page, server, store):
    page.goto(server)
    wait_rows(page, 6)
    cell = page.locator("tr[data-id]", has_text="beta").locator("td.note")
    cell.click()
    cell.locator("input").fill("<b>bold?</b> memo")
    cell.locator("input").press("Enter")
    page.wait_for_timeout(300)
    page.reload()
    wait_rows(page, 6)
    cell = page.locator("tr[data-id]", has_text="beta").locator("td.note")
    assert cell.text_content() == "<b>bold?</b> memo"
    assert cell.locator("b").count() == 0


def test_compare_page_draws(page, server):
    page.goto(f"{server}#/compare")
    page.wait_for_selector(".pc canvas")
    assert "runs" in page.text_content("main")


def test_static_export_served_by_http_server(page, store, tmp_path):
    from flowillower.server.export import export_site

    site = tmp_path / "site"
    export_site(store[0], site)
    with static_server(site) as base:
        page.goto(base)
        assert set(wait_rows(page, 6)) >= {"alpha", XSS}
        assert "static export" in page.text_content("#mode-info")
        page.fill("input.search", "lr < 0.02 and optimizer == 'adam'")
        page.press("input.search", "Enter")
        assert wait_rows(page, 1) == ["gamma"]
        page.goto(f"{base}#/charts?runs={','.join(store[1][:2])}")
        page.wait_for_selector('.chart[data-key="train/loss"][data-drawn="2"] canvas')
        page.screenshot(path=str(SHOTS / "flowillower-ui-static.png"))
        page.goto(f"{base}#/model/{store[1][0]}")
        page.wait_for_selector("svg g.node")
        page.goto(f"{base}#/run/{store[1][0]}")
        wait_image(page, ".media img")
