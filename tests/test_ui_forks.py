"""The fork tree (issue 16 item 1: "The UI draws forks as a tree"): a run page shows
the run it was forked from (with the step), every fork below it as a clickable tree,
and a resumed run's segments; the API answers the same, and a hostile run.json cannot
break it. Real runs through `fw.init(fork_from=...)` / `resume="must"`, a real browser."""

from __future__ import annotations

import json
import warnings

import pytest

import flowillower as fw
from tests.conftest import ok, require_browser, ui_server

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

playwright_api = require_browser()
expect = playwright_api.expect
LOCAL = "http://127.0.0.1:8686"
HOSTILE = "<img src=x onerror=alert(1)>"  # a teammate's run name: shown as text


def _run(steps, **init) -> str:
    run = fw.init(snapshot=False, **init)
    for step in steps:
        fw.log("loss", 10.0 - step, step=step)
    fw.finish()
    return run.id


def make_family() -> dict[str, str]:
    """gen0 -> gen1 (at 5) -> gen2 (at 7); gen0 -> sibling (at 2); a resumed run."""
    ids = {"gen0": _run(range(10), id="gen0", name="gen0")}
    ids["gen1"] = _run(range(6, 9), fork_from=(ids["gen0"], 5), name="gen1")
    ids["sibling"] = _run(range(3, 5), fork_from=(ids["gen0"], 2), name=HOSTILE)
    ids["gen2"] = _run(range(8, 12), fork_from=(ids["gen1"], 7), name="gen2")
    fw.init(id="resumed", name="resumed", snapshot=False)
    for step in range(8):
        fw.log("loss", float(step), step=step)
    fw.finish("killed")  # pre-empted at step 7 ...
    _run(range(4, 10), id="resumed", resume="must")  # ... restarted from its checkpoint at 4
    ids["resumed"] = "resumed"
    return ids


def _tree_ids(node) -> list:
    return [node["id"], [_tree_ids(c) for c in node["children"]]]


def test_family_api_parent_forks_tree_and_segments(store_dir):
    ids = make_family()
    with TestClient(fw_app(store_dir), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{ids['gen2']}/family"))
        assert [(a["id"], a["step"]) for a in fam["ancestors"]] == [(ids["gen0"], 5),
                                                                      (ids["gen1"], 7)]
        assert fam["parent"]["id"] == ids["gen1"] and fam["parent"]["step"] == 7
        # The whole family from the oldest ancestor, forks ordered by their fork step.
        assert _tree_ids(fam["tree"]) == [ids["gen0"], [[ids["sibling"], []],
                                                        [ids["gen1"], [[ids["gen2"], []]]]]]
        assert fam["tree"]["children"][1]["step"] == 5
        root = ok(c.get("/api/runs/gen0/family"))
        assert root["parent"] is None and root["forks"] == 2 and root["tree"]["current"]
        # A fork's first segment is its copy of the parent's values.
        segs = fam["segments"]
        assert [s["inherited"] for s in segs] == [True, False]
        assert (segs[0]["first_step"], segs[0]["last_step"]) == (0, 7)
        assert segs[1]["first_step"] == 8 and segs[1]["rewind"] is None  # went on, no rewind
        # The resumed run: two segments, the second rewound to step 4.
        res = ok(c.get("/api/runs/resumed/family"))
        assert res["parent"] is None and res["tree"]["children"] == []
        assert [(s["index"], s["first_step"], s["last_step"], s["rewind"], s["status"])
                for s in res["segments"]] == [(1, 0, 7, None, "killed"),
                                              (2, 4, 9, 4, "success")]
        assert res["segments"][1]["started"] >= res["segments"][0]["started"]
        assert res["segments"][1]["host"]
        plain = _run(range(3), name="plain")
        none = ok(c.get(f"/api/runs/{plain}/family"))
        assert none["parent"] is None and none["segments"] == [] and none["forks"] == 0


def fw_app(store_dir):
    from flowillower.server.app import create_app

    return create_app(store_dir, sync_interval=0.05)


@pytest.mark.parametrize("fork_of", [
    "gen0", {"run": "../../etc", "step": 3}, {"run": "gen0", "step": "3"},
    {"run": "gen0", "step": True}, {"run": ["gen0"], "step": 3}])
def test_a_hostile_fork_of_is_no_fork(store_dir, fork_of):
    ids = make_family_small()
    meta_path = store_dir / "runs" / ids["child"] / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["fork_of"] = fork_of
    meta_path.write_text(json.dumps(meta))
    with TestClient(fw_app(store_dir), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{ids['child']}/family"))
        assert fam["parent"] is None
        assert ok(c.get("/api/runs/gen0/family"))["tree"]["children"] == []


def test_a_fork_cycle_ends(store_dir):
    ids = make_family_small()
    gen0 = store_dir / "runs" / "gen0" / "run.json"
    meta = json.loads(gen0.read_text())
    meta["fork_of"] = {"run": ids["child"], "step": 1}  # gen0 "forked" from its own child
    gen0.write_text(json.dumps(meta))
    with TestClient(fw_app(store_dir), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{ids['child']}/family"))
        assert [a["id"] for a in fam["ancestors"]] == ["gen0"]
        assert fam["nodes"] == 2


def make_family_small() -> dict[str, str]:
    gen0 = _run(range(5), id="gen0", name="gen0")
    return {"gen0": gen0, "child": _run(range(3, 6), fork_from=(gen0, 2), name="child")}


def test_run_page_draws_the_fork_tree_and_segments(store_dir, page):
    ids = make_family()
    with ui_server(store_dir, sync_interval=0.1) as url:
        page.goto(f"{url}#/run/{ids['gen1']}")
        card = page.locator(".family-card")
        expect(card).to_be_visible()
        expect(card.locator(".family-parent")).to_contain_text("forked from gen0 at step 5")
        tree = card.locator("ul[role=tree]")
        expect(tree.locator("li[role=treeitem]")).to_have_count(4)
        # Indented as a tree: gen2 sits inside gen1's item, which sits inside gen0's.
        gen2 = tree.locator(f"li[data-id='{ids['gen2']}']")
        assert gen2.evaluate("el => el.parentElement.closest('li').dataset.id") == ids["gen1"]
        expect(gen2).to_contain_text("forked at step 7")
        expect(tree.locator(f"li[data-id='{ids['sibling']}']")).to_contain_text(HOSTILE)
        assert card.locator("img").count() == 0 and not page.dialogs
        expect(tree.locator("li.current > .family-node")).to_contain_text("gen1")
        x_gen1 = tree.locator("li.current > .family-node").bounding_box()["x"]
        assert gen2.locator(".family-node").first.bounding_box()["x"] > x_gen1
        # One link charts the whole family together.
        href = card.locator("a.family-chart").get_attribute("href")
        assert href.startswith("#/charts?runs=")
        assert sorted(href.split("=", 1)[1].split(",")) == sorted(
            ids[k] for k in ("gen0", "gen1", "gen2", "sibling"))
        # Its first segment is the parent's copy.
        expect(card.locator(".family-segments tr[data-segment='1']")).to_contain_text(
            "from the parent")
        # Click through to the grandchild: its page names both ancestors.
        gen2.locator("a").first.click()
        expect(page.locator("h1.run-name")).to_have_text("gen2")
        fam = page.locator(".family-card .family-parent")
        expect(fam).to_contain_text("forked from gen1 at step 7")
        expect(fam).to_contain_text("lineage: gen0 @5 → gen1 @7")
        # The resumed run shows its segments with the rewind step.
        page.goto(f"{url}#/run/resumed")
        rows = page.locator(".family-card .family-segments tr[data-segment]")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_contain_text("killed")
        expect(rows.nth(1)).to_contain_text("step 4")
        expect(rows.nth(1)).to_contain_text("4–9")
        expect(page.locator(".family-card ul[role=tree]")).to_have_count(0)  # no forks
        # On a 390 px phone the segments scroll inside the card, never the page.
        page.set_viewport_size({"width": 390, "height": 800})
        page.goto(f"{url}#/run/{ids['gen1']}")
        expect(page.locator(".family-card .family-segments")).to_be_visible()
        expect(page.locator(".diff-pick option").nth(1)).to_be_attached()  # the runs list
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.set_viewport_size({"width": 1400, "height": 900})
        # A run with no family gets no card.
        plain = _run(range(2), name="plain")
        page.goto(f"{url}#/run/{plain}")
        expect(page.locator("h1.run-name")).to_have_text("plain")
        expect(page.locator(".card h2", has_text="Environment")).to_be_visible()
        expect(page.locator(".family-card")).to_have_count(0)


def test_earlier_segments_hosts_when_recorded(store_dir):
    """run.json's `segments_host` (one host per earlier segment, as `segments_git`) names
    where each stretch ran; a hostile value is left out."""
    make_family()
    path = store_dir / "runs" / "resumed" / "run.json"
    meta = json.loads(path.read_text())
    with TestClient(fw_app(store_dir), base_url=LOCAL) as c:
        assert [s["host"] for s in ok(c.get("/api/runs/resumed/family"))["segments"]][0] is None
        for hosts, first in ((["node-07"], "node-07"), ([{"x": 1}], None), ("node-07", None)):
            path.write_text(json.dumps({**meta, "segments_host": hosts}))
            segs = ok(c.get("/api/runs/resumed/family"))["segments"]
            assert segs[0]["host"] == first and segs[1]["host"] == meta["host"]
