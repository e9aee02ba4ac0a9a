"""The index keeps each run's parent (issue 17 item 5, issue 16 item 1's fork tree).

A fork's `fork_of` (run.json, written by `fw.init(fork_from=...)`) is an index column
recorded with the run's row, so the run page's Family card finds parents and forks in the
rows the server holds instead of reading every run.json. The tests forbid that read
(`ForkIndex.fork_of`) and check the family is the same: for forks made here, pulled
forks, hostile `fork_of` values, a cycle, a parent absent locally, and an index written
by the previous version (migrated in place, nothing re-read).
"""

from __future__ import annotations

import json
import os
import sqlite3
import warnings
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.gitops.sync import pull, push
from flowillower.server.family import ForkIndex
from flowillower.store import index_schema
from flowillower.store.catalog import Store
from tests.conftest import ok
from tests.conftest_git import bare_remote, isolate_home

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

LOCAL = "http://127.0.0.1:8686"


def _run(steps, **init) -> str:
    run = fw.init(snapshot=False, **init)
    for step in steps:
        fw.log("loss", 10.0 - step, step=step)
    fw.finish()
    return run.id


def _family() -> dict[str, str]:
    """gen0 -> gen1 (at 5) -> gen2 (at 7); gen0 -> sibling (at 2)."""
    ids = {"gen0": _run(range(10), id="gen0", name="gen0")}
    ids["gen1"] = _run(range(6, 9), fork_from=(ids["gen0"], 5), name="gen1")
    ids["sibling"] = _run(range(3, 5), fork_from=(ids["gen0"], 2), name="sibling")
    ids["gen2"] = _run(range(8, 12), fork_from=(ids["gen1"], 7), name="gen2")
    return ids


@pytest.fixture
def no_run_json_reads(monkeypatch):
    """The family must come from the index: reading forks from run.json fails."""
    def refuse(self, run_dir):
        raise AssertionError(f"read {run_dir}/run.json to find forks")

    monkeypatch.setattr(ForkIndex, "fork_of", refuse)


def _app(store_root: Path):
    from flowillower.server.app import create_app

    return create_app(store_root, sync_interval=0.05)


def _tree(node) -> list:
    return [node["id"], [_tree(c) for c in node["children"]]]


def _replace_json(path: Path, doc: dict) -> None:
    """Rewritten as every writer does (a new file renamed over the old one)."""
    tmp = path.with_name(".edit.tmp")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, path)


def test_rows_carry_each_forks_parent_and_step(store_dir):
    ids = _family()
    rows = {r["name"]: r for r in Store(store_dir).runs()}
    assert rows["gen0"]["fork_of"] is None
    assert rows["gen1"]["fork_of"] == {"run": ids["gen0"], "step": 5}
    assert rows["sibling"]["fork_of"] == {"run": ids["gen0"], "step": 2}
    assert rows["gen2"]["fork_of"] == {"run": ids["gen1"], "step": 7}
    conn = sqlite3.connect(store_dir / "index.sqlite")
    assert sorted(conn.execute("SELECT id FROM runs WHERE fork_of=?", (ids["gen0"],))) == \
        sorted([(ids["gen1"],), (ids["sibling"],)])


def test_family_card_from_the_index_reads_no_run_json(store_dir, no_run_json_reads):
    ids = _family()
    with TestClient(_app(store_dir), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{ids['gen2']}/family"))
        assert [(a["id"], a["step"]) for a in fam["ancestors"]] == [(ids["gen0"], 5),
                                                                      (ids["gen1"], 7)]
        assert _tree(fam["tree"]) == [ids["gen0"], [[ids["sibling"], []],
                                                    [ids["gen1"], [[ids["gen2"], []]]]]]
        assert ok(c.get("/api/runs/gen0/family"))["forks"] == 2


@pytest.mark.parametrize("fork_of", [
    "gen0", {"run": "../../etc", "step": 3}, {"run": "gen0", "step": "3"},
    {"run": "gen0", "step": True}, {"run": ["gen0"], "step": 3}, {"run": "", "step": 3},
    {"run": "gen0", "step": 2**70}, {"step": 3}])
def test_a_hostile_fork_of_is_no_fork_in_the_index(store_dir, no_run_json_reads, fork_of):
    gen0 = _run(range(5), id="gen0", name="gen0")
    child = _run(range(3, 6), fork_from=(gen0, 2), name="child")
    Store(store_dir).runs()  # indexed as an honest fork first
    meta_path = store_dir / "runs" / child / "run.json"
    _replace_json(meta_path, {**json.loads(meta_path.read_text()), "fork_of": fork_of})
    [row] = [r for r in Store(store_dir).runs() if r["id"] == child]
    assert row["fork_of"] is None
    with TestClient(_app(store_dir), base_url=LOCAL) as c:
        assert ok(c.get(f"/api/runs/{child}/family"))["parent"] is None
        assert ok(c.get("/api/runs/gen0/family"))["tree"]["children"] == []


def test_a_cycle_and_an_absent_parent(store_dir, no_run_json_reads):
    gen0 = _run(range(5), id="gen0", name="gen0")
    child = _run(range(3, 6), fork_from=(gen0, 2), name="child")
    orphan = _run(range(2), name="orphan")
    Store(store_dir).runs()
    gen0_meta = store_dir / "runs" / gen0 / "run.json"  # gen0 "forked" from its own child
    _replace_json(gen0_meta, {**json.loads(gen0_meta.read_text()),
                              "fork_of": {"run": child, "step": 1}})
    orphan_meta = store_dir / "runs" / orphan / "run.json"  # a parent this store lacks
    _replace_json(orphan_meta, {**json.loads(orphan_meta.read_text()),
                                "fork_of": {"run": "20260101-000000-gone0000", "step": 4}})
    with TestClient(_app(store_dir), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{child}/family"))
        assert [a["id"] for a in fam["ancestors"]] == [gen0]
        assert fam["nodes"] == 2
        lost = ok(c.get(f"/api/runs/{orphan}/family"))
        assert lost["parent"]["id"] == "20260101-000000-gone0000"
        assert lost["parent"]["missing"] and lost["parent"]["step"] == 4
        assert _tree(lost["tree"]) == ["20260101-000000-gone0000", [[orphan, []]]]


def test_pulled_forks_are_in_the_index(tmp_path, monkeypatch, store_dir, no_run_json_reads):
    isolate_home(monkeypatch, tmp_path)
    ids = _family()
    remote = bare_remote(tmp_path / "remote.git")
    push(store_dir, str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(remote))
    rows = {r["name"]: r for r in Store(bob).runs(sync=False)}  # as pull indexed them
    assert rows["gen2"]["fork_of"] == {"run": ids["gen1"], "step": 7}
    with TestClient(_app(bob), base_url=LOCAL) as c:
        fam = ok(c.get(f"/api/runs/{ids['gen2']}/family"))
        assert [a["id"] for a in fam["ancestors"]] == [ids["gen0"], ids["gen1"]]


# The previous version's index (schema 4): run.json kept whole in `meta`, no fork columns.
_SCHEMA_4 = """
CREATE TABLE runs (
    id TEXT PRIMARY KEY, project TEXT, name TEXT, status TEXT, created REAL, ended REAL,
    duration REAL, tags TEXT, notes TEXT, hidden INTEGER DEFAULT 0, host TEXT,
    git_head TEXT, git_branch TEXT, git_dirty INTEGER, snapshot TEXT, signature TEXT,
    meta TEXT, error TEXT, loops TEXT, author TEXT, origin TEXT);
CREATE TABLE args (run_id TEXT, name TEXT, value, value_json TEXT, PRIMARY KEY (run_id, name));
CREATE TABLE metrics (run_id TEXT, name TEXT, role TEXT, kind TEXT, count INTEGER, last,
    last_json TEXT, min REAL, max REAL, last_step INTEGER, replayed INTEGER,
    PRIMARY KEY (run_id, name));
CREATE INDEX metrics_name ON metrics(name);
CREATE INDEX args_name ON args(name);
PRAGMA user_version=4;
"""


def _as_version_4(store_root: Path) -> None:
    """Turn the store's index into the one the previous version wrote for these runs."""
    new = sqlite3.connect(store_root / "index.sqlite")
    runs = new.execute("SELECT id, project, name, status, created, ended, duration, tags, "
                       "notes, hidden, host, git_head, git_branch, git_dirty, snapshot, "
                       "signature, error, loops, author, origin FROM runs").fetchall()
    args = new.execute("SELECT * FROM args").fetchall()
    metrics = new.execute("SELECT * FROM metrics").fetchall()
    new.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store_root / 'index.sqlite'}{suffix}").unlink(missing_ok=True)
    old = sqlite3.connect(store_root / "index.sqlite")
    old.executescript(_SCHEMA_4)
    for rec in runs:
        meta = (store_root / "runs" / rec[0] / "run.json").read_text()
        old.execute("INSERT INTO runs VALUES (" + ",".join("?" * 21) + ")",
                    (*rec[:16], meta, *rec[16:]))
    old.executemany("INSERT INTO args VALUES (?,?,?,?)", args)
    old.executemany("INSERT INTO metrics VALUES (?,?,?,?,?,?,?,?,?,?,?)", metrics)
    old.commit()
    old.close()


def test_an_index_of_the_previous_version_is_migrated_in_place(store_dir, monkeypatch):
    ids = _family()
    hostile = _run(range(2), name="hostile")
    hostile_meta = store_dir / "runs" / hostile / "run.json"
    _replace_json(hostile_meta, {**json.loads(hostile_meta.read_text()),
                                 "fork_of": {"run": "../x", "step": 1}})
    expected = Store(store_dir).runs()
    _as_version_4(store_dir)
    # Migrated, not rebuilt: no run is read again (every signature still holds).
    monkeypatch.setattr("flowillower.store.index.read_row", lambda *a: pytest.fail("re-read"))
    store = Store(store_dir)
    assert store.sync() == 0
    assert store.runs() == expected
    assert {r["name"]: r["fork_of"] for r in expected}["gen2"] == {"run": ids["gen1"],
                                                                   "step": 7}
    conn = sqlite3.connect(store_dir / "index.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == index_schema.SCHEMA_VERSION
    columns = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    assert "meta" not in columns and {"fork_of", "fork_step"} <= columns
    assert conn.execute("SELECT name FROM sqlite_master WHERE type='index' AND name LIKE "
                        "'%_name'").fetchall() == []


def test_an_index_of_an_unknown_version_is_rebuilt(store_dir):
    ids = _family()
    expected = Store(store_dir).runs()
    conn = sqlite3.connect(store_dir / "index.sqlite")
    conn.execute("PRAGMA user_version=3")
    conn.execute("UPDATE runs SET name='stale'")
    conn.commit()
    conn.close()
    assert Store(store_dir).runs() == expected
    assert {r["name"] for r in expected} == set(ids)
