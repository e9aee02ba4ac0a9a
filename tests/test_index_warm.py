"""No cold index: runs record their own index row, readers take it instead of decoding.

Decoding a run's records goes through `RunReader.load`; the tests make it fail for the
runs whose rows must be enough, so a listing that is right proves nothing was scanned.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import fill_disk

import flowillower as fw
from flowillower.store import index_journal
from flowillower.store.catalog import Store
from flowillower.store.reader import RunReader

TRAIN = textwrap.dedent("""
    import os, sys, time
    import flowillower as fw
    store, name, mode, lr = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    fw.init(project="warm", name=name, dir=store, snapshot=False)
    fw.config({"lr": lr, "name_arg": name})
    for i in range(30):
        fw.log_metrics({"loss": lr / (i + 1), "acc": i / 30}, step=i)
    if mode != "plain":
        fw.flush()
        print("ready", flush=True)
    if mode == "hang":
        time.sleep(600)
    if mode == "together":  # finish when the test says go, with the other process
        while not os.path.exists(os.path.join(store, "go")):
            time.sleep(0.002)
    fw.finish()
""")


def _start(tmp_path: Path, store: Path, name: str, mode: str, lr: float) -> subprocess.Popen:
    script = tmp_path / "train.py"
    if not script.exists():  # once: rewriting it could hand a starting child half a file
        script.write_text(TRAIN)
    return subprocess.Popen([sys.executable, str(script), str(store), name, mode, str(lr)],
                            cwd=tmp_path, stdout=subprocess.PIPE)


@pytest.fixture
def no_decoding(monkeypatch):
    """Make decoding fail for the run ids added to the returned set; records the ids
    that were decoded anyway."""
    forbidden: set[str] = set()
    decoded: list[str] = []
    real_load = RunReader.load

    def load(self, names=None):
        decoded.append(self.id)
        if self.id in forbidden:
            raise AssertionError(f"run {self.id} was decoded although its row holds")
        return real_load(self, names)

    monkeypatch.setattr(RunReader, "load", load)
    return forbidden, decoded


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


def _expected_loss(lr: float) -> dict:
    return {"last": lr / 30, "min": lr / 30, "max": lr, "count": 30, "last_step": 29}


def test_finished_runs_are_listed_from_their_rows_without_decoding(tmp_path, no_decoding):
    store_root = tmp_path / ".flowillower"
    forbidden, decoded = no_decoding
    plain = [_start(tmp_path, store_root, f"plain{i}", "plain", 0.1 * (i + 1)) for i in range(2)]
    together = [_start(tmp_path, store_root, f"together{i}", "together", 0.5 + i)
                for i in range(2)]
    killed = _start(tmp_path, store_root, "killed", "hang", 0.9)
    for proc in together + [killed]:
        assert proc.stdout.readline().strip() == b"ready"
    (store_root / "go").write_text("")  # the two finish at the same time
    for proc in plain + together:
        assert proc.wait(timeout=120) == 0
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)

    runs = {p.name: p for p in (store_root / "runs").iterdir()}
    rows = {}
    for run_id, path in runs.items():
        rows[run_id] = json.loads((path / index_journal.ROW_FILE).read_text())
    by_status = sorted(doc["status"] for doc in rows.values())
    assert by_status == ["running"] + ["success"] * 4  # the killed run's row: from its start
    forbidden.update(run_id for run_id, doc in rows.items() if doc["status"] == "success")

    listed = _by_name(Store(store_root).runs())
    assert set(listed) == {"plain0", "plain1", "together0", "together1", "killed"}
    for name, lr in (("plain0", 0.1), ("plain1", 0.2), ("together0", 0.5),
                     ("together1", 1.5)):
        row = listed[name]
        assert row["status"] == "success" and row["project"] == "warm"
        assert row["args"] == {"lr": lr, "name_arg": name}
        loss = {k: row["metrics"]["loss"][k] for k in _expected_loss(lr)}
        assert loss == pytest.approx(_expected_loss(lr))
        assert row["metrics"]["acc"]["last"] == pytest.approx(29 / 30)
        assert row["duration"] > 0
    # Only the killed run was decoded: its row could not know its values.
    assert set(decoded) == {listed["killed"]["id"]}
    assert listed["killed"]["status"] == "killed"
    assert listed["killed"]["metrics"]["loss"]["count"] == 30


def _finished_run(store_root: Path, name: str = "r", lr: float = 0.3) -> fw.Run:
    run = fw.init(project="warm", name=name, dir=str(store_root), snapshot=False)
    fw.config({"lr": lr})
    for i in range(30):
        fw.log_metrics({"loss": lr / (i + 1)}, step=i)
    fw.finish()
    return run


def _check_listed(store_root: Path, lr: float = 0.3) -> dict:
    [row] = Store(store_root).runs()
    assert row["status"] == "success" and row["args"] == {"lr": lr}
    loss = {k: row["metrics"]["loss"][k] for k in _expected_loss(lr)}
    assert loss == pytest.approx(_expected_loss(lr))
    return row


def test_a_run_without_a_row_is_scanned_as_before(tmp_path, no_decoding):
    _, decoded = no_decoding
    run = _finished_run(tmp_path / ".flowillower")
    assert decoded == []  # finish records its row without reading the run back
    (run.dir / index_journal.ROW_FILE).unlink()  # as an older version left it
    _check_listed(tmp_path / ".flowillower")
    assert decoded == [run.id]


@pytest.mark.parametrize("damage", ["truncated", "not json", "a list", "wrong types",
                                    "another run's id", "stale files"])
def test_a_damaged_or_stale_row_is_ignored_and_the_run_scanned(tmp_path, no_decoding, damage):
    _, decoded = no_decoding
    run = _finished_run(tmp_path / ".flowillower")
    path = run.dir / index_journal.ROW_FILE
    text = path.read_text()
    doc = json.loads(text)
    if damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "not json":
        path.write_bytes(b"\xff\x00garbage")
    elif damage == "a list":
        path.write_text("[1, 2]")
    elif damage == "wrong types":
        doc["metrics"][0][3] = "thirty"
        path.write_text(json.dumps(doc))
    elif damage == "another run's id":
        doc["id"] = "20000101-000000-deadbeef"
        path.write_text(json.dumps(doc))
    else:  # values logged after the row was written (e.g. a replay added a file)
        (run.dir / "replays").mkdir()
        shutil.copy(run.dir / "data.fwl", run.dir / "replays" / "r1.fwl")
    row = Store(tmp_path / ".flowillower").runs()[0]
    assert decoded == [run.id]
    if damage == "stale files":  # the replay's values count too: scanned, not the row
        assert row["metrics"]["loss"]["count"] == 60 and row["metrics"]["loss"]["replayed"]
    else:
        _check_listed(tmp_path / ".flowillower")


def test_a_row_the_summary_contradicts_loses_to_the_summary(tmp_path, no_decoding):
    forbidden, decoded = no_decoding
    original = _finished_run(tmp_path / ".flowillower")
    # The run arrives elsewhere (a teammate's copy, tar or git: new inode and ctime),
    # its row edited to lie about the values its summary also holds.
    copy_root = tmp_path / "other" / ".flowillower"
    shutil.copytree(tmp_path / ".flowillower", copy_root, copy_function=shutil.copy2)
    run_dir = copy_root / "runs" / original.id
    path = run_dir / index_journal.ROW_FILE
    honest = json.loads(path.read_text())
    forbidden.add(original.id)
    _check_listed(copy_root)  # an honest row is checked against the summary and kept
    for lie in ("status", "last", "args", "extra metric", "ended"):
        doc = json.loads(json.dumps(honest))
        if lie == "status":
            doc["status"] = "failed"
        elif lie == "last":
            doc["metrics"][0][4] = "0.0"
        elif lie == "args":
            doc["args"] = [["lr", "9.9"]]
        elif lie == "extra metric":
            doc["metrics"].append(["acc", "metric", "float", 1, "1.0", 1.0, 1.0, 0, False])
        else:
            doc["ended"] = doc["ended"] + 3600
        # Replaced as a pull or a writer would (a new file): the index sees the change.
        tmp = run_dir / "row.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
        forbidden.clear()
        decoded.clear()
        row = _check_listed(copy_root)
        assert decoded == [original.id], lie
        assert "acc" not in row["metrics"] and row["duration"] < 3600, lie


def test_a_finished_run_whose_row_still_says_running_is_scanned(tmp_path, no_decoding):
    _, decoded = no_decoding
    run = fw.init(project="warm", name="r", dir=str(tmp_path / ".flowillower"), snapshot=False)
    fw.config({"lr": 0.3})
    run.ensure_on_disk()
    start_row = (run.dir / index_journal.ROW_FILE).read_text()
    for i in range(30):
        fw.log_metrics({"loss": 0.3 / (i + 1)}, step=i)
    fw.finish()
    decoded.clear()
    (run.dir / index_journal.ROW_FILE).write_text(start_row)  # finish could not replace it
    _check_listed(tmp_path / ".flowillower")
    assert decoded == [run.id]


def test_pulled_runs_are_indexed_by_id_and_get_a_row(tmp_path, no_decoding):
    forbidden, _ = no_decoding
    run = _finished_run(tmp_path / ".flowillower")
    (run.dir / index_journal.ROW_FILE).unlink()  # rows never travel with a pull
    store = Store(tmp_path / ".flowillower")
    assert store.index.add_runs([run.id, "../etc", "", ".hidden", "missing"]) == 1
    assert (run.dir / index_journal.ROW_FILE).exists()
    [row] = store.index.run_rows()
    assert row["id"] == run.id and row["metrics"]["loss"]["count"] == 30
    assert store.sync() == 0  # the same signature as a full sync would take
    forbidden.add(run.id)
    assert store.index.rebuild() == 1  # from the row now
    _check_listed(tmp_path / ".flowillower")


def test_a_full_disk_at_finish_leaves_the_row_out_and_nothing_else(tiny_disk):
    store_root = tiny_disk / ".flowillower"
    run = fw.init(project="disk", dir=str(store_root), snapshot=False)
    fw.config({"lr": 0.3})
    for i in range(30):
        fw.log_metrics({"loss": 0.3 / (i + 1)}, step=i)
    run.flush()
    spare = tiny_disk / "spare"
    spare.write_bytes(b"\0" * 4096)  # room for run.json and summary.json, not the row
    assert (run.dir / index_journal.ROW_FILE).exists()  # the start row
    ballast = fill_disk(tiny_disk)
    spare.unlink()
    fw.finish()  # no exception, no warning needed: the row is optional
    assert run.status == "success"
    assert json.loads((run.dir / "summary.json").read_text())["status"] == "success"
    assert not (run.dir / index_journal.ROW_FILE).exists()
    assert not [p for p in os.listdir(run.dir) if p.endswith(".tmp")]
    ballast.unlink()  # room for the index itself
    _check_listed(store_root)


def test_the_first_page_loads_only_its_runs_and_matches_the_full_listing(tmp_path):
    store_root = tmp_path / ".flowillower"
    runs = [_finished_run(store_root, name=f"r{i}", lr=0.1 * (i + 1)) for i in range(5)]
    Store(store_root).annotate(runs[3].id, hidden=True)
    full = Store(store_root).runs(include_hidden=False)
    assert [r["name"] for r in full] == ["r4", "r2", "r1", "r0"]  # newest first
    for limit in (0, 1, 3, 10):
        page = Store(store_root).runs(include_hidden=False, limit=limit)  # a cold process
        assert page == full[:limit], limit
    everything = Store(store_root).runs(limit=2)
    assert [r["name"] for r in everything] == ["r4", "r3"]
    assert everything[0]["metrics"]["loss"]["count"] == 30
    assert everything[1]["args"] == {"lr": pytest.approx(0.4)}
    picked = Store(store_root).runs(lambda r: r["args"]["lr"] < 0.25, limit=1)
    assert [r["name"] for r in picked] == ["r1"]


def test_a_run_of_any_size_gets_its_row_without_being_read_back(tmp_path, no_decoding):
    forbidden, decoded = no_decoding
    run = fw.init(project="warm", name="big", dir=str(tmp_path / ".flowillower"),
                  snapshot=False)
    fw.config({"lr": 0.3})
    for i in range(200_000):  # 600,000 floats, ~2 MB of frames
        fw.log_metrics({"loss": 0.3 / (i + 1), "a": 1.0, "b": float(i)}, step=i)
    fw.finish()
    assert decoded == []  # finish did not read it back
    forbidden.add(run.id)
    [row] = Store(tmp_path / ".flowillower").runs()  # and readers need not either
    assert row["metrics"]["b"]["count"] == 200_000 and row["metrics"]["b"]["max"] == 199_999
    assert row["metrics"]["loss"]["last_step"] == 199_999
