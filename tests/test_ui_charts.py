"""Charts a researcher can read, in a real browser (Debian's chromium via Playwright):
a run keeps its colour in any selection, a metric logged once is a number card, axes
carry titles, and hovering shows the x value and every run's y."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from flowillower.run import Run
from tests.conftest import require_browser, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect
STEPS = 12


def _loss(run: int, step: int) -> int:
    # Integers, so the tooltip's text is exact and checkable per run and step.
    return 100 * (run + 1) + step


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("charts") / ".flowillower"
    ids = []
    for r, name in enumerate(["ant", "bee", "cat"]):
        run = Run("demo", name, dir=root, snapshot=False)
        for step in range(STEPS):
            run.log_metrics({"train/loss": _loss(r, step), "near_flat": 0.1 + 1e-5 * step}, step)
        run.log_metrics({"final_acc": 0.25 * (r + 1)}, STEPS)  # logged once
        run.finish()
        ids.append(run.id)
    # Hindsight replays: every grad_norm point of "ant", one extra train/loss point of "bee".
    _write_replay(root / "runs" / ids[0], "grad_norm", list(range(STEPS)), [1.0] * STEPS)
    _write_replay(root / "runs" / ids[1], "train/loss", [STEPS + 5], [150.0])
    return root, ids


def _write_replay(run_dir: Path, key: str, steps: list[int], values: list[float]) -> None:
    """A replay's output file as the replay writer leaves it (as in test_server_api)."""
    import numpy as np

    from flowillower.store.format import encode_frame

    n = len(steps)
    frame = encode_frame(
        keys={0: (key, "metric")},
        call_cols=[np.zeros(n, np.uint32), np.array(steps, np.int64),
                   np.full(n, time.time()), np.ones(n, np.uint32)],
        float_cols=[np.zeros(n, np.uint32), np.array(values, np.float64)])
    (run_dir / "replays").mkdir(exist_ok=True)
    (run_dir / "replays" / "r1.fwl").write_bytes(frame)


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0]) as url:
        yield url


def _open(page, server, ids, key="train/loss"):
    page.goto(f"{server}#/charts?runs={','.join(ids)}")
    chart = page.locator(f'.chart[data-key="{key}"]')
    chart.scroll_into_view_if_needed()
    page.wait_for_selector(f'.chart[data-key="{key}"][data-drawn="{len(ids)}"]')
    return chart


def _swatch(chart, run_id: str) -> str:
    row = chart.locator("table.legend tr", has=chart.page.locator(f'a[href="#/run/{run_id}"]'))
    return row.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")


def test_run_keeps_its_colour_in_any_selection(page, server, store):
    a, b, c = store[1]
    first = _swatch(_open(page, server, [a, b]), a)
    second = _swatch(_open(page, server, [c, a]), a)
    third = _swatch(_open(page, server, [b, c, a]), a)
    assert first == second == third
    assert first not in ("", "rgba(0, 0, 0, 0)")
    # The chips above the charts use the same colour as the legend.
    chip = page.locator(".chip", has=page.locator(f'a[href="#/run/{a}"]')).locator(".swatch")
    assert chip.evaluate("e => getComputedStyle(e).backgroundColor") == first


def test_metric_logged_once_is_a_number_card(page, server, store):
    ids = store[1]
    chart = _open(page, server, ids, key="final_acc")
    expect(chart).to_have_attribute("data-shape", "card")
    assert chart.locator("canvas").count() == 0  # no empty plot
    values = {}
    for rid in ids:
        row = chart.locator(f'tr[data-run="{rid}"]')
        values[rid] = row.locator("td.value").text_content()
        assert row.locator(".bar").count() == 1
    assert [values[rid] for rid in ids] == ["0.25", "0.5", "0.75"]
    # Bars scale with the value: the largest is the widest.
    widths = [chart.locator(f'tr[data-run="{rid}"] .bar').evaluate("e => e.clientWidth") for rid in ids]
    assert widths[0] < widths[1] < widths[2]


def test_axes_have_titles(page, server, store):
    # uPlot draws axis titles on the canvas: record every text drawn there.
    page.add_init_script("""(() => { const orig = CanvasRenderingContext2D.prototype.fillText;
      window.__drawn = [];
      CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        window.__drawn.push(String(text)); return orig.call(this, text, ...rest); }; })()""")
    _open(page, server, store[1][:2])
    drawn = wait_for(lambda: (t := page.evaluate("window.__drawn")) and "train/loss" in t and t,
                     timeout=10, what="the axis titles to be drawn")
    assert "step" in drawn
    # Another x-axis names itself (here wall time).
    page.select_option('select[aria-label="x axis"]', "time")
    wait_for(lambda: "wall time" in page.evaluate("window.__drawn"), timeout=10,
             what="the wall-time axis title")


def test_hover_shows_x_and_every_runs_value(page, server, store):
    ids = store[1]
    chart = _open(page, server, ids)
    over = chart.locator(".u-over")
    box = over.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    tip = chart.locator(".chart-tip")
    expect(tip).to_be_visible()
    step = int(re.fullmatch(r"step (\d+)", tip.locator(".tip-x").text_content()).group(1))
    assert 0 < step < STEPS - 1
    for r, rid in enumerate(ids):
        line = tip.locator(f'.tip-run[data-run="{rid}"]')
        assert line.locator("b").text_content() == str(_loss(r, step))
        assert ["ant", "bee", "cat"][r] in line.text_content()
    page.mouse.move(box["x"] + box["width"] + 200, box["y"] - 50)
    expect(tip).to_be_hidden()


def test_replayed_points_leave_the_line_visible(page, server, store):
    # Record the dash patterns and dot sizes uPlot strokes with.
    page.add_init_script("""(() => { const P = CanvasRenderingContext2D.prototype;
      const dash = P.setLineDash; window.__dashes = [];
      P.setLineDash = function (d) { window.__dashes.push(Array.from(d)); return dash.call(this, d); };
      window.__arcs = [];
      for (const Q of [P, Path2D.prototype]) {  // uPlot builds its point markers as a Path2D
        const arc = Q.arc;
        Q.arc = function (x, y, r, ...rest) { window.__arcs.push(r); return arc.call(this, x, y, r, ...rest); };
      }
    })()""")
    ant, bee, _ = store[1]
    # Every point replayed: the line itself is dashed, no markers, and the legend says so.
    chart = _open(page, server, [ant], key="grad_norm")
    expect(chart.locator(".replayed")).to_have_text("↺ all replayed (dashed)")
    assert [6, 4] in page.evaluate("window.__dashes")
    assert page.evaluate("window.__arcs") == []
    # One replayed point among many: a small dot (radius at most 3 px), the line stays solid.
    page.evaluate("window.__arcs = []; window.__dashes = []")
    chart = _open(page, server, [bee])
    expect(chart.locator(".replayed")).to_have_text("↺ 1 replayed (dots)")
    arcs = wait_for(lambda: page.evaluate("window.__arcs"), timeout=10, what="replay dots")
    assert max(arcs) <= 3
    assert [6, 4] not in page.evaluate("window.__dashes")


def test_nearly_flat_metric_has_distinct_tick_labels(page, server, store):
    page.add_init_script("""(() => { const orig = CanvasRenderingContext2D.prototype.fillText;
      window.__drawn = [];
      CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        window.__drawn.push(String(text)); return orig.call(this, text, ...rest); }; })()""")
    page.goto(f"{server}#/charts?runs={store[1][0]}&m=near_flat")
    page.wait_for_selector('.chart[data-key="near_flat"][data-drawn="1"]')
    drawn = wait_for(lambda: (t := page.evaluate("window.__drawn")) and "near_flat" in t and t,
                     timeout=10, what="the chart's text")
    y_ticks = {t for t in drawn if re.fullmatch(r"0\.1\d*", t)}  # x ticks are whole steps
    assert len(y_ticks) >= 3, drawn
