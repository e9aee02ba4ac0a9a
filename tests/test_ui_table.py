"""The runs table's polish in a real browser (Debian's chromium via Playwright): a best
marker per metric column (min for a loss, max for an accuracy, flippable and kept in the
link for a name that says neither), the frozen selection + name column, the one-line
"same in every run" summary with values, and the select-all box's three states."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs

import pytest

from flowillower.run import Run
from tests.conftest import require_browser, static_server, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect

NAMES = ["r0", "r1", "r2", "r3"]
LOSS = [0.9, 0.3, 0.5, 0.7]       # best (min): r1
ACC = [0.6, 0.8, 0.95, 0.7]       # best (max): r2
WIDGETS = [1.0, 2.0, 3.0, 5.0]    # unknown name: max (r3) until flipped to min (r0)
CONSTANT_ARGS = {f"const_{i}": f"value-{i}" for i in range(10)}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("table") / ".flowillower"
    for i, name in enumerate(NAMES):
        run = Run("tbl", name, dir=root, snapshot=False)
        run.record_args({"lr": 0.1 * (i + 1), "layers": 3, **CONSTANT_ARGS,
                         **{f"wide_arg_{k}": f"{name}-{k}-some-longer-text" for k in range(6)}})
        run.log_metrics({"val/loss": LOSS[i], "val/acc": ACC[i], "widgets": WIDGETS[i],
                         "act/fc1/mean": 0.25}, 0)
        run.finish()
    return root


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store, sync_interval=0.2) as url:
        yield url


def open_table(pg, base: str, extra: str = "") -> None:
    pg.goto(f"{base}#/?sort=name&desc=0{extra}")
    expect(pg.locator("table.runs tr[data-id]")).to_have_count(4)


def best_cells(pg) -> dict[str, tuple[str, str]]:
    """Column key -> (run name, the mark's aria-label) of each best-marked cell."""
    pairs = pg.evaluate("""() => {
      const keys = [...document.querySelectorAll("table.runs thead th")].map((th) => th.title.split(" ")[0]);
      const out = [];
      for (const tr of document.querySelectorAll("table.runs tr[data-id]")) {
        [...tr.children].forEach((td, i) => {
          if (td.classList.contains("best")) out.push([keys[i], tr.querySelector("td.name-col a").textContent,
            td.querySelector(".best-mark").getAttribute("aria-label")]);
        });
      }
      return out;
    }""")
    found: dict[str, tuple[str, str]] = {}
    for key, name, label in pairs:
        assert key not in found, f"two best cells in {key}"
        found[key] = (name, label)
    return found


def test_best_marker_on_the_right_cells(page, server):
    open_table(page, server)
    wait_for(lambda: "last:val/acc" in best_cells(page), timeout=10, what="best markers")
    best = best_cells(page)
    assert best["last:val/loss"] == ("r1", "best (min)")
    assert best["best:val/loss"] == ("r1", "best (min)")
    assert best["last:val/acc"] == ("r2", "best (max)")
    assert best["last:widgets"] == ("r3", "best (max)")  # a guess: the header offers the flip
    # A visible mark (not only a colour) sits in the cell.
    mark = page.locator("table.runs tr[data-id]", has_text="r1").locator("td.best .best-mark").first
    expect(mark).to_be_visible()
    assert mark.text_content().strip()
    # Only metric columns are marked: never an arg, however numeric.
    assert not any(k.startswith("arg:") for k in best)


def test_flipped_goal_of_an_unknown_metric_travels_in_the_link(page, browser, server):
    open_table(page, server)
    wait_for(lambda: "last:widgets" in best_cells(page), timeout=10, what="best markers")
    toggle = page.locator("table.runs th[title^='last:widgets '] button.goal")
    expect(toggle).to_have_text("↑max")
    toggle.click()
    wait_for(lambda: best_cells(page).get("last:widgets") == ("r0", "best (min)"), timeout=10,
             what="the widgets marker on the minimum")
    url = page.evaluate("location.href")
    view = parse_qs(url.split("#", 1)[1].split("?", 1)[1])
    assert json.loads(view["best"][0]) == {"last:widgets": "min"}
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = context.new_page()
        other.goto(url)
        expect(other.locator("table.runs tr[data-id]")).to_have_count(4)
        wait_for(lambda: best_cells(other).get("last:widgets") == ("r0", "best (min)"), timeout=10,
                 what="the flipped goal in a fresh browser")
        assert best_cells(other)["last:val/loss"] == ("r1", "best (min)")
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_name_column_stays_put_when_scrolling_sideways(page, server, scheme):
    page.set_viewport_size({"width": 390, "height": 800})
    page.emulate_media(color_scheme=scheme)
    open_table(page, server)
    row = page.locator("table.runs tr[data-id]", has_text="r2")
    # The selection box and the name: the first two cells.
    name, box, other = row.locator("td:nth-child(2)"), row.locator("td:nth-child(1)"), row.locator("td").nth(4)
    before = (name.bounding_box()["x"], box.bounding_box()["x"], other.bounding_box()["x"])
    page.eval_on_selector(".table-wrap", "(w) => { w.scrollLeft = 400; }")
    wait_for(lambda: page.eval_on_selector(".table-wrap", "(w) => w.scrollLeft") > 300, timeout=10,
             what="the table scrolled sideways")
    after = (name.bounding_box()["x"], box.bounding_box()["x"], other.bounding_box()["x"])
    assert after[0] == pytest.approx(before[0], abs=0.5) and after[1] == pytest.approx(before[1], abs=0.5)
    assert after[2] < before[2] - 300  # the other cells did move
    # Opaque in both themes (scrolled cells pass under it), the page no wider than 390 px.
    bg = name.evaluate("(e) => getComputedStyle(e).backgroundColor")
    assert bg not in ("rgba(0, 0, 0, 0)", "transparent")
    level = sum(int(v) for v in re.findall(r"\d+", bg)[:3]) / 3
    assert (level < 80) if scheme == "dark" else (level > 200), bg
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_same_in_every_run_line(page, browser, server):
    open_table(page, server)
    line = page.locator(".same-line")
    # layers + 10 const_* args + the watch statistic act/fc1/mean = 12
    expect(line).to_contain_text("12 values are the same in every run — show")
    one_line = page.evaluate("parseFloat(getComputedStyle(document.querySelector('.same-line')).lineHeight)"
                             " || 16")
    assert line.bounding_box()["height"] <= one_line * 1.6
    pairs = page.locator(".same-pairs")
    expect(pairs).to_be_hidden()
    line.get_by_role("button", name="show").click()
    expect(pairs).to_be_visible()
    expect(pairs.locator(".pair", has_text="layers")).to_have_text("layers=3")
    expect(pairs.locator(".pair", has_text="const_7")).to_have_text("const_7=value-7")
    # A watch statistic shows its value (fetched on opening), never an empty chip.
    expect(pairs.locator(".pair", has_text="act/fc1/mean")).to_have_text("act/fc1/mean=0.25")
    assert all(p.split("=", 1)[1] for p in pairs.locator(".pair").all_text_contents())
    # "key = value" on screen: the "=" is spaced out.
    gap = page.eval_on_selector(".same-pairs .pair .eq", "(e) => parseFloat(getComputedStyle(e).paddingLeft)")
    assert gap > 0
    url = page.evaluate("location.href")
    assert "same=1" in url
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        other = context.new_page()
        other.goto(url)
        expect(other.locator(".same-pairs .pair", has_text="act/fc1/mean")).to_be_visible()
    finally:
        context.close()


def test_select_all_reflects_the_rows(page, server):
    open_table(page, server)
    head = page.locator("table.runs thead input[type=checkbox]")

    def state() -> tuple[bool, bool]:
        return head.evaluate("(e) => [e.checked, e.indeterminate]")

    def box(name: str):
        return page.locator("table.runs tr[data-id]", has_text=name).locator("td:first-child input")

    assert state() == [False, False]
    box("r1").check()
    wait_for(lambda: state() == [False, True], timeout=10, what="indeterminate with one row")
    head.click()  # from indeterminate: select all
    wait_for(lambda: state() == [True, False], timeout=10, what="checked with every row")
    for name in NAMES:
        expect(box(name)).to_be_checked()
    box("r3").uncheck()
    wait_for(lambda: state() == [False, True], timeout=10, what="indeterminate again")
    box("r3").check()
    wait_for(lambda: state() == [True, False], timeout=10, what="checked again")
    head.click()
    wait_for(lambda: state() == [False, False], timeout=10, what="unchecked with no row")
    expect(page.locator("#sel-info")).to_have_text("")


def test_best_values_beyond_the_loaded_rows(page, server):
    """More runs than the loaded pages: the best comes from the server's one-pass answer
    (/api/best: every column not yet known in ONE request, each once per goal), not from
    the rows in hand; names decide the goal; the scope is the table's filter."""
    open_table(page, server)
    out = page.evaluate("""async () => {
      const m = await import("./static/js/table-best.js");
      const cols = [{ key: "last:val/loss", group: "metrics", metric: "val/loss", stat: "last" },
                    { key: "last:widgets", group: "metrics", metric: "widgets", stat: "last" },
                    { key: "count:widgets", group: "metrics", metric: "widgets", stat: "count" }];
      const loaded = [{ cells: { "last:val/loss": 0.5, "last:widgets": 7 } }];
      const asked = [];
      const realFetch = window.fetch;
      window.fetch = (url, opts) => { if (String(url).includes("api/best")) asked.push(String(url)); return realFetch(url, opts); };
      let redraws = 0;
      const until = async (n) => { while (redraws < n) await new Promise((r) => setTimeout(r, 10)); };
      const cache = new Map();
      const all = { q: "", hidden: false };
      const first = m.bestValues(cols, {}, loaded, false, cache, all, () => { redraws += 1; });
      await until(1);
      const second = m.bestValues(cols, {}, loaded, false, cache, all, () => { redraws += 1; });
      const flipped0 = m.bestValues(cols, { "last:widgets": "min" }, loaded, false, cache, all, () => { redraws += 1; });
      await until(2);
      const flipped = m.bestValues(cols, { "last:widgets": "min" }, loaded, false, cache, all, () => {});
      // The table's filter is the scope of the question.
      const filtered = { q: "lr > 0.25", hidden: false };
      const linked = new Map();
      m.bestValues(cols, {}, loaded, false, linked, filtered, () => { redraws += 1; });
      await until(3);
      const scoped = m.bestValues(cols, {}, loaded, false, linked, filtered, () => {});
      const local = m.bestValues(cols, { "last:widgets": "min" }, loaded, true, new Map(), all, () => {});
      window.fetch = realFetch;
      const names = ["train/loss", "val_accuracy", "fid", "heatmap_size", "mAP", "step_time",
                     "mean_reward", "widgets", "top1"].map((n) => [n, m.goalFromName(n)]);
      return { first: first.size, second: Object.fromEntries(second), flipped0: flipped0.size,
               flipped: Object.fromEntries(flipped), scoped: Object.fromEntries(scoped),
               asked: asked.map((u) => decodeURIComponent(u.split("?")[1]).split("&").sort()),
               local: Object.fromEntries(local), names: Object.fromEntries(names) };
    }""")
    assert out["first"] == 0  # nothing marked until the server answered
    # One request for both columns (no count column), one more for the flipped goal only.
    assert out["asked"][:2] == [
        sorted(["col=last:val/loss", "col=last:widgets", "goal=min", "goal=max", "hidden=false"]),
        sorted(["col=last:widgets", "goal=min", "hidden=false"])]
    assert "q=lr+>+0.25" in out["asked"][2] and len(out["asked"]) == 3
    assert out["second"] == {"last:val/loss": {"value": 0.3, "goal": "min"},
                             "last:widgets": {"value": 5, "goal": "max"}}
    assert out["flipped0"] == 1  # the loss is known; the flipped widgets column is asked
    assert out["flipped"] == {"last:val/loss": {"value": 0.3, "goal": "min"},
                              "last:widgets": {"value": 1, "goal": "min"}}
    assert out["scoped"] == {"last:val/loss": {"value": 0.5, "goal": "min"},
                             "last:widgets": {"value": 5, "goal": "max"}}
    assert out["local"] == {"last:val/loss": {"value": 0.5, "goal": "min"},
                            "last:widgets": {"value": 7, "goal": "min"}}
    assert out["names"] == {"train/loss": "min", "val_accuracy": "max", "fid": "min",
                            "heatmap_size": None, "mAP": "max", "step_time": "min",
                            "mean_reward": "max", "widgets": None, "top1": "max"}


def test_exported_site_marks_and_folds_the_same(page, store, tmp_path):
    """A static export answers the same questions from its data files (local.js)."""
    from flowillower.server.export import export_site

    site = tmp_path / "site"
    export_site(store, site)
    with static_server(site) as base:
        open_table(page, base)
        wait_for(lambda: "last:widgets" in best_cells(page), timeout=10, what="best markers")
        best = best_cells(page)
        assert best["last:val/loss"] == ("r1", "best (min)")
        assert best["last:val/acc"] == ("r2", "best (max)")
        page.locator(".same-line").get_by_role("button", name="show").click()
        expect(page.locator(".same-pairs .pair", has_text="act/fc1/mean")).to_have_text("act/fc1/mean=0.25")
