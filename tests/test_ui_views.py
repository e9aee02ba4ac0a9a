"""Saved views: a named UI address (page + every setting in its URL hash) kept in the store,
listed in the header's "Views" menu of every browser on that store, opened by one click;
saved atomically one file per view; damaged files skipped; edits need the write token."""

from __future__ import annotations

import json
import os
import warnings

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from flowillower.run import Run
from flowillower.server.app import create_app
from flowillower.store.views import SavedViews, ViewError
from tests.conftest import fill_disk, ui_server, wait_for

LOCAL = "http://127.0.0.1:8686"
WRITE = {"X-Flowillower-Token": ""}  # the header the UI sends on changes


def _store(tmp_path):
    root = tmp_path / ".flowillower"
    for lr in (0.1, 0.01):
        run = Run("p", f"lr{lr}", dir=root, snapshot=False)
        run.record_args({"lr": lr})
        for step in range(3):
            run.log_metrics({"loss": lr * (3 - step)}, step)
        run.finish()
    return root


def test_save_list_replace_delete(tmp_path):
    views = SavedViews(tmp_path)
    assert views.list() == []
    views.save("losses", "#/charts?x=step&m=loss")
    views.save("Alpha", "#/?q=lr%20%3C%200.05")
    assert [v["name"] for v in views.list()] == ["Alpha", "losses"]
    views.save("losses", "#/charts?x=time")  # same name: replaced, not duplicated
    assert views.get("losses")["hash"] == "#/charts?x=time"
    assert len(list((tmp_path / "views").glob("*.json"))) == 2
    assert views.delete("losses") is True
    assert views.delete("losses") is False
    assert [v["name"] for v in views.list()] == ["Alpha"]


@pytest.mark.parametrize("name, view_hash", [
    ("", "#/"), ("   ", "#/"), ("x" * 101, "#/"), ("a\nb", "#/"),
    ("ok", "https://evil.example/"), ("ok", "javascript:alert(1)"), ("ok", "#/" + "a" * 9000),
    ("ok", "#/\x00"), (None, "#/"), ("ok", 3),
])
def test_refuses_bad_views(tmp_path, name, view_hash):
    with pytest.raises(ViewError):
        SavedViews(tmp_path).save(name, view_hash)
    assert not (tmp_path / "views").exists() or not list((tmp_path / "views").iterdir())


def test_names_never_become_paths(tmp_path):
    views = SavedViews(tmp_path / "store")
    views.save("../../escape", "#/")
    views.save("/etc/passwd", "#/")
    files = sorted(p.name for p in (tmp_path / "store" / "views").iterdir())
    assert len(files) == 2 and all(f.endswith(".json") and "/" not in f for f in files)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]
    assert {v["name"] for v in views.list()} == {"../../escape", "/etc/passwd"}


def test_damaged_and_foreign_files_are_skipped(tmp_path):
    views = SavedViews(tmp_path)
    views.save("good", "#/charts")
    folder = tmp_path / "views"
    (folder / "torn.json").write_text('{"name": "half", "ha')
    (folder / "list.json").write_text("[1, 2]")
    (folder / "big.json").write_text(json.dumps({"name": "big", "hash": "#/" + "a" * 70000}))
    (folder / "evil.json").write_text(json.dumps({"name": "evil", "hash": "javascript:x"}))
    # A valid document under a file name we would not write (copied by hand): skipped.
    good = next(folder.glob("*.json"))
    (folder / "copy.json").write_text(good.read_text())
    os.symlink("/etc/hostname", folder / "link.json")
    assert [v["name"] for v in views.list()] == ["good"]


def test_full_disk_keeps_the_old_view(tiny_disk):
    views = SavedViews(tiny_disk)
    views.save("v", "#/charts?x=step")
    fill_disk(tiny_disk)
    with pytest.raises(OSError):
        views.save("v", "#/charts?x=time&" + "m=loss&" * 500)
    assert views.get("v")["hash"] == "#/charts?x=step"
    assert [p.name for p in (tiny_disk / "views").iterdir() if p.name.endswith(".tmp")] == []


def test_api_round_trip_and_token(tmp_path):
    root = _store(tmp_path)
    with TestClient(create_app(root, sync_interval=0.05), base_url=LOCAL) as c:
        assert c.get("/api/views").json() == {"views": []}
        # Without the UI's header (a cross-site form or a script elsewhere): refused.
        refused = c.put("/api/views", json={"name": "a", "hash": "#/"})
        assert refused.status_code in (401, 403), refused.text
        r = c.put("/api/views", json={"name": "small lr", "hash": "#/?q=lr%3C0.05"},
                  headers=WRITE)
        assert r.status_code == 200, r.text
        assert [v["name"] for v in r.json()["views"]] == ["small lr"]
        bad = c.put("/api/views", json={"name": "x", "hash": "http://evil/"}, headers=WRITE)
        assert bad.status_code == 400 and "#/" in bad.json()["error"]
        extra = c.put("/api/views", json={"name": "x", "hash": "#/", "path": "../x"},
                      headers=WRITE)
        assert extra.status_code == 400
        assert c.delete("/api/views/nothing", headers=WRITE).status_code == 404
        assert c.delete("/api/views/small%20lr").status_code in (401, 403)
        assert c.delete("/api/views/small%20lr", headers=WRITE).status_code == 200
        assert c.get("/api/views").json() == {"views": []}
    with TestClient(create_app(root, token="s3cret"), base_url=LOCAL) as c:
        assert c.put("/api/views", json={"name": "a", "hash": "#/"},
                     headers={"X-Flowillower-Token": "wrong"}).status_code in (401, 403)
        assert c.put("/api/views", json={"name": "a", "hash": "#/"},
                     headers={"X-Flowillower-Token": "s3cret"}).status_code == 200


def test_browser_saves_a_view_and_another_browser_opens_it(tmp_path, browser):
    root = _store(tmp_path)
    with ui_server(root) as base:
        first = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        first.goto(f"{base}#/charts?x=step&smooth=0.5&log=true")
        first.wait_for_selector("#views-menu summary")
        first.click("#views-menu summary")
        first.fill(".views-name", "smoothed log")
        first.click(".views-form button[type=submit]")
        wait_for(lambda: "Saved" in first.inner_text(".views-status"), timeout=20,
                 what="the save to be confirmed")
        saved_hash = first.evaluate("location.hash")
        assert SavedViews(root).get("smoothed log")["hash"] == saved_hash
        first.context.close()

        # A second browser (no shared localStorage) lists it and opens the same view.
        other = browser.new_context(viewport={"width": 390, "height": 800}).new_page()
        other.goto(f"{base}#/")
        other.click("#views-menu summary")
        link = other.wait_for_selector(".views-list a:text('smoothed log')")
        link.click()
        wait_for(lambda: other.evaluate("location.hash") == saved_hash, timeout=20,
                 what="the saved view to open")
        assert other.evaluate("document.documentElement.scrollWidth <= innerWidth")
        other.context.close()


def test_exported_site_lists_the_views_read_only(tmp_path, browser):
    from flowillower.server.export import export_site
    from tests.conftest import static_server

    root = _store(tmp_path)
    SavedViews(root).save("log losses", "#/charts?x=step&log=true")
    site = tmp_path / "site"
    export_site(root, site)
    assert json.loads((site / "data" / "views.json").read_text())["views"][0]["name"] == \
        "log losses"
    with static_server(site) as base:
        pg = browser.new_context(viewport={"width": 1200, "height": 800}).new_page()
        pg.goto(f"{base}#/")
        pg.click("#views-menu summary")
        pg.wait_for_selector(".views-list a:text('log losses')").click()
        wait_for(lambda: pg.evaluate("location.hash") == "#/charts?x=step&log=true",
                 timeout=20, what="the exported view to open")
        assert pg.query_selector(".views-form") is None  # read-only: nothing to save
        pg.context.close()
