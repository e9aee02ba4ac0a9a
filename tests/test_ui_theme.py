"""Dark mode and narrow screens in a real browser (Debian's chromium via Playwright).

Every page (runs table, charts, compare, run, model) gets a dark background when the system
asks for one; the header's toggle (system / light / dark) switches and survives a reload;
at a 390 px wide viewport no page is wider than the screen and the model graph keeps a
usable width."""

from __future__ import annotations

import re

import pytest

from flowillower.server.demo import make_demo_store
from tests.conftest import require_browser, ui_server, wait_for

require_browser()  # skips the module without chromium/playwright; CI fails instead


@pytest.fixture(scope="module")
def ids(tmp_path_factory):
    root = tmp_path_factory.mktemp("theme") / ".flowillower"
    return root, make_demo_store(root, runs=3, steps=60, epochs=2)


@pytest.fixture(scope="module")
def server(ids):
    with ui_server(ids[0], sync_interval=0.5) as url:
        yield url


def pages(ids) -> list[tuple[str, str]]:
    """(hash route, selector that shows the page has drawn) for every page of the UI."""
    run_ids = ids[1]
    return [
        ("#/", "table.runs tr[data-id] td"),
        (f"#/charts?runs={run_ids[0]},{run_ids[1]}&m=train/loss", ".chart .uplot canvas"),
        ("#/compare", ".pc canvas"),
        (f"#/run/{run_ids[1]}", ".card h2"),
        (f"#/model/{run_ids[0]}", "svg g.node"),
    ]


def luminance(css: str) -> float:
    """Relative lightness 0..1 of a computed `rgb(...)` / `rgba(...)` colour."""
    r, g, b = (int(v) for v in re.findall(r"\d+(?:\.\d+)?", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def colour(pg, selector: str, prop: str) -> str:
    return pg.eval_on_selector(selector, f"(e) => getComputedStyle(e).{prop}")


def open_page(pg, base: str, route: str, ready: str) -> None:
    pg.goto(base + route)
    pg.wait_for_selector(ready)


def test_dark_system_scheme_darkens_every_page(page, server, ids):
    page.emulate_media(color_scheme="dark")
    for route, ready in pages(ids):
        open_page(page, server, route, ready)
        bg = luminance(colour(page, "body", "backgroundColor"))
        fg = luminance(colour(page, "body", "color"))
        assert bg < 0.15 and fg > 0.7, (route, bg, fg)
        # The header and the page's own panels are dark too, not white boxes on black.
        assert luminance(colour(page, "header.top", "backgroundColor")) < 0.2, route
        for panel in (".table-wrap", ".chart", ".card", ".model .canvas"):
            if page.locator(panel).count():
                assert luminance(colour(page, panel, "backgroundColor")) < 0.2, (route, panel)
        if "model" in route:
            # The graph's SVG labels are drawn light on the dark canvas.
            assert luminance(colour(page, "svg g.node text", "fill")) > 0.6
    # And the same pages stay light when the system is light.
    page.emulate_media(color_scheme="light")
    open_page(page, server, *pages(ids)[0])
    assert luminance(colour(page, "body", "backgroundColor")) > 0.9


def test_toggle_switches_theme_and_persists_across_reload(page, server, ids):
    page.emulate_media(color_scheme="light")
    open_page(page, server, *pages(ids)[0])
    toggle = page.locator("#theme-toggle")
    assert "system" in toggle.text_content()
    assert luminance(colour(page, "body", "backgroundColor")) > 0.9
    toggle.click()  # system -> light
    assert "light" in toggle.text_content()
    toggle.click()  # light -> dark
    assert "dark" in toggle.text_content()
    wait_for(lambda: luminance(colour(page, "body", "backgroundColor")) < 0.15,
             what="the page to turn dark")
    assert page.evaluate("localStorage.getItem('flowillower.theme')") == "dark"

    page.reload()
    page.wait_for_selector("table.runs tr[data-id] td")
    assert "dark" in page.locator("#theme-toggle").text_content()
    assert luminance(colour(page, "body", "backgroundColor")) < 0.15
    # The choice holds on other pages too, over a light system preference.
    open_page(page, server, *pages(ids)[4])
    assert luminance(colour(page, ".model .canvas", "backgroundColor")) < 0.2

    # "light" beats a dark system; "system" follows it again and forgets the choice.
    page.emulate_media(color_scheme="dark")
    page.locator("#theme-toggle").click()  # dark -> system
    assert "system" in page.locator("#theme-toggle").text_content()
    assert page.evaluate("localStorage.getItem('flowillower.theme')") is None
    assert luminance(colour(page, "body", "backgroundColor")) < 0.15
    page.locator("#theme-toggle").click()  # system -> light
    assert luminance(colour(page, "body", "backgroundColor")) > 0.9
    page.reload()
    page.wait_for_selector("svg g.node")
    assert luminance(colour(page, "body", "backgroundColor")) > 0.9


def test_every_page_fits_a_390px_screen(page, server, ids):
    page.set_viewport_size({"width": 390, "height": 844})
    for route, ready in pages(ids):
        open_page(page, server, route, ready)
        page.wait_for_timeout(0)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, (route, width)
        if "charts" in route:
            # Each chart's canvas lies inside its card.
            spill = page.evaluate("""() => [...document.querySelectorAll('.chart')].map((c) => {
                const r = c.getBoundingClientRect();
                return Math.max(0, ...[...c.querySelectorAll('canvas')].map(
                    (v) => v.getBoundingClientRect().right - r.right));
            })""")
            assert spill and max(spill) <= 0.5, spill
        if "model" in route:
            box = page.locator(".model .canvas").bounding_box()
            assert box["width"] > 200 and box["height"] > 200, box
            assert page.locator(".model svg").bounding_box()["width"] > 200
    # The header's toggle is still on screen at this width.
    box = page.locator("#theme-toggle").bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box
