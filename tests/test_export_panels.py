"""An exported site shows the run page's lineage card, system-metrics panel and family
card (forks, segments) as the live page does: over HTTP and opened from a file, in a real
browser. A run left out of the export stays in the graph, drawn but not linked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.server.export import export_site
from flowillower.store.catalog import Store
from tests.conftest import require_browser, static_server

playwright_api = require_browser()
expect = playwright_api.expect
SYSTEM = {"system/cpu/machine_percent": 40.0, "system/memory/process_rss_mb": 512.0,
          "system/gpu0/utilization_percent": 90.0}


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    project = tmp_path_factory.mktemp("panels")
    root = project / ".flowillower"
    (project / "w.bin").write_text("weights")
    src = fw.init(name="src", dir=root, snapshot=False)
    fw.log_artifact("weights", project / "w.bin")
    fw.finish()
    train = fw.init(name="train", dir=root, snapshot=False)
    fw.use_artifact(src.id, "weights")
    for step in range(4):
        fw.log("loss", 1.0 / (step + 1), step=step)
        train.log_metrics({k: v + step for k, v in SYSTEM.items()}, step=step, role="sys")
    fw.finish()
    child = fw.init(fork_from=(train.id, 1), name="child", dir=root, snapshot=False)
    fw.log("loss", 0.1, step=2)
    fw.finish()
    Store(root).annotate(src.id, hidden=True)  # left out of the export (hidden runs)
    out = project / "site"
    result = export_site(root, out, points=20)
    assert result["runs"] == 2 and result["panels"] == {"lineage": 1, "family": 2}
    return out, {"src": src.id, "train": train.id, "child": child.id}


def test_export_writes_the_panels_documents(site):
    out, ids = site
    runs = out / "data" / "runs"
    lineage = json.loads((runs / ids["train"] / "lineage.json").read_text())
    assert [(e["from"], e["to"], e["artifact"]) for e in lineage["edges"]] == [
        (ids["src"], ids["train"], "weights")]
    assert {n["id"]: n["missing"] for n in lineage["nodes"]} == {ids["src"]: True,
                                                                 ids["train"]: False}
    assert (runs / ids["train"] / "lineage.json.js").is_file()  # file:// twin
    assert not (runs / ids["child"] / "lineage.json").exists()  # no lineage: no file
    fam = json.loads((runs / ids["child"] / "family.json").read_text())
    assert fam["parent"]["id"] == ids["train"] and fam["parent"]["step"] == 1
    series = json.loads((runs / ids["train"] / "series.json").read_text())["series"]
    assert series["system/gpu0/utilization_percent"]["y"] == [90.0, 91.0, 92.0, 93.0]


def _check_run_pages(page, base: str, ids: dict[str, str]) -> None:
    page.goto(f"{base}#/run/{ids['train']}")
    expect(page.locator("h1.run-name")).to_have_text("train")
    lineage = page.locator("section.lineage-card")
    expect(lineage).to_be_visible()
    expect(lineage.locator("h2")).to_contain_text("1 input, 0 consumers")
    missing = lineage.locator(f"g.lineage-node[data-id='{ids['src']}']")
    expect(missing).to_have_class("lineage-node missing")
    assert missing.evaluate("el => el.closest('a') === null")  # not in the site: no link
    system = page.locator("section.system-card")
    expect(system.locator("h2")).to_have_text("System (3)")
    expect(system.locator(".chart")).to_have_count(3)
    expect(system.locator("canvas").first).to_be_visible()
    family = page.locator("section.family-card")
    expect(family.locator(f"li[data-id='{ids['child']}']")).to_contain_text("forked at step 1")
    family.locator(f"li[data-id='{ids['child']}'] a").click()
    expect(page.locator("h1.run-name")).to_have_text("child")
    expect(page.locator(".family-card .family-parent")).to_contain_text(
        "forked from train at step 1")
    expect(page.locator(".family-segments tr[data-segment]")).to_have_count(2)
    expect(page.locator("section.lineage-card")).to_have_count(0)
    # The fork carries the system values its parent sampled before the fork point.
    expect(page.locator("section.system-card h2")).to_have_text("System (3)")


def test_exported_run_pages_over_http(site, page):
    out, ids = site
    with static_server(out) as base:
        _check_run_pages(page, base, ids)


def test_exported_run_pages_opened_from_a_file(site, page):
    out, ids = site
    _check_run_pages(page, (out / "index.html").as_uri(), ids)
