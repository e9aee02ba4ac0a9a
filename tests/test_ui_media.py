"""Images in a real browser (Debian's chromium via Playwright): the lightbox (full-size
image, zoom, arrow keys through the key's steps, Escape) and the side-by-side view of
several runs at one step (nearest step when a run lacks it), live and in a static export."""

from __future__ import annotations

import numpy as np
import pytest

from flowillower.run import Run
from tests.conftest import require_browser, static_server, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect


def _picture(seed: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Run a: 96x96 images at steps 0, 10, 20; run b: 48x48 at steps 0, 12, 20."""
    root = tmp_path_factory.mktemp("media") / ".flowillower"
    ids = []
    for name, size, steps in (("run-a", 96, (0, 10, 20)), ("run-b", 48, (0, 12, 20))):
        run = Run("media", name, dir=root, snapshot=False)
        for i, step in enumerate(steps):
            run.log_metrics({"loss": 1.0 / (step + 1)}, step)
            run.log_image("samples", _picture(i, size), step, caption=f"{name} {step}")
        run.finish()
        ids.append(run.id)
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def loaded(pg, selector: str) -> bool:
    loc = pg.locator(selector)
    return bool(loc.count()) and loc.first.evaluate("i => i.complete && i.naturalWidth > 0")


def test_lightbox_opens_full_size_and_closes_on_escape(page, server, store):
    page.goto(f"{server}#/run/{store[1][0]}")
    wait_for(lambda: loaded(page, ".media img"), timeout=15, what="the run page's image")
    assert page.locator(".media img").get_attribute("data-step") == "20"  # the last step
    page.locator(".media img").focus()
    page.keyboard.press("Enter")
    box = page.locator("dialog.lightbox[open]")
    expect(box).to_have_count(1)
    wait_for(lambda: loaded(page, "dialog.lightbox .lb-img"), timeout=15, what="the big image")
    # The file itself at full resolution (96 px), fitted to the window: larger than 96 px.
    assert page.locator(".lb-img").evaluate("i => i.naturalWidth") == 96
    fitted = float(box.get_attribute("data-scale"))
    shown = page.locator(".lb-img").evaluate("i => i.getBoundingClientRect().width")
    assert fitted > 2 and abs(shown - 96 * fitted) < 2
    page.keyboard.press("+")
    wait_for(lambda: float(box.get_attribute("data-scale")) > fitted * 1.2, what="zoom in")
    # The wheel zooms out around the cursor; dragging pans the image.
    stage = page.locator(".lb-stage").bounding_box()
    cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    before = float(box.get_attribute("data-scale"))
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, 120)
    wait_for(lambda: float(box.get_attribute("data-scale")) < before, what="wheel zoom out")
    left = page.locator(".lb-img").evaluate("i => i.getBoundingClientRect().left")
    page.mouse.down()
    page.mouse.move(cx + 60, cy, steps=4)
    page.mouse.up()
    moved = page.locator(".lb-img").evaluate("i => i.getBoundingClientRect().left")
    assert abs(moved - left - 60) < 2
    page.keyboard.press("ArrowLeft")  # the previous step of the key
    expect(box).to_have_attribute("data-step", "10")
    assert "run-a 10" in page.text_content(".lb-label")
    page.keyboard.press("Escape")
    expect(page.locator("dialog.lightbox")).to_have_count(0)
    # The slider followed the lightbox to step 10.
    assert page.locator(".media img").get_attribute("data-step") == "10"
    page.locator(".media img").click()  # a click opens it too
    expect(page.locator("dialog.lightbox[open]")).to_have_attribute("data-step", "10")
    page.locator("dialog.lightbox button[aria-label='close (Escape)']").click()
    expect(page.locator("dialog.lightbox")).to_have_count(0)


def test_side_by_side_shows_both_runs_at_the_same_step(page, server, store):
    a, b = store[1]
    page.goto(f"{server}#/run/{a}/images?runs={a},{b}&key=samples&step=20")
    expect(page.locator(".side-grid figure.tile img")).to_have_count(2)
    tiles = page.locator(".side-grid figure.tile")
    assert [tiles.nth(i).get_attribute("data-run") for i in range(2)] == [a, b]
    for i, run in enumerate((a, b)):
        src = tiles.nth(i).locator("img").get_attribute("src")
        assert src.startswith(f"api/runs/{run}/files/media/") and tiles.nth(i).get_attribute("data-step") == "20"
        assert tiles.nth(i).locator("figcaption").text_content() .startswith("step 20")
    # Step 10: run b has 12 only, shown and labelled as the nearest.
    page.fill(".step-box", "10")
    page.press(".step-box", "Enter")
    expect(tiles.nth(1)).to_have_attribute("data-step", "12")
    assert tiles.nth(0).get_attribute("data-step") == "10"
    assert "step 12 (nearest to 10)" in tiles.nth(1).locator("figcaption").text_content()
    assert "step=10" in page.evaluate("location.hash")  # the view is a link
    wait_for(lambda: loaded(page, ".side-grid figure.tile:nth-child(2) img"), what="b's image")
    page.locator(".side-grid figure.tile").nth(1).locator("img").click()
    expect(page.locator("dialog.lightbox[open]")).to_have_attribute("data-step", "12")
    page.keyboard.press("Escape")
    # One run across chosen steps, from a link.
    page.goto(f"{server}#/run/{a}/images?runs={a}&key=samples&steps=0,20")
    page.reload()
    expect(page.locator(".side-grid figure.tile")).to_have_count(2)
    assert [page.locator(".side-grid figure.tile").nth(i).get_attribute("data-step")
            for i in range(2)] == ["0", "20"]


def test_side_by_side_link_from_run_page_uses_the_selection(page, server, store):
    a, b = store[1]
    page.goto(f"{server}#/run/{a}?sel={a},{b}")
    wait_for(lambda: loaded(page, ".media img"), timeout=15, what="the run page's image")
    page.locator(".media-card a.side-link").click()
    expect(page.locator(".side-grid figure.tile img")).to_have_count(2)
    assert page.locator(".side-grid").get_attribute("data-step") == "20"
    # A link with the runs only: the first image key at the last step, written back.
    page.goto(f"{server}#/run/{a}/images?runs={a},{b}")
    expect(page.locator(".side-grid figure.tile img")).to_have_count(2)
    assert page.locator(".side-grid").get_attribute("data-step") == "20"
    assert "key=samples" in page.evaluate("location.hash")


def test_side_by_side_in_static_export_at_390px(browser, store, tmp_path):
    from flowillower.server.export import export_site

    a, b = store[1]
    export_site(store[0], tmp_path / "site")
    ctx = browser.new_context(viewport={"width": 390, "height": 800})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with static_server(tmp_path / "site") as base:
            pg.goto(f"{base}#/run/{a}/images?runs={a},{b}&key=samples&step=0")
            expect(pg.locator(".side-grid figure.tile img")).to_have_count(2)
            src = pg.locator(".side-grid figure.tile img").nth(1).get_attribute("src")
            assert src.startswith(f"data/runs/{b}/media/")
            wait_for(lambda: loaded(pg, ".side-grid figure.tile:nth-child(2) img"), what="image")
            assert pg.evaluate("document.documentElement.scrollWidth") <= 390
            pg.locator(".side-grid figure.tile img").first.click()
            expect(pg.locator("dialog.lightbox[open]")).to_have_attribute("data-step", "0")
            assert pg.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        ctx.close()
    assert not errors, errors
