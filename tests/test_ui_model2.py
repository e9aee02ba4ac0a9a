"""The model page with two runs and its legibility, in a real browser (Debian's chromium
via Playwright): a second run picked from the runs that have a graph, node statistics of
both runs at a step with the difference (nearest step labelled), the structure check
(the graph once when it matches, the differing nodes when not), 12 px labels at the
default zoom, thousands separators, a 390 px screen and the static export."""

from __future__ import annotations

import copy

import pytest

from flowillower.run import Run
from flowillower.server.demo import demo_graph
from tests.conftest import require_browser, static_server, ui_server, wait_for

playwright_api = require_browser()
expect = playwright_api.expect
BIG = 1_234_567  # fc1's parameter count in these graphs


def _graph(drop_act: bool = False) -> dict:
    g = copy.deepcopy(demo_graph())
    for n in g["nodes"]:
        if n["id"] == "m:fc1:0":
            n["params"] = BIG
    g["tree"]["params"] = BIG + 1000
    if drop_act:  # another model: a Dropout where the activation was
        for n in g["nodes"]:
            if n["id"] == "m:act:0":
                n["type"] = "Dropout"
    return g


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """a: act/fc1/mean = 1 + step/100 at 0, 10, 20; b: 2 + step/100 at 0, 10, 25 (same
    graph); c: the graph with a Dropout instead of the ReLU; d: no graph."""
    root = tmp_path_factory.mktemp("model2") / ".flowillower"
    ids = {}
    for name, base, steps, graph in (("a", 1.0, (0, 10, 20), _graph()),
                                     ("b", 2.0, (0, 10, 25), _graph()),
                                     ("c", 3.0, (0, 10), _graph(drop_act=True)),
                                     ("d", 0.0, (0,), None)):
        run = Run("model2", f"run-{name}", dir=root, snapshot=False)
        for step in steps:
            run.log_metrics({"act/fc1/mean": base + step / 100, "act/fc1/std": base * 10,
                             "grad/fc1.weight/norm": 0.5,
                             "act/fc1/hist": {"min": -1.0, "max": 1.0 + step / 10,
                                              "counts": [0, 5, 10, 5, 0]}}, step, role="watch")
        if graph:
            run.write_json("model/graph.json", graph)
        run.finish()
        ids[name] = run.id
    return root, ids


@pytest.fixture(scope="module")
def server(store):
    with ui_server(store[0], sync_interval=0.2) as url:
        yield url


def row_cells(pg, key: str) -> list[str]:
    row = pg.locator(f"table.cmp-stats tr[data-key='{key}'] td")
    expect(row.nth(3)).not_to_have_text("")
    return [c.strip() for c in row.all_text_contents()]


def test_two_runs_show_both_values_and_the_difference(page, server, store):
    ids = store[1]
    page.goto(f"{server}#/model/{ids['a']}?vs={ids['b']}&step=10&node=m:fc1:0")
    expect(page.locator(".cmp-note.same")).to_contain_text("drawn once")
    assert page.locator("svg g.node").count() == 7  # one graph, not two
    assert row_cells(page, "act/fc1/mean") == ["act fc1/mean", "1.1", "2.1", "1"]
    assert row_cells(page, "act/fc1/std") == ["act fc1/std", "10", "20", "10"]
    # Step 20: b has 25 only, shown as its nearest step and said so.
    page.fill(".toolbar .step-box", "20")
    page.press(".toolbar .step-box", "Enter")
    expect(page.locator("table.cmp-stats tr[data-key='act/fc1/mean'] td").nth(2)).to_have_text("2.25 @25")
    assert row_cells(page, "act/fc1/mean")[1] == "1.2"
    assert "step=20" in page.evaluate("location.hash")
    # The picker lists the runs with a graph (c), not the one without (d).
    options = page.locator("select.vs-pick option").evaluate_all("os => os.map(o => o.value)")
    assert set(options) == {"", ids["b"], ids["c"]}


def test_different_structures_are_named_and_marked(page, server, store):
    ids = store[1]
    page.goto(f"{server}#/model/{ids['a']}")
    page.wait_for_selector("svg g.node")
    expect(page.locator("select.vs-pick option")).to_have_count(3)
    page.select_option("select.vs-pick", ids["c"])
    note = page.locator(".cmp-note.differ")
    expect(note).to_contain_text("1 node(s) only in run-a, 1 only in run-c")
    assert "Dropout" in note.text_content() and "ReLU" in note.text_content()
    expect(page.locator("svg g.node.differs")).to_have_count(1)
    assert "act" in page.locator("svg g.node.differs").text_content()
    assert f"vs={ids['c']}" in page.evaluate("location.hash")


def test_labels_legible_and_counts_with_separators(page, server, store):
    page.goto(f"{server}#/model/{store[1]['a']}")
    page.wait_for_selector("svg g.node text")
    # On-screen size: the computed font size times the SVG's scale to the screen.
    sizes = page.eval_on_selector_all("svg.graph g.node text", """els => els.map(t =>
        parseFloat(getComputedStyle(t).fontSize) * t.ownerSVGElement.getScreenCTM().a)""")
    assert sizes and min(sizes) >= 12
    fc1 = page.locator("svg g.node", has_text="fc1")
    assert "1,234,567 params" in fc1.text_content()
    assert "1,235,567 parameters" in page.text_content(".toolbar")
    fc1.click()
    expect(page.locator(".detail table.kv tr", has_text="parameters").first).to_contain_text("1,234,567")
    # Zoomed far out the second line goes, then every label; back at 1:1 they return.
    for _ in range(3):
        page.click("button[aria-label='zoom out']")
    assert float(page.get_attribute(".model .canvas", "data-zoom")) < 0.8
    assert not page.locator("svg g.node text.sub").first.is_visible()
    page.click("button[aria-label='labels at 12 px']")
    expect(page.locator("svg g.node text.sub").first).to_be_visible()


def test_histogram_heat_map_follows_the_theme(page, server, store):
    page.emulate_media(color_scheme="dark")
    page.goto(f"{server}#/model/{store[1]['a']}?node=m:fc1:0")
    heat = page.locator(".detail canvas.heat")
    heat.wait_for()
    # Empty cells are transparent (the dark card shows through), dense ones opaque blue.
    alpha = heat.evaluate("""c => { const d = c.getContext('2d').getImageData(0, 0, c.width,
        c.height).data; let lo = 255, hi = 0;
        for (let i = 3; i < d.length; i += 4) { lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]); }
        return [lo, hi]; }""")
    assert alpha == [0, 255]


def test_narrow_screen_and_static_export(browser, store, tmp_path):
    from flowillower.server.export import export_site

    ids = store[1]
    export_site(store[0], tmp_path / "site")
    ctx = browser.new_context(viewport={"width": 390, "height": 800})
    pg = ctx.new_page()
    errors = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    try:
        with static_server(tmp_path / "site") as base:
            pg.goto(f"{base}#/model/{ids['a']}?vs={ids['b']}&step=10&node=m:fc1:0")
            expect(pg.locator(".cmp-note.same")).to_be_visible()
            assert row_cells(pg, "act/fc1/mean")[1:] == ["1.1", "2.1", "1"]
            assert pg.evaluate("document.documentElement.scrollWidth") <= 390
            canvas = pg.locator(".model .canvas")
            # Larger than its pane at 12 px labels: the canvas scrolls instead of shrinking.
            size = canvas.evaluate("c => [c.scrollWidth, c.clientWidth, c.scrollHeight, c.clientHeight]")
            assert 0 < size[1] <= 390 and size[2] > size[3], size
            canvas.scroll_into_view_if_needed()
            box = canvas.bounding_box()
            x, y = box["x"] + 20, box["y"] + box["height"] - 40
            pg.mouse.move(x, y)
            pg.mouse.down()
            pg.mouse.move(x, y - 50, steps=4)  # drag up: the graph pans down
            pg.mouse.up()
            wait_for(lambda: canvas.evaluate("c => c.scrollTop") >= 49, what="the graph to pan")
    finally:
        ctx.close()
    assert not errors, errors


def test_structure_check_counts_repeated_ops(page, server):
    """A second `add` in the same module is a difference (nodes are matched by what and
    where they are, the k-th of each kind), and node ids alone do not matter."""
    page.goto(server)
    page.wait_for_selector("header.top")
    got = page.evaluate("""async () => {
        const { structureDiff } = await import("./static/js/modelcmp.js");
        const op = (id) => ({ id, kind: "op", type: "add", parent: "blk", call: null });
        const a = { nodes: [op("o1")], edges: [] };
        const b = { nodes: [op("x7"), op("x8")], edges: [] };
        const same = structureDiff(a, { nodes: [op("z9")], edges: [] });
        const d = structureDiff(a, b);
        return [same.same, d.same, d.onlyA.length, d.onlyB.map((n) => n.id)];
    }""")
    assert got == [True, False, 0, ["x8"]]
