"""Keyboard use of the UI in a real browser (Debian's chromium via Playwright): `/`
focuses the filter (not while typing), Escape leaves it, the arrow keys move a row cursor
(aria-selected, one tab stop), Space selects the row, Enter opens its run page, `?` shows
the keys; a keyboard-focused control has a visible focus ring in both themes."""

from __future__ import annotations

import re

import pytest

from flowillower.run import Run
from tests.conftest import require_browser, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect
NAMES = ["k0", "k1", "k2", "k3", "k4"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys") / ".flowillower"
    ids = {}
    for i, name in enumerate(NAMES):
        run = Run("keys", name, dir=root, snapshot=False)
        run.record_args({"lr": 0.01 * (i + 1)})
        run.log_metrics({"loss": 1.0 / (i + 1)}, 0)
        run.finish()
        ids[name] = run.id
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def open_table(pg, base: str) -> None:
    pg.goto(f"{base}#/?sort=name&desc=0")
    expect(pg.locator("table.runs tr[data-id]")).to_have_count(len(NAMES))


def focused(pg) -> dict:
    return pg.evaluate("""() => { const e = document.activeElement;
      return { tag: e.tagName, cls: e.className, id: e.dataset ? e.dataset.id || "" : "",
               selected: e.getAttribute("aria-selected"), tab: e.tabIndex }; }""")


def cursor_rows(pg) -> list[str]:
    return pg.eval_on_selector_all("table.runs tr[aria-selected=true] td.name-col a",
                                   "els => els.map(e => e.textContent)")


def test_slash_focuses_the_filter_unless_typing(page, server):
    open_table(page, server)
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("/")
    assert focused(page)["cls"] == "search"
    # Typing in the box, "/" is a character like any other.
    page.keyboard.type("k1/")
    assert page.input_value("input.search") == "k1/"
    # Escape leaves the filter without emptying it; the table's cursor row has the focus.
    page.keyboard.press("Escape")
    assert focused(page)["tag"] == "TR"
    assert page.input_value("input.search") == "k1/"


def test_arrows_space_and_enter(page, server, store):
    ids = store[1]
    open_table(page, server)
    page.keyboard.press("/")
    page.keyboard.press("ArrowDown")  # from the filter into the table: the first row
    wait_for(lambda: cursor_rows(page) == ["k0"], timeout=10, what="the cursor on the first row")
    assert focused(page) == {"tag": "TR", "cls": "cursor", "id": ids["k0"], "selected": "true", "tab": 0}
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    page.keyboard.press("ArrowUp")
    wait_for(lambda: cursor_rows(page) == ["k2"], timeout=10, what="the cursor on k2")
    # Roving tabindex: one row is the tab stop.
    assert page.eval_on_selector_all("table.runs tr[data-id]", "els => els.map(e => e.tabIndex)") \
        == [-1, -1, 0, -1, -1]
    page.keyboard.press(" ")
    expect(page.locator("#sel-info")).to_contain_text("1 selected")
    row = page.locator(f"table.runs tr[data-id='{ids['k2']}']")
    expect(row.locator("td:first-child input")).to_be_checked()
    assert focused(page)["id"] == ids["k2"]  # the redraw kept the focus on the row
    page.keyboard.press("End")
    wait_for(lambda: cursor_rows(page) == ["k4"], timeout=10, what="the cursor on the last row")
    page.keyboard.press("ArrowUp")
    page.keyboard.press("Enter")
    wait_for(lambda: page.evaluate("location.hash").startswith(f"#/run/{ids['k3']}"), timeout=10,
             what="the run page of k3")
    page.wait_for_selector(".card h2")


def test_question_mark_shows_the_keys(page, server):
    open_table(page, server)
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("?")
    pop = page.locator(".keys-popover")
    expect(pop).to_be_visible()
    expect(pop).to_contain_text("Enter")
    expect(pop).to_contain_text("Space")
    page.keyboard.press("Escape")
    expect(pop).to_have_count(0)
    assert "Enter" in page.get_attribute("button.keys-help", "title")


def contrast(a: str, b: str) -> float:
    """WCAG contrast ratio of two computed rgb() colours."""
    def lum(css: str) -> float:
        out = []
        for v in (int(x) / 255 for x in re.findall(r"\d+", css)[:3]):
            out.append(v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4)
        return 0.2126 * out[0] + 0.7152 * out[1] + 0.0722 * out[2]
    hi, lo = sorted((lum(a), lum(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_keyboard_focus_ring_on_a_button(page, server, scheme):
    page.emulate_media(color_scheme=scheme)
    open_table(page, server)
    page.click("input.search")
    for _ in range(12):  # Tab on from the filter to the first button
        page.keyboard.press("Tab")
        if focused(page)["tag"] == "BUTTON":
            break
    assert focused(page)["tag"] == "BUTTON"
    ring = page.evaluate("""() => { const e = document.activeElement, s = getComputedStyle(e);
      return { visible: e.matches(":focus-visible"), style: s.outlineStyle, width: parseFloat(s.outlineWidth),
               colour: s.outlineColor, shadow: s.boxShadow,
               bg: getComputedStyle(document.body).backgroundColor }; }""")
    assert ring["visible"]
    assert ring["style"] != "none" and ring["width"] >= 2, ring
    assert contrast(ring["colour"], ring["bg"]) >= 3, ring


RING = """() => { const e = document.activeElement;
  if (!e || e === document.body) return null;
  const s = getComputedStyle(e), td = e.tagName === "TR" ? getComputedStyle(e.cells[0]) : null;
  const ring = (s.outlineStyle !== "none" && parseFloat(s.outlineWidth) >= 2) ||
    (td && td.boxShadow !== "none") || s.boxShadow !== "none";
  return { what: `${e.tagName}.${e.className}:${(e.textContent || e.value || "").slice(0, 20)}`, ring }; }"""


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory):
    from flowillower.server.demo import make_demo_store

    root = tmp_path_factory.mktemp("keysdemo") / ".flowillower"
    ids = make_demo_store(root, runs=2, steps=20, epochs=2, media=False, model=False)
    with ui_server(root, sync_interval=0.5) as url:
        yield url, ids


def test_every_keyboard_stop_shows_a_focus_ring(page, demo_server):
    base, ids = demo_server
    routes = ["#/", f"#/charts?runs={ids[0]},{ids[1]}", "#/compare", f"#/run/{ids[0]}"]
    for route in routes:
        page.goto(base + route)
        page.wait_for_selector("main#view > :not(p.muted)")
        page.wait_for_load_state("networkidle")
        seen = []
        for _ in range(20):
            page.keyboard.press("Tab")
            got = page.evaluate(RING)
            if got is None:
                continue
            seen.append(got)
        assert len(seen) >= 5, (route, seen)
        missing = [s["what"] for s in seen if not s["ring"]]
        assert not missing, f"{route}: no visible focus ring on {missing}"
