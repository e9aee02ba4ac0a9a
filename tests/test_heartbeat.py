"""Heartbeats: live runs rewrite heartbeat.json; a run from another host whose heartbeat
is stale reads `lost` through `heartbeat.liveness`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import wait_for

import flowillower as fw
from flowillower import heartbeat
from flowillower.heartbeat import liveness, read_heartbeat
from flowillower.store.index_rows import run_status
from flowillower.store.provenance import mark_pulled


def _foreign_run(store: Path, run_id: str, created: float) -> Path:
    """A run folder as `pull` leaves it: written on another host, never finished here."""
    run_dir = store / "runs" / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(
        {"id": run_id, "host": "gpu-node-17", "pid": 4242, "created": created}))
    mark_pulled(store, run_id, "origin", host="gpu-node-17")
    return run_dir


def test_pulled_run_with_a_stale_heartbeat_reads_lost(tmp_path):
    store = tmp_path / ".flowillower"
    now = time.time()
    stale = _foreign_run(store, "r-stale", now - 7200)
    heartbeat.write_heartbeat(stale, 30.0, now=now - 600)
    fresh = _foreign_run(store, "r-fresh", now - 7200)
    heartbeat.write_heartbeat(fresh, 30.0, now=now - 20)
    # What the store reads (no summary, a pid on another host), then judged by heartbeat.
    assert liveness(stale, run_status(stale)) == "lost"
    assert liveness(fresh, run_status(fresh)) == "running"
    assert liveness(stale, "running", now=now) == "lost"
    assert liveness(fresh, "running", now=now) == "running"
    # Three intervals plus a minute of clock skew: 150 s for a 30 s heartbeat.
    assert liveness(fresh, "running", now=now + 129) == "running"
    assert liveness(fresh, "running", now=now + 131) == "lost"
    assert liveness(fresh, "running", now=now + 60, stale_after=30) == "lost"
    # Ended runs keep their status: only `running` can turn out to be lost.
    for status in ("success", "failed", "killed"):
        assert liveness(stale, status, now=now) == status


def test_foreign_run_without_heartbeat_is_judged_by_its_start(tmp_path):
    store = tmp_path / ".flowillower"
    now = time.time()
    old = _foreign_run(store, "r-old", now - 3600)
    young = _foreign_run(store, "r-young", now - 10)
    assert liveness(old, "running", now=now) == "lost"
    assert liveness(young, "running", now=now) == "running"


def test_hostile_heartbeat_is_ignored(tmp_path):
    store = tmp_path / ".flowillower"
    now = time.time()
    run_dir = _foreign_run(store, "r-hostile", now - 10)
    for text in ("not json", "[1, 2]", '{"time": "soon", "interval": 30}',
                 '{"time": 1e300, "interval": -1}', "{" * 100000):
        (run_dir / "heartbeat.json").write_text(text)
        assert read_heartbeat(run_dir) is None
        # Falls back on the start time (10 s ago): still running, never an exception.
        assert liveness(run_dir, "running", now=now) == "running"


def test_run_of_this_host_is_left_to_its_pid(tmp_path):
    """On the writer's own host the pid decides (`killed`); a slow beat is no death."""
    fw.init(project="hb")
    run = fw.current_run()
    fw.log("x", 1.0)
    heartbeat.write_heartbeat(run.dir, 0.1, now=time.time() - 3600)
    assert liveness(run.dir, "running") == "running"
    fw.finish()


def test_in_process_heartbeat_advances_and_its_thread_ends(tmp_path):
    run = fw.init(project="hb")
    assert heartbeat.attach(run, interval=0.05)
    fw.log("x", 1.0)
    first = wait_for(lambda: read_heartbeat(run.dir), what="first heartbeat")
    assert first["pid"] == os.getpid() and first["interval"] == 0.05
    wait_for(lambda: (read_heartbeat(run.dir) or first)["time"] > first["time"],
             what="a later heartbeat")
    fw.finish()
    wait_for(lambda: heartbeat.beating_thread() is None, timeout=30,
             what="the heartbeat thread to end with its last run")
    # No temporary file is left behind by the atomic replace.
    assert not [p for p in run.dir.iterdir() if p.name.endswith(".tmp")]


SCRIPT = """
    import sys, time
    from pathlib import Path
    import flowillower as fw
    fw.init(project="hb")
    i = 0
    while not Path(sys.argv[1]).exists():
        fw.log("loss", 1.0 / (i + 1), step=i)
        i += 1
        time.sleep(0.01)
"""


def test_subprocess_heartbeat_advances_and_kill_9_leaves_it_stale(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    stop = tmp_path / "stop"
    env = {**os.environ, "FLOWILLOWER_HEARTBEAT": "0.2"}
    proc = subprocess.Popen([sys.executable, str(script), str(stop)], cwd=tmp_path, env=env)
    try:
        runs = Path(os.environ["FLOWILLOWER_DIR"]) / ".flowillower" / "runs"
        run_dir = wait_for(lambda: next(iter(runs.glob("*/heartbeat.json")), None),
                           timeout=60, what="the script's heartbeat").parent
        first = read_heartbeat(run_dir)
        assert first is not None and first["pid"] == proc.pid
        wait_for(lambda: (read_heartbeat(run_dir) or first)["time"] > first["time"],
                 timeout=30, what="the heartbeat to advance")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        last = read_heartbeat(run_dir)
        assert last is not None
        killed_at = time.time()
        wait_for(lambda: time.time() > killed_at + 1.0, what="five missed beats")
        assert read_heartbeat(run_dir) == last  # nobody beats for a dead process
        assert run_status(run_dir) == "killed"  # this host: the pid says so
        # The same folder seen from another host (as a pull would bring it): lost.
        meta = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps({**meta, "host": "elsewhere"}))
        # Default: three beats plus a minute of clock skew; a tighter bound says lost now.
        assert liveness(run_dir, "running") == "running"
        assert liveness(run_dir, run_status(run_dir), stale_after=0.8) == "lost"
        assert liveness(run_dir, "running", now=last["time"] + 61) == "lost"
    finally:
        stop.touch()
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_the_table_the_cli_and_the_reader_show_lost(tmp_path):
    """The index, `flowillower ls --json` and `RunReader.status` all read a stale foreign
    run as `lost`; a fresh one stays `running`; a newer heartbeat pulled later revives it."""
    from click.testing import CliRunner

    from flowillower.cli import main as cli_main
    from flowillower.store.catalog import Store
    from flowillower.store.reader import RunReader

    store = tmp_path / ".flowillower"
    now = time.time()
    stale = _foreign_run(store, "r-stale", now - 7200)
    heartbeat.write_heartbeat(stale, 30.0, now=now - 600)
    fresh = _foreign_run(store, "r-fresh", now - 7200)
    heartbeat.write_heartbeat(fresh, 30.0, now=now - 5)
    assert {r["id"]: r["status"] for r in Store(store).runs()} == {
        "r-stale": "lost", "r-fresh": "running"}
    assert RunReader(stale).status == "lost" and RunReader(fresh).status == "running"
    out = CliRunner().invoke(cli_main, ["ls", "--json", "--dir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert {r["id"]: r["status"] for r in json.loads(out.output)} == {
        "r-stale": "lost", "r-fresh": "running"}
    # The teammate's machine is alive after all: a fresher heartbeat arrives (by pull,
    # which rewrites a pulled run's heartbeat.json): the next listing says running.
    heartbeat.write_heartbeat(stale, 30.0, now=time.time())
    assert {r["id"]: r["status"] for r in Store(store).runs()}["r-stale"] == "running"


def test_pull_brings_a_newer_heartbeat_of_a_pulled_run(tmp_path, monkeypatch):
    """A pulled run's heartbeat.json is the one file pull rewrites (a live teammate's run
    beats on): a second pull replaces it; a run of our own keeps its own."""
    from flowillower.gitops.sync import pull, push
    from tests.conftest_git import bare_remote, isolate_home, make_run

    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "remote.git")
    alice, bob = tmp_path / "alice" / ".flowillower", tmp_path / "bob" / ".flowillower"
    run_dir = make_run(alice, "20261125-000000-7e7e7e7e", None)
    (run_dir / "summary.json").unlink()  # still running on alice's machine
    heartbeat.write_heartbeat(run_dir, 30.0, now=1000.0)
    push(alice, str(remote))
    pull(bob, str(remote))
    mine = bob / "runs" / run_dir.name / "heartbeat.json"
    assert json.loads(mine.read_text())["time"] == 1000.0
    heartbeat.write_heartbeat(run_dir, 30.0, now=2000.0)
    push(alice, str(remote))
    pull(bob, str(remote))
    assert json.loads(mine.read_text())["time"] == 2000.0
    # Alice's own heartbeat is never replaced by what a remote holds.
    heartbeat.write_heartbeat(run_dir, 30.0, now=3000.0)
    pull(alice, str(remote))
    assert json.loads((run_dir / "heartbeat.json").read_text())["time"] == 3000.0
