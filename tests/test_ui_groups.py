"""Grouped charts in a real browser (Debian's chromium via Playwright): runs grouped by an
arg or tag draw one mean line per group with a ± std or min-max band whose numbers match
numpy's over the logged values; the view travels in its link, live and exported (over
HTTP and from file://); the tooltip lists every run's y at the cursor, by mouse or
keyboard; chart colours come from the theme's CSS variables, not an inverting filter
(issue 19, item 2)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from flowillower.run import Run
from tests.conftest import require_browser, static_server, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect
STEPS = 15
LRS = [0.001, 0.001, 0.01, 0.01]
# dom.js's palette (light theme) and app.css's dark twins, entry by entry.
LIGHT = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#CC6677",
         "#332288", "#117733", "#882255", "#44AA99", "#999933", "#AA4499"]
DARK = ["#3b9be0", "#f07a2a", "#2bc294", "#e08fbd", "#6cc3f2", "#f2b02a", "#e07f8f",
        "#8a7be0", "#4cb86a", "#d0609a", "#5cc4b2", "#c4c452", "#cf6fc0"]


def _loss(r: int, step: int) -> float:
    # Runs of one group differ, so the std is not zero; halves keep the values exact.
    return 10.0 * (r + 1) + step * (1 + r % 2) + 0.5 * r


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("groups") / ".flowillower"
    ids = []
    for r, lr in enumerate(LRS):
        tags = [f"seed={r % 2}"] + (["baseline"] if r == 0 else [])
        run = Run("demo", f"run{r}", config={"lr": lr, "width": 64, "optimizer": "adam" if r < 2 else "sgd"}, tags=tags, dir=root,
                  snapshot=False)
        for step in range(STEPS):
            run.log_metrics({"train/loss": _loss(r, step)}, step)
        run.log_metrics({"final_acc": 0.5 + 0.125 * r}, STEPS)  # logged once
        run.finish()
        ids.append(run.id)
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0]) as url:
        yield url


def _chart(page, base: str, ids: list[str], query: str = ""):
    page.goto(f"{base}#/charts?runs={','.join(ids)}&m=train/loss{query}")
    chart = page.locator('.chart[data-key="train/loss"]')
    page.wait_for_selector(f'.chart[data-key="train/loss"][data-drawn="{len(ids)}"]')
    return chart


def _drawn(chart) -> dict:
    return chart.evaluate("e => e.fwData()")


def _expected(members: list[int]) -> dict[str, np.ndarray]:
    ys = np.array([[_loss(r, s) for s in range(STEPS)] for r in members])
    return {"mean": ys.mean(0), "std": ys.std(0), "min": ys.min(0), "max": ys.max(0)}


def _series(data: dict, group: str, role: str) -> np.ndarray:
    (s,) = [s for s in data["series"] if s["group"] == group and s["role"] == role]
    return np.array(s["values"], dtype=float)


def _grouped(chart, n: int) -> dict:
    expect(chart).to_have_attribute("data-groups", str(n))
    return _drawn(chart)


def _check_groups(data: dict, band: str) -> None:
    assert data["x"] == list(range(STEPS))
    assert sorted(g["label"] for g in data["groups"]) == ["lr=0.001", "lr=0.01"]
    assert [s["role"] for s in data["series"]].count("mean") == 2
    assert len(data["bands"]) == 2
    for label, members in (("lr=0.001", [0, 1]), ("lr=0.01", [2, 3])):
        want = _expected(members)
        np.testing.assert_allclose(_series(data, label, "mean"), want["mean"], rtol=1e-12)
        lo, hi = ((want["mean"] - want["std"], want["mean"] + want["std"]) if band == "std"
                  else (want["min"], want["max"]))
        np.testing.assert_allclose(_series(data, label, "lo"), lo, rtol=1e-12)
        np.testing.assert_allclose(_series(data, label, "hi"), hi, rtol=1e-12)
        (g,) = [g for g in data["groups"] if g["label"] == label]
        np.testing.assert_allclose(g["std"], want["std"], rtol=1e-12)
        assert g["n"] == [2] * STEPS


def test_group_by_arg_draws_mean_lines_with_std_or_minmax_bands(page, server, store):
    ids = store[1]
    chart = _chart(page, server, ids)
    assert chart.get_attribute("data-groups") in (None, "")
    group_by = page.locator('select[aria-label="group by"]')
    expect(group_by).to_be_enabled()
    # Only keys that vary among these runs are offered: lr and the seed tag, not width.
    offered = group_by.locator("option").evaluate_all("os => os.map(o => o.value)")
    assert offered[0] == "" and "arg:lr" in offered and "tag:seed" in offered
    assert "arg:width" not in offered
    group_by.select_option("arg:lr")
    _check_groups(_grouped(chart, 2), "std")
    legend = chart.locator("table.legend tr[data-group]")
    expect(legend).to_have_count(2)
    expect(legend.first).to_contain_text("lr=0.001 (2 runs)")
    assert legend.first.get_attribute("title").startswith("run0, run1\n")
    page.select_option('select[aria-label="band"]', "minmax")
    wait_for(lambda: chart.evaluate("e => e.fwData().bands.length") == 2
             and np.allclose(_series(_drawn(chart), "lr=0.01", "hi"), _expected([2, 3])["max"]),
             timeout=10, what="the min-max band")
    _check_groups(_drawn(chart), "minmax")
    # Grouping by a tag: seed=0 holds runs 0 and 2.
    group_by.select_option("tag:seed")
    data = _grouped(chart, 2)
    np.testing.assert_allclose(_series(data, "seed=0", "mean"), _expected([0, 2])["mean"])
    # "none" goes back to one line per run.
    group_by.select_option("")
    wait_for(lambda: not chart.get_attribute("data-groups"), timeout=10, what="ungrouped")
    assert [s["role"] for s in _drawn(chart)["series"]] == ["run"] * 4


def test_group_colour_is_stable_and_runs_drawn_under_the_band(page, server, store):
    ids = store[1]
    chart = _chart(page, server, ids, "&group=arg:lr")
    first = {g["label"]: g["color"] for g in _grouped(chart, 2)["groups"]}
    # Another selection order: each group keeps its colour (these two labels hash alike:
    # the second takes the next palette entry not taken nor close in hue).
    chart = _chart(page, server, [ids[3], ids[0], ids[2], ids[1]], "&group=arg:lr")
    assert {g["label"]: g["color"] for g in _grouped(chart, 2)["groups"]} == first
    assert len(set(first.values())) == 2
    page.locator('input[aria-label="show runs"]').check()
    wait_for(lambda: [s["role"] for s in _drawn(chart)["series"]].count("member") == 4,
             timeout=10, what="the member runs")
    data = _drawn(chart)
    roles = [s["role"] for s in data["series"]]
    assert roles.index("member") < roles.index("lo")  # drawn first: under the bands
    for s in data["series"]:
        if s["role"] == "member":
            r = ids.index(s["run"])
            assert s["values"] == [_loss(r, step) for step in range(STEPS)]


def test_metric_logged_once_grouped_is_a_card_of_group_means(page, server, store):
    ids = store[1]
    page.goto(f"{server}#/charts?runs={','.join(ids)}&m=final_acc&group=arg:lr")
    card = page.locator('.chart[data-key="final_acc"][data-shape="card"]')
    expect(card).to_have_attribute("data-groups", "2")
    for label, members in (("lr=0.001", [0, 1]), ("lr=0.01", [2, 3])):
        vals = np.array([0.5 + 0.125 * r for r in members])
        row = card.locator(f'tr[data-group="{label}"]')
        expect(row).to_contain_text(f"{label} (2 runs)")
        mean, spread = row.locator("td.value").text_content().split(" ± ")
        assert float(mean) == pytest.approx(vals.mean()) and float(spread) == pytest.approx(vals.std())
    page.select_option('select[aria-label="band"]', "minmax")
    expect(card.locator('tr[data-group="lr=0.01"] td.value')).to_have_text("0.8125 [0.75, 0.875]")


def _ema(values: list[float], alpha: float) -> list[float]:
    """TensorBoard's debiased EMA, as chart.js smooths."""
    out, acc = [], 0.0
    for n, v in enumerate(values, 1):
        acc = acc * alpha + (1 - alpha) * v
        out.append(acc / (1 - alpha ** n))
    return out


def test_smoothing_applies_to_each_run_before_the_mean(page, server, store):
    chart = _chart(page, server, store[1], "&group=arg:lr&smooth=0.5")
    data = _grouped(chart, 2)
    for label, members in (("lr=0.001", [0, 1]), ("lr=0.01", [2, 3])):
        smoothed = np.array([_ema([_loss(r, s) for s in range(STEPS)], 0.5) for r in members])
        np.testing.assert_allclose(_series(data, label, "mean"), smoothed.mean(0), rtol=1e-12)
        np.testing.assert_allclose(_series(data, label, "hi"), smoothed.mean(0) + smoothed.std(0),
                                   rtol=1e-12)


def test_group_view_link_reproduces_it(page, browser, server, store):
    ids = store[1]
    chart = _chart(page, server, ids)
    page.select_option('select[aria-label="group by"]', "arg:lr")
    _grouped(chart, 2)
    page.select_option('select[aria-label="band"]', "minmax")
    page.locator('input[aria-label="show runs"]').check()
    link = page.evaluate("location.href")
    assert re.search(r"[?&]group=arg%3Alr\b", link) and "band=minmax" in link and "members=true" in link
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = context.new_page()
        other.goto(link)
        again = other.locator('.chart[data-key="train/loss"]')
        data = _grouped(again, 2)
        _check_groups(data, "minmax")
        assert [s["role"] for s in data["series"]].count("member") == 4
        assert other.input_value('select[aria-label="group by"]') == "arg:lr"
        assert other.input_value('select[aria-label="band"]') == "minmax"
        expect(other.locator('input[aria-label="show runs"]')).to_be_checked()
    finally:
        context.close()


def test_tooltip_lists_every_run_sorted_by_mouse_and_keyboard(page, server, store):
    ids = store[1]
    chart = _chart(page, server, ids)
    tip = chart.locator(".chart-tip")
    # Keyboard: focus shows the last point; arrows step back through the points.
    chart.locator(".plot").focus()
    expect(tip).to_be_visible()
    expect(tip.locator(".tip-x")).to_have_text(f"step {STEPS - 1}")
    for _ in range(3):
        page.keyboard.press("ArrowLeft")
    expect(tip.locator(".tip-x")).to_have_text(f"step {STEPS - 4}")
    step = STEPS - 4
    lines = tip.locator(".tip-run")
    expect(lines).to_have_count(4)
    shown = [(line.get_attribute("data-run"), float(line.locator("b").text_content()))
             for line in lines.all()]
    want = sorted(((rid, _loss(r, step)) for r, rid in enumerate(ids)), key=lambda t: -t[1])
    assert shown == want  # every run, largest first
    swatch = lines.first.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
    assert swatch not in ("", "rgba(0, 0, 0, 0)")
    page.keyboard.press("Tab")  # focus leaves: the read-out goes
    expect(tip).to_be_hidden()
    # A click focuses the plot too, but the read-out stays where the mouse is.
    box = chart.locator(".u-over").bounding_box()
    page.mouse.click(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.5)
    expect(tip).to_be_visible()
    clicked = int(re.fullmatch(r"step (\d+)", tip.locator(".tip-x").text_content()).group(1))
    assert 0 < clicked < STEPS // 2
    # Grouped, the mouse: each group's mean with its ± std at the cursor.
    chart = _chart(page, server, ids, "&group=arg:lr")
    _grouped(chart, 2)
    box = chart.locator(".u-over").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
    expect(tip).to_be_visible()
    at = int(re.fullmatch(r"step (\d+)", tip.locator(".tip-x").text_content()).group(1))
    groups = tip.locator(".tip-group")
    expect(groups).to_have_count(2)
    got = {g.get_attribute("data-group"): (float(g.locator("b").text_content()),
                                           g.locator(".tip-spread").text_content())
           for g in groups.all()}
    for label, members in (("lr=0.001", [0, 1]), ("lr=0.01", [2, 3])):
        want_g = _expected(members)
        mean, spread = got[label]
        assert mean == pytest.approx(want_g["mean"][at], rel=1e-3)
        assert float(spread.replace("±", "")) == pytest.approx(want_g["std"][at], rel=1e-3)


def test_runs_with_different_x_grids_align_by_value(page, server):
    page.goto(server)
    page.wait_for_selector("table.runs tr[data-id]")
    agg = page.evaluate("""async () => {
      const m = await import("./static/js/groups.js");
      return m.aggregate([
        {x: [0, 2, 4, 6], y: [0, 20, 40, 60]},             // every 2 steps
        {x: [0, 1, 2, 3, 4, 5, 6], y: [1, 2, "NaN", 4, 5, 6, 7]},  // every step, one NaN
        {x: [0, 1, 2, 5, 6], y: [3, 3, 3, 3, 3]},          // a hole from 2 to 5
      ]); }""")
    assert agg["x"] == [0, 1, 2, 3, 4, 5, 6]
    # x=1: the 2-step run interpolates inside its own spacing (10); the holey run has 3.
    assert agg["n"][1] == 3 and agg["mean"][1] == pytest.approx((10 + 2 + 3) / 3)
    # x=2: the NaN is left out (not a zero), so two runs count.
    assert agg["n"][2] == 2 and agg["mean"][2] == pytest.approx((20 + 3) / 2)
    # x=3, 4: no interpolation across the holey run's gap (3 steps, its spacing is 1).
    assert agg["n"][3] == 2 and agg["mean"][3] == pytest.approx((30 + 4) / 2)
    assert agg["n"][4] == 2
    assert agg["std"][4] == pytest.approx(np.std([40, 5]))
    assert agg["min"][6] == 3 and agg["max"][6] == 60


def test_group_colours_stay_apart_in_hue(page, server):
    page.goto(server)
    page.wait_for_selector("table.runs tr[data-id]")
    hues = page.evaluate("""async () => {
      const p = await import("./static/js/palette.js");
      const hue = (c) => {
        const [r, g, b] = c.match(/\\d+/g).slice(0, 3).map((v) => Number(v) / 255);
        const max = Math.max(r, g, b), d = max - Math.min(r, g, b);
        const h = max === r ? ((g - b) / d) % 6 : max === g ? (b - r) / d + 2 : (r - g) / d + 4;
        return (h * 60 + 360) % 360;
      };
      const out = {};
      for (const labels of [["lr=0.01", "lr=0.1"], ["lr=0.001", "lr=0.01"], ["g=0", "g=1", "g=2", "g=3"]]) {
        const colours = p.labelColors(labels);
        out[labels.join(" ")] = labels.map((l) => hue(colours.get(l)));
      }
      // Alone, a label has its hash's colour: the one a run with that id would have.
      out.same = p.labelColors(["some-run"]).get("some-run") === p.themeColor("some-run");
      return out; }""")
    assert hues.pop("same") is True
    for labels, hs in hues.items():
        for i, a in enumerate(hs):
            for b in hs[i + 1:]:
                assert min(abs(a - b), 360 - abs(a - b)) >= 25, (labels, hs)


def _luminance(css: str) -> float:
    if css.startswith("#"):
        r, g, b = (int(css[i:i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (float(v) for v in re.findall(r"\d+(?:\.\d+)?", css)[:3])
    return (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgb({r}, {g}, {b})"


def test_dark_mode_colours_come_from_the_theme(page, server, store):
    # Record the colour uPlot writes each text in (the y-axis title is the metric's name).
    page.add_init_script("""(() => { const orig = CanvasRenderingContext2D.prototype.fillText;
      window.__ink = [];
      CanvasRenderingContext2D.prototype.fillText = function (text, ...rest) {
        window.__ink.push([String(text), String(this.fillStyle)]); return orig.call(this, text, ...rest); }; })()""")
    ids = store[1]
    page.emulate_media(color_scheme="dark")
    chart = _chart(page, server, ids)
    canvas = chart.locator(".uplot canvas").first
    assert canvas.evaluate("e => getComputedStyle(e).filter") == "none"

    def title_ink() -> str | None:
        inks = [c for t, c in page.evaluate("window.__ink") if t == "train/loss"]
        return inks[-1] if inks else None

    assert _luminance(wait_for(title_ink, timeout=10, what="the axis title")) > 0.6
    dark = {s["run"]: s["color"] for s in _drawn(chart)["series"]}
    assert set(dark.values()) <= {_rgb(c) for c in DARK}
    # The toggle (system -> light) redraws in the light theme's colours, same palette entries.
    page.evaluate("window.__ink = []")
    page.locator("#theme-toggle").click()
    assert _luminance(wait_for(title_ink, timeout=10, what="the redrawn axis title")) < 0.3
    light = {s["run"]: s["color"] for s in _drawn(chart)["series"]}
    for run, colour in light.items():
        i = [_rgb(c) for c in LIGHT].index(colour)
        assert dark[run] == _rgb(DARK[i])
    legend = chart.locator(f'tr[data-run="{ids[0]}"] .swatch')
    assert legend.evaluate("e => getComputedStyle(e).backgroundColor") == light[ids[0]]
    # The compare page's canvas: no filter either, in the dark theme.
    page.locator("#theme-toggle").click()  # light -> dark
    page.goto(f"{server}#/compare")
    page.wait_for_selector(".pc canvas")
    assert page.eval_on_selector(".pc canvas", "e => getComputedStyle(e).filter") == "none"


def test_group_view_in_an_exported_site_over_http_and_from_a_file(page, store, tmp_path):
    from flowillower.server.export import export_site

    site = tmp_path / "site"
    export_site(store[0], site)
    query = f"runs={','.join(store[1])}&m=train/loss&group=arg:lr&band=minmax"
    with static_server(site) as base:
        page.goto(f"{base}#/charts?{query}")
        _check_groups(_grouped(page.locator('.chart[data-key="train/loss"]'), 2), "minmax")
    page.goto(f"{(site / 'index.html').as_uri()}#/charts?{query}")
    _check_groups(_grouped(page.locator('.chart[data-key="train/loss"]'), 2), "minmax")


def test_grouped_charts_and_their_tooltip_fit_a_390px_screen(browser, server, store):
    context = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True)
    try:
        pg = context.new_page()
        chart = _chart(pg, server, store[1], "&group=arg:lr&band=minmax&members=true")
        _grouped(chart, 2)
        box = chart.locator(".u-over").bounding_box()
        for frac in (0.2, 0.5, 0.8):  # the tooltip on either side of the cursor
            pg.mouse.move(box["x"] + box["width"] * frac, box["y"] + box["height"] * 0.5)
            expect(chart.locator(".chart-tip")).to_be_visible()
            assert pg.evaluate("document.documentElement.scrollWidth") <= 390, frac
        # A finger sliding over the plot moves the read-out (no mouse events come with it).
        pg.mouse.move(0, 0)
        expect(chart.locator(".chart-tip")).to_be_hidden()
        chart.locator(".u-over").evaluate("""(over) => {
          const r = over.getBoundingClientRect();
          const t = new Touch({ identifier: 1, target: over, clientX: r.left + r.width - 2, clientY: r.top + 20 });
          over.dispatchEvent(new TouchEvent("touchmove", { touches: [t], bubbles: true }));
        }""")
        expect(chart.locator(".chart-tip .tip-x")).to_have_text(f"step {STEPS - 1}")
    finally:
        context.close()


def test_compare_colours_categories_as_the_charts_page_colours_groups(page, server, store):
    chart = _chart(page, server, store[1], "&group=arg:optimizer")
    groups = {g["label"]: g["color"] for g in _grouped(chart, 2)["groups"]}
    assert set(groups) == {"optimizer=adam", "optimizer=sgd"}
    page.goto(f"{server}#/compare?mode=scatter&c=arg:optimizer")
    page.wait_for_selector(".pc canvas")
    key = page.locator(".cmp-key .chip")
    expect(key).to_have_count(2)
    shown = {c.text_content(): c.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor")
             for c in key.all()}
    assert shown == groups
