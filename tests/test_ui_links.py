"""Views are links: the runs table's filter, sort, grouping, hidden columns and the run
selection are written to the URL hash as the user changes them, so the copied URL opened
in a fresh browser context (no localStorage) shows the same view, live and exported."""

from __future__ import annotations

import pytest

from flowillower.server.demo import make_demo_store
from tests.conftest import require_browser, static_server, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect
NAMES = ["alpha", "beta", "gamma", "delta"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("links") / ".flowillower"
    ids = make_demo_store(root, runs=4, steps=40, media=False, model=False, names=NAMES)
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def fresh_page(browser):
    """A page in a new browser context: nothing of the first page's localStorage."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    pg.errors = []
    pg.on("pageerror", lambda e: pg.errors.append(str(e)))
    pg.set_default_timeout(10000)
    return context, pg


def href(pg) -> str:
    """The page's address now: a round trip (the sync API's page.url may lag behind a
    history.replaceState until it next talks to the browser)."""
    return pg.evaluate("location.href")


def names_shown(pg, n: int) -> list[str]:
    expect(pg.locator("table.runs tr[data-id]")).to_have_count(n)
    return pg.eval_on_selector_all("table.runs tr[data-id] td:nth-child(2) a",
                                   "els => els.map(e => e.textContent)")


def headers(pg) -> list[str]:
    return pg.eval_on_selector_all("table.runs thead th[draggable]",
                                   "els => els.map(e => e.title.split(' ')[0])")


def set_up_view(pg, base: str) -> list[str]:
    """Filter, sort by name ascending, hide the dropout column, select gamma."""
    pg.goto(base)
    names_shown(pg, 4)
    pg.fill("input.search", "lr < 0.05")
    pg.press("input.search", "Enter")
    names_shown(pg, 3)
    pg.locator("table.runs th[title^='name ']").click()
    wait_for(lambda: names_shown(pg, 3) == ["beta", "delta", "gamma"], timeout=10,
             what="rows sorted by name")
    pg.click("button:has-text('Columns')")
    pg.locator(".menu label", has_text="dropout").locator("input").uncheck()
    wait_for(lambda: "arg:dropout" not in headers(pg), timeout=10, what="dropout hidden")
    pg.click("h1, header, body", position={"x": 5, "y": 5})  # close the menu
    pg.locator("tr[data-id]", has_text="gamma").locator("input[type=checkbox]").check()
    expect(pg.locator("#sel-info")).to_contain_text("1 selected")
    return headers(pg)


def assert_same_view(pg, cols: list[str]) -> None:
    assert names_shown(pg, 3) == ["beta", "delta", "gamma"]
    assert pg.input_value("input.search") == "lr < 0.05"
    wait_for(lambda: headers(pg) == cols, timeout=10, what="the same columns")
    assert "arg:dropout" not in cols
    expect(pg.locator("tr[data-id]", has_text="gamma").locator("input[type=checkbox]")).to_be_checked()
    expect(pg.locator("tr[data-id]", has_text="beta").locator("input[type=checkbox]")).not_to_be_checked()
    expect(pg.locator("#sel-info")).to_contain_text("1 selected")


def test_runs_view_link_reproduces_filter_sort_columns_selection(page, browser, server):
    cols = set_up_view(page, server)
    url = href(page)
    assert "#/" in url and "sort=name" in url
    # No new history entry per change: back leaves the app's first page.
    assert page.evaluate("history.length") <= 2
    context, other = fresh_page(browser)
    try:
        other.goto(url)
        assert_same_view(other, cols)
        assert not other.errors, other.errors
    finally:
        context.close()


def test_grouping_and_hidden_runs_travel_in_the_link(page, browser, server):
    page.goto(server)
    names_shown(page, 4)
    page.select_option("select[title='group rows by an arg']", value="arg:batch_size")
    expect(page.locator("table.runs th", has_text="group: batch_size")).to_have_count(1)
    page.locator("label[title='also list runs you hid'] input").check()
    wait_for(lambda: "hidden=1" in href(page) and "group=arg" in href(page), timeout=10,
             what="the grouping and hidden box in the URL")
    context, other = fresh_page(browser)
    try:
        other.goto(href(page))
        expect(other.locator("table.runs th", has_text="group: batch_size")).to_have_count(1)
        assert other.input_value("select[title='group rows by an arg']") == "arg:batch_size"
        expect(other.locator("label[title='also list runs you hid'] input")).to_be_checked()
    finally:
        context.close()


def test_selection_link_opens_the_same_charts(page, browser, server, store):
    page.goto(server)
    names_shown(page, 4)
    for name in ("alpha", "delta"):
        page.locator("tr[data-id]", has_text=name).locator("input[type=checkbox]").check()
    page.click("text=Chart 2 selected")
    page.wait_for_selector('.chart[data-key="train/loss"][data-drawn="2"]')
    context, other = fresh_page(browser)
    try:
        other.goto(href(page))
        other.wait_for_selector('.chart[data-key="train/loss"][data-drawn="2"]')
        legend = other.locator('.chart[data-key="train/loss"] table.legend tr a').all_text_contents()
        assert sorted(legend) == ["alpha", "delta"]
    finally:
        context.close()


def test_chart_settings_link(page, browser, server):
    page.goto(server)
    names_shown(page, 4)
    for name in ("alpha", "delta"):
        page.locator("tr[data-id]", has_text=name).locator("input[type=checkbox]").check()
    page.click("text=Chart 2 selected")
    page.wait_for_selector('.chart[data-key="train/loss"][data-drawn="2"]')
    page.select_option("select[aria-label='x axis']", value="time")
    page.locator("input[aria-label=smoothing]").evaluate(
        "el => { el.value = '0.5'; el.dispatchEvent(new Event('input', {bubbles: true})); }")
    page.locator("label", has_text="log y").locator("input").check()
    page.fill("input[placeholder='metric filter']", "val/")
    wait_for(lambda: "smooth=0.5" in href(page) and "m=val" in href(page), timeout=10,
             what="the chart settings in the URL")
    context, other = fresh_page(browser)
    try:
        other.goto(href(page))
        other.wait_for_selector('.chart[data-key="val/loss"][data-drawn="2"]')
        assert other.input_value("select[aria-label='x axis']") == "time"
        assert other.input_value("input[aria-label=smoothing]") == "0.5"
        expect(other.locator("label", has_text="log y").locator("input")).to_be_checked()
        assert other.input_value("input[placeholder='metric filter']") == "val/"
        keys = other.eval_on_selector_all(".chart[data-key]", "els => els.map(e => e.dataset.key)")
        assert sorted(keys) == ["val/acc", "val/loss"]
    finally:
        context.close()


def test_compare_axes_link(page, browser, server):
    page.goto(f"{server}#/compare")
    page.wait_for_selector("select[aria-label='x column']")
    page.select_option("select[aria-label='x column']", value="arg:dropout")
    page.select_option("select[aria-label='colour']", value="arg:lr")
    page.locator("label:has(select[aria-label='y column']) input[type=checkbox]").check()
    wait_for(lambda: "logy=true" in href(page) and "c=arg" in href(page), timeout=10,
             what="the compare axes in the URL")
    context, other = fresh_page(browser)
    try:
        other.goto(href(page))
        other.wait_for_selector("select[aria-label='x column']")
        assert other.input_value("select[aria-label='x column']") == "arg:dropout"
        assert other.input_value("select[aria-label='colour']") == "arg:lr"
        expect(other.locator("label:has(select[aria-label='y column']) input[type=checkbox]")).to_be_checked()
    finally:
        context.close()


def test_exported_site_link_round_trip(page, browser, store, tmp_path):
    from flowillower.server.export import export_site

    site = tmp_path / "site"
    export_site(store[0], site)
    with static_server(site) as base:
        cols = set_up_view(page, base)
        context, other = fresh_page(browser)
        try:
            other.goto(href(page))
            assert_same_view(other, cols)
        finally:
            context.close()


def test_compare_late_answer_of_older_settings_is_dropped(page, server):
    """Two setting changes in a row: the answer for the first arrives after the second's.
    The page draws the newest settings and never the stale answer (which lacks the colour
    column and used to throw)."""
    page.goto(f"{server}#/compare")
    page.wait_for_selector("select[aria-label='x column']")
    expect(page.locator(".muted", has_text="runs")).to_be_visible()
    held = []
    page.route("**/api/points*", lambda route: held.append(route))
    page.select_option("select[aria-label='x column']", value="arg:dropout")
    # page.evaluate is a round trip, so the route handlers get to run while we poll
    wait_for(lambda: page.evaluate("1") and len(held) == 1, timeout=10,
             what="the first points request")
    page.select_option("select[aria-label='colour']", value="arg:optimizer")
    wait_for(lambda: page.evaluate("1") and len(held) == 2, timeout=10,
             what="the second points request")
    assert "arg%3Aoptimizer" in held[1].request.url
    assert "arg%3Aoptimizer" not in held[0].request.url
    held[1].continue_()
    expect(page.locator(".cmp-key .chip").first).to_be_visible()
    held[0].continue_()
    page.evaluate("new Promise((r) => setTimeout(r, 300))")  # let the late answer land
    # still the newest settings' drawing: the optimizer categories stay in the key
    assert page.locator(".cmp-key .chip").all_text_contents() == ["optimizer=adam", "optimizer=sgd"]
    assert not page.errors, page.errors
