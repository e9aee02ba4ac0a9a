"""The runs table's best markers in one pass: `/api/best` answers every metric column's
best value among the runs a filter matches in one request (each column's direction as
the table chooses), and the table, past its first page of rows, asks it once for all
shown columns; a static export answers the same from its rows."""

from __future__ import annotations

import math
import warnings
from urllib.parse import quote

import pytest

from flowillower.run import Run
from flowillower.store.catalog import Store
from tests.conftest import ok, require_browser, static_server, ui_server, wait_for

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

playwright_api = require_browser()
expect = playwright_api.expect
LOCAL = "http://127.0.0.1:8686"
N = 230
# 205 matched runs: more than the table's first page of 200 rows; leaves out r224.
QUERY = "widgets < 45 and widgets != 24"
MATCHED = 205


def _loss(i: int) -> float:
    return 5.0 + ((i * 37) % 101) / 10  # >= 5, never the best except where set below


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("best") / ".flowillower"
    for i in range(N):
        run = Run("best", f"r{i:03d}", dir=root, snapshot=False)
        run.record_args({"lr": 0.001 if i % 2 else 0.1})
        loss = _loss(i)
        if i == 221:
            loss = 0.25          # the best loss the filter keeps, past row 200
        if i == 224:
            loss = 0.125         # better, but filtered out by QUERY
        if i == 3:
            loss = float("nan")  # never wins
        run.log_metrics({"val/loss": loss, "widgets": float(i % 50), "flag": bool(i % 2)}, 0)
        run.finish()
    hidden = Run("best", "hidden", dir=root, snapshot=False)
    hidden.log_metrics({"val/loss": 0.0001, "widgets": -1.0}, 0)  # would win, but hidden
    hidden.finish()
    Store(root).annotate(hidden.id, hidden=True)
    return root


def test_best_api_matches_every_row(store):
    with TestClient(_app(store), base_url=LOCAL) as c:
        rows = ok(c.get("/api/runs", params={"limit": 5000, "col": ["last:val/loss",
                                                                     "last:widgets"]}))["rows"]
        res = ok(c.get("/api/best", params={"col": ["last:val/loss", "last:widgets",
                                                    "best:val/loss"],
                                            "goal": ["min", "min"]}))
        losses = [r["cells"]["last:val/loss"] for r in rows]
        finite = [v for v in losses if isinstance(v, float) and math.isfinite(v)]
        assert res["matched"] == N
        assert res["best"]["last:val/loss"] == {
            "value": min(finite), "goal": "min", "ties": 1,
            "run": next(r["id"] for r in rows if r["name"] == "r224")}
        assert res["best"]["last:widgets"]["value"] == 0.0  # flipped to min by goal=
        assert res["best"]["last:widgets"]["ties"] == 5     # r000, r050, ... r200
        assert res["best"]["best:val/loss"]["goal"] == "min"  # the name decides
        # The filter is honoured, and the default direction of an unknown name is max.
        res = ok(c.get("/api/best", params={"col": ["last:val/loss", "last:widgets"],
                                            "q": QUERY}))
        assert res["matched"] == MATCHED
        assert res["best"]["last:val/loss"]["value"] == 0.25
        assert res["best"]["last:widgets"] == {"value": 44.0, "goal": "max", "ties": 4,
                                               "run": res["best"]["last:widgets"]["run"]}
        res = ok(c.get("/api/best", params={"col": "last:val/loss", "q": "lr < 0.01"}))
        assert res["matched"] == N // 2 and res["best"]["last:val/loss"]["value"] == 0.25
        # A column nobody has: no value. Bad requests say what is wrong.
        none = ok(c.get("/api/best", params={"col": "last:nothing"}))["best"]["last:nothing"]
        assert none["value"] is None and none["run"] is None
        for params, param in (({"col": "arg:lr"}, "col"), ({}, "col"),
                              ({"col": "last:x", "goal": ["min", "max"]}, "goal"),
                              ({"col": "last:x", "goal": "up"}, "goal"),
                              ({"col": "last:x", "q": "lr <"}, "q")):
            r = c.get("/api/best", params=params)
            assert r.status_code == 400 and r.json()["param"] == param, (params, r.text)


def _app(store):
    from flowillower.server.app import create_app

    return create_app(store, sync_interval=0.05)


def _best_cell(pg, key: str) -> str | None:
    """Name of the run whose `key` cell carries the ★ (None while none is drawn)."""
    return pg.evaluate("""(key) => {
      const keys = [...document.querySelectorAll("table.runs thead th")].map((th) => th.title.split(" ")[0]);
      for (const tr of document.querySelectorAll("table.runs tr[data-id]")) {
        const td = tr.children[keys.indexOf(key)];
        if (td && td.classList.contains("best")) return tr.querySelector("td.name-col a").textContent;
      }
      return null; }""", key)


def _check_table(pg, base: str) -> list[str]:
    """Open the filtered table sorted by name; the best row is past the first page."""
    asked: list[str] = []
    pg.on("request", lambda r: asked.append(r.url) if "/api/best" in r.url or "best" in
          r.url.split("?")[0].split("/")[-1] else None)
    pg.goto(f"{base}#/?sort=name&desc=0&q={quote(QUERY)}")
    expect(pg.locator("table.runs tr[data-id]").first).to_be_visible()
    expect(pg.locator(".toolbar .muted").first).to_contain_text(f"{MATCHED} of")
    pg.locator(".table-wrap").evaluate("el => { el.scrollTop = el.scrollHeight; }")
    wait_for(lambda: _best_cell(pg, "last:val/loss") == "r221", timeout=20,
             what="the best loss marked on r221, past the first page")
    assert _best_cell(pg, "last:val/loss") == "r221"
    return asked


def test_table_asks_once_for_every_column(store, page):
    with ui_server(store, sync_interval=0.2) as base:
        sorted_pages: list[str] = []
        page.on("request", lambda r: sorted_pages.append(r.url)
                if "/api/runs?" in r.url and "limit=20&" in r.url else None)
        asked = _check_table(page, base)
        best = [u for u in asked if "/api/best" in u]
        assert len(best) == 1, best  # every shown metric column in one request
        assert "col=last%3Aval%2Floss" in best[0] and "goal=min" in best[0]
        assert "q=widgets" in best[0]  # the table's filter
        assert not sorted_pages, sorted_pages  # no per-column sorted page any more


def test_exported_table_marks_the_best_past_the_first_page(store, page, tmp_path):
    from flowillower.server.export import export_site

    export_site(store, tmp_path / "site", points=10, snapshots=False)
    with static_server(tmp_path / "site") as base:
        _check_table(page, base)
