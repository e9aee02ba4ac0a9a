"""Notes are never lost: a note given to `fw.init(notes=...)` or saved from the UI loads
in the run page, the table and the API; saving an unchanged box keeps it; a save writes
exactly the box's text; the edit travels with `push`/`pull`; edits apply in time order."""

from __future__ import annotations

import time
import types
import warnings

import pytest

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from flowillower.gitops.sync import pull, push
from flowillower.run import Run
from flowillower.server.app import create_app
from flowillower.store import catalog
from flowillower.store.catalog import Store
from tests.conftest import ok, ui_server, wait_for
from tests.conftest_git import bare_remote, isolate_home

LOCAL = "http://127.0.0.1:8686"
WRITE = {"X-Flowillower-Token": ""}  # the header the UI sends on changes
NOTE = "lr sweep, <b>baseline</b>\nsecond line"


def _make_runs(root) -> tuple[str, str]:
    noted = Run("p", "noted", notes=NOTE, dir=root, snapshot=False)
    noted.record_args({"lr": 0.1})
    noted.log_metrics({"loss": 1.0}, 0)
    noted.finish()
    plain = Run("p", "plain", dir=root, snapshot=False)
    plain.log_metrics({"loss": 2.0}, 0)
    plain.finish()
    return noted.id, plain.id



def _table_notes(c) -> dict[str, str]:
    return {r["id"]: r["notes"] for r in ok(c.get("/api/runs"))["rows"]}


def test_api_reads_the_init_note_and_saves_exactly_the_text(tmp_path):
    root = tmp_path / ".flowillower"
    noted, plain = _make_runs(root)
    with TestClient(create_app(root, sync_interval=0.05), base_url=LOCAL) as c:
        assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == NOTE
        assert _table_notes(c) == {noted: NOTE, plain: ""}
        # Saving the unchanged text keeps the note.
        saved = ok(c.patch(f"/api/runs/{noted}", json={"notes": NOTE}, headers=WRITE))
        assert saved["run"]["notes"] == NOTE
        assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == NOTE
        # A new text replaces it; an emptied box empties it (exactly what was sent).
        for text in ("  edited  \n", ""):
            ok(c.patch(f"/api/runs/{noted}", json={"notes": text}, headers=WRITE))
            assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == text
            assert _table_notes(c)[noted] == text
        # Editing the hidden flag alone leaves the note as it was.
        ok(c.patch(f"/api/runs/{noted}", json={"notes": "kept"}, headers=WRITE))
        ok(c.patch(f"/api/runs/{noted}", json={"hidden": False}, headers=WRITE))
        assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == "kept"


def test_a_note_saved_in_the_ui_survives_push_and_pull(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    root = tmp_path / "alice" / ".flowillower"
    noted, _ = _make_runs(root)
    with TestClient(create_app(root), base_url=LOCAL) as c:
        ok(c.patch(f"/api/runs/{noted}", json={"notes": "from the UI"}, headers=WRITE))
    remote = bare_remote(tmp_path / "remote.git")
    push(root, str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, f"file://{remote}")
    rows = {r["id"]: r for r in Store(bob).runs()}
    assert rows[noted]["notes"] == "from the UI"
    with TestClient(create_app(bob), base_url=LOCAL) as c:
        assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == "from the UI"


def test_edits_apply_in_time_order_across_a_second_boundary(tmp_path, monkeypatch):
    """An edit whose clock readings straddle a second must still sort after an earlier
    edit of the same second (two clock readings once named it `<second>.01`)."""
    root = tmp_path / ".flowillower"
    noted, _ = _make_runs(root)
    store = Store(root)
    base = 1_800_000_000  # a whole second
    clock = [base + 0.5]

    def now() -> float:
        value = clock[0] if len(clock) == 1 else clock.pop(0)
        return value

    fake = types.SimpleNamespace(
        time=now, time_ns=lambda: int(round(now() * 1e6)) * 1000,
        gmtime=lambda secs=None: time.gmtime(now() if secs is None else secs),
        strftime=time.strftime)
    monkeypatch.setattr(catalog, "time", fake)
    store.annotate(noted, notes="first")
    # The second edit starts at .99 of the same second; a later reading is past it.
    clock[:] = [base + 0.99, base + 1.01, base + 1.01]
    store.annotate(noted, notes="second")
    monkeypatch.undo()
    assert {r["id"]: r for r in store.runs()}[noted]["notes"] == "second"


# -- in a real browser ---------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.conftest import require_browser

    require_browser()
    root = tmp_path_factory.mktemp("notes") / ".flowillower"
    ids = _make_runs(root)
    with ui_server(root, sync_interval=0.2) as url:
        yield url, ids


def _box(page):
    card = page.locator("section.card", has=page.locator("h2", has_text="Notes"))
    box = card.locator("textarea")
    box.wait_for()
    return box


def _save(page) -> None:
    page.get_by_role("button", name="Save note").click()
    wait_for(lambda: page.locator(".note-status").text_content() == "saved", timeout=10,
             what="the note to be saved")


def test_run_page_note_round_trip(server, page):
    base, (noted, _) = server
    page.goto(f"{base}#/run/{noted}")
    assert _box(page).input_value() == NOTE  # the note given to fw.init
    _save(page)  # an unchanged box keeps the note
    page.reload()
    assert _box(page).input_value() == NOTE
    _box(page).fill("better lr next time")
    _save(page)
    page.reload()
    assert _box(page).input_value() == "better lr next time"
    page.goto(f"{base}#/")
    cell = page.locator(f"table.runs tr[data-id='{noted}'] td.note")
    wait_for(lambda: cell.count() and cell.text_content() == "better lr next time",
             timeout=10, what="the table to show the saved note")


def test_a_save_on_a_full_disk_says_so_and_keeps_the_note(tiny_disk):
    root = tiny_disk / ".flowillower"
    noted, _ = _make_runs(root)
    with TestClient(create_app(root), base_url=LOCAL) as c:
        ok(c.patch(f"/api/runs/{noted}", json={"notes": "kept"}, headers=WRITE))
        filler = tiny_disk / "filler"
        with open(filler, "wb", buffering=0) as f:  # fill the disk to the last byte
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError:
                pass
        r = c.patch(f"/api/runs/{noted}", json={"notes": "x" * 90_000}, headers=WRITE)
        assert r.status_code == 400 and "space" in r.json()["error"].lower(), r.text
        notes_dir = root / "runs" / noted / "notes"
        assert not [p.name for p in notes_dir.iterdir() if p.suffix != ".json"]
        filler.unlink()  # room for the index again
        assert ok(c.get(f"/api/runs/{noted}"))["run"]["notes"] == "kept"
