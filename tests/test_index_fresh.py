"""A faster first `Store.runs()` must stay a true one (issue 17 item 5).

The first sync of an empty index hands back the rows it writes instead of reading them
back, skips deletes for runs the index never had, and takes run.json's fields from a
run's row while run.json is the file the row was taken from. Each test here names what
must still hold: a run another process wrote after the last sync is listed; a run whose
files changed (a replay, a note, run.json rewritten, a pulled update) is read again; a
killed writer's half-written row is ignored; two readers filling a new index at once
agree; and the rows of a first sync are exactly the rows read back from SQLite.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.store import index as index_module
from flowillower.store import index_journal
from flowillower.store.catalog import Store
from flowillower.store.format import write_replay_file
from flowillower.store.index import Index


def _finished(store_root: Path, name: str, lr: float = 0.3, **init) -> fw.Run:
    run = fw.init(project="fresh", name=name, dir=str(store_root), snapshot=False, **init)
    fw.config({"lr": lr})
    for i in range(10):
        fw.log_metrics({"loss": lr / (i + 1)}, step=i)
    fw.finish()
    return run


def _replace_json(path: Path, doc: dict) -> None:
    tmp = path.with_name(".edit.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def _forget_index(store_root: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_root / 'index.sqlite'}{suffix}").unlink(missing_ok=True)


def test_a_run_another_process_wrote_after_the_last_sync_is_listed(store_dir, run_script):
    _finished(store_dir, "first")
    store = Store(store_dir)
    assert [r["name"] for r in store.runs()] == ["first"]
    run_script(f"""
        import flowillower as fw
        fw.init(project="fresh", name="second", dir={str(store_dir)!r}, snapshot=False)
        fw.config({{"lr": 0.7}})
        fw.log_metrics({{"loss": 0.5}}, step=0)
        fw.finish()
    """)
    rows = {r["name"]: r for r in store.runs()}  # the same Store: its index is warm
    assert set(rows) == {"first", "second"}
    assert rows["second"]["args"] == {"lr": 0.7}
    assert rows["second"]["metrics"]["loss"]["last"] == 0.5


def test_a_replay_added_after_the_last_sync_is_read(store_dir):
    run = _finished(store_dir, "r")
    store = Store(store_dir)
    assert not store.runs()[0]["metrics"]["loss"]["replayed"]
    t0 = time.time()
    write_replay_file(run.dir, "r1", [("grad", "metric", "float", {}, 0, t0, 0.5)], [])
    [row] = store.runs()
    assert row["metrics"]["grad"]["last"] == 0.5 and row["metrics"]["grad"]["replayed"]
    # A second replay into the folder that now exists is seen too.
    write_replay_file(run.dir, "r2", [("extra", "metric", "float", {}, 0, t0, 2.0)], [])
    assert store.runs()[0]["metrics"]["extra"]["last"] == 2.0


def test_a_note_saved_after_the_last_sync_is_read(store_dir):
    run = _finished(store_dir, "r")
    store = Store(store_dir)
    assert store.runs()[0]["notes"] == ""
    Store(store_dir).annotate(run.id, notes="from another reader", tags=["kept"])
    [row] = store.runs()
    assert row["notes"] == "from another reader" and row["tags"] == ["kept"]


def test_run_json_rewritten_after_the_row_is_read_again(store_dir):
    run = _finished(store_dir, "before")
    store = Store(store_dir)
    assert store.runs()[0]["name"] == "before"
    meta_path = run.dir / "run.json"
    _replace_json(meta_path, {**json.loads(meta_path.read_text()), "name": "after",
                              "fork_of": {"run": "20260101-000000-parent00", "step": 3}})
    [row] = store.runs()  # warm: the folder changed, so the run is read again
    assert row["name"] == "after" and row["fork_of"]["step"] == 3
    _forget_index(store_dir)
    [row] = Store(store_dir).runs()  # cold: the row's copy of run.json is stale
    assert row["name"] == "after" and row["args"] == {"lr": 0.3}
    # A row written before rows kept run.json's stamp: run.json is read, not trusted.
    doc = json.loads((run.dir / index_journal.ROW_FILE).read_text())
    doc.pop("meta_stamp")
    doc["version"], doc["meta"]["name"] = 2, "stale"
    _replace_json(run.dir / index_journal.ROW_FILE, doc)
    _forget_index(store_dir)
    assert Store(store_dir).runs()[0]["name"] == "after"


def test_a_pulled_update_of_a_live_run_is_read(tmp_path, store_dir, run_script):
    """A teammate's run arrives while running, then again finished (new files: run
    folder changed), as pull writes them."""
    script = f"""
        import sys, flowillower as fw
        fw.init(project="fresh", name="live", dir={str(store_dir)!r}, snapshot=False)
        fw.config({{"lr": 0.1}})
        for i in range(5):
            fw.log_metrics({{"loss": 1.0 / (i + 1)}}, step=i)
        fw.finish()
    """
    run_script(script)
    [done] = list((store_dir / "runs").iterdir())
    mine = tmp_path / "mine" / ".flowillower"
    arrived = mine / "runs" / done.name
    shutil.copytree(done, arrived)
    (arrived / "summary.json").unlink()  # as it was when first pulled: still running
    row_doc = json.loads((done / index_journal.ROW_FILE).read_text())
    (arrived / index_journal.ROW_FILE).unlink()  # rows never travel
    store = Store(mine)
    assert store.runs()[0]["status"] in ("running", "killed", "lost")
    for name in ("summary.json", "data.fwl"):  # the finished version arrives
        tmp = arrived / f".{name}.pull"
        shutil.copy(done / name, tmp)
        os.replace(tmp, arrived / name)
    [row] = store.runs()
    assert row["status"] == "success" and row["metrics"]["loss"]["count"] == 5
    assert row["ended"] == pytest.approx(row_doc["ended"])


def test_a_killed_writers_half_written_row_is_ignored(store_dir):
    run = fw.init(project="fresh", name="r", dir=str(store_dir), snapshot=False)
    fw.config({"lr": 0.3})
    run.ensure_on_disk()
    start_row = (run.dir / index_journal.ROW_FILE).read_text()
    for i in range(10):
        fw.log_metrics({"loss": 0.3 / (i + 1)}, step=i)
    fw.finish()
    final_row = (run.dir / index_journal.ROW_FILE).read_text()
    # Killed while writing its finish row: the start row stays, half a new one beside it.
    (run.dir / index_journal.ROW_FILE).write_text(start_row)
    (run.dir / f".{index_journal.ROW_FILE}.4242.1.tmp").write_text(final_row[:len(final_row) // 2])
    for cold in (True, False):
        if cold:
            _forget_index(store_dir)
        [row] = Store(store_dir).runs()
        assert row["status"] == "success" and row["metrics"]["loss"]["count"] == 10
        assert row["metrics"]["loss"]["last"] == pytest.approx(0.03)
    # A half-written row in place (a writer that did not rename) is no row either.
    (run.dir / index_journal.ROW_FILE).write_text(final_row[:len(final_row) // 2])
    _forget_index(store_dir)
    assert Store(store_dir).runs()[0]["metrics"]["loss"]["count"] == 10


@pytest.mark.parametrize("where", ["arg", "last value"])
def test_a_row_whose_values_are_no_json_is_read_from_the_run(store_dir, where):
    """A row file of the right shape whose value texts do not decode (damaged on disk):
    the run is read instead, and the listing of every other run goes on."""
    other = _finished(store_dir, "other", lr=0.5)
    run = _finished(store_dir, "r")
    path = run.dir / index_journal.ROW_FILE
    doc = json.loads(path.read_text())
    if where == "arg":
        doc["args"][0][1] = "not json"
    else:
        doc["metrics"][0][4] = "{"
    _replace_json(path, doc)
    rows = {r["name"]: r for r in Store(store_dir).runs()}
    assert rows["r"]["args"] == {"lr": 0.3} and rows["other"]["id"] == other.id
    assert rows["r"]["metrics"]["loss"]["last"] == pytest.approx(0.03)


def _varied_store(store_root: Path, run_script) -> None:
    """Runs whose values stress the way back from SQLite: ints as REAL, bools, NaN, huge
    ints, lists, text values, hidden runs, notes, a fork, a run without a row, a run
    killed mid-way, two runs created at the same second."""
    parent = _finished(store_root, "parent", lr=1)
    fw.init(project="fresh", name="odd", dir=str(store_root), snapshot=False,
            tags=["a", "b"], notes="hello")
    fw.config({"flag": True, "big": 2**70, "layers": [1, 2], "opt": "adam", "none": None})
    for i in range(4):
        fw.log_metrics({"hits": i * 3, "nan": float("nan"), "inf": float("inf"),
                        "text": f"s{i}", "flag": i % 2 == 0}, step=i)
    fw.finish()
    fork = _finished(store_root, "fork", fork_from=(parent.id, 4))
    Store(store_root).annotate(fork.id, hidden=True, notes="edited")
    scanned = _finished(store_root, "scanned", lr=2)
    (scanned.dir / index_journal.ROW_FILE).unlink()
    run_script(f"""
        import os, signal, flowillower as fw
        fw.init(project="fresh", name="killed", dir={str(store_root)!r}, snapshot=False)
        fw.log_metrics({{"loss": 1.0}}, step=0)
        fw.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """, check=False)
    for name, created in (("same-a", 1.8e9), ("same-b", 1.8e9)):
        run = _finished(store_root, name)
        meta = json.loads((run.dir / "run.json").read_text())
        _replace_json(run.dir / "run.json", {**meta, "created": created})


def test_a_first_sync_gives_the_rows_sqlite_gives_back(store_dir, monkeypatch, run_script):
    _varied_store(store_dir, run_script)
    _forget_index(store_dir)
    first = Index(store_dir)
    real_load = Index._load_rows
    monkeypatch.setattr(Index, "_load_rows", lambda *a, **k: pytest.fail("read back"))
    first.sync()
    cold = first.run_rows()
    monkeypatch.setattr(Index, "_load_rows", real_load)
    again = Index(store_dir).run_rows()  # another reader: from SQLite
    assert json.dumps(cold, sort_keys=True, default=repr) == \
        json.dumps(again, sort_keys=True, default=repr)
    assert [r["id"] for r in cold] == [r["id"] for r in again]
    odd = next(r for r in cold if r["name"] == "odd")
    assert odd["args"] == {"flag": True, "big": 2**70, "layers": [1, 2], "opt": "adam",
                           "none": None}
    assert odd["metrics"]["hits"]["min"] == 0.0 and type(odd["metrics"]["hits"]["min"]) is float
    assert odd["metrics"]["text"]["last"] == "s3" and odd["metrics"]["flag"]["last"] is False
    assert {r["name"]: r["status"] for r in cold}["killed"] == "killed"
    assert first.run_rows(include_hidden=False) == [r for r in again if not r["hidden"]]
    # `ls` after a first sync: only the first page of what it wrote, hidden runs left out.
    _forget_index(store_dir)
    paged = Index(store_dir)
    monkeypatch.setattr(Index, "_load_rows", lambda *a, **k: pytest.fail("read back"))
    paged.sync()
    shown = [r for r in again if not r["hidden"]]
    assert paged.run_rows(include_hidden=False, limit=3) == shown[:3]
    assert paged.run_rows(include_hidden=False, limit=0) == []
    assert paged.run_rows(include_hidden=True, limit=100) == again
    assert paged.run_rows() == again


def test_two_readers_filling_a_new_index_at_once_agree(store_dir, monkeypatch):
    for i in range(3):
        _finished(store_dir, f"r{i}", lr=0.1 * (i + 1))
    _forget_index(store_dir)
    slow, quick = Index(store_dir), Index(store_dir)
    real_first_look = index_module.first_look
    calls = []

    def first_look(path):  # the quick reader indexes everything while the slow one looks
        if not calls:
            calls.append(path)
            assert quick.sync() == 3
        return real_first_look(path)

    monkeypatch.setattr(index_module, "first_look", first_look)
    assert slow.sync() == 3  # runs it took for new are in the index already: no clash
    monkeypatch.setattr(index_module, "first_look", real_first_look)
    assert slow.run_rows() == quick.run_rows() == Index(store_dir).run_rows()
    assert sorted(r["args"]["lr"] for r in slow.run_rows()) == pytest.approx([0.1, 0.2, 0.3])


def test_listing_a_store_as_a_fresh_process_matches(store_dir, run_script):
    """The CLI's first `ls` of a store no process has indexed: the same runs as the
    library sees (the first-sync path in a real process)."""
    for i in range(3):
        _finished(store_dir, f"run{i}", lr=0.5 + i)
    _forget_index(store_dir)
    out = run_script(f"""
        import json
        from flowillower.store.catalog import Store
        rows = Store({str(store_dir)!r}).runs()
        print(json.dumps([[r["name"], r["args"], r["metrics"]["loss"]["last"]] for r in rows]))
    """).stdout
    listed = json.loads(out.strip().splitlines()[-1])
    assert listed == [[f"run{i}", {"lr": 0.5 + i}, pytest.approx((0.5 + i) / 10)]
                      for i in (2, 1, 0)]


