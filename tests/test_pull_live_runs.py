"""A run pulled while it was running stays current: its later run.json, summary and notes
arrive with the next pull, through a real bare remote between two real stores. A newer
version from the run's own remote may replace files of it, but never values already here,
never a run made here and never a pulled run changed here."""

from __future__ import annotations

import json
import subprocess

import pytest

import flowillower as fw
from flowillower.gitops.sync import pull, push
from flowillower.store.catalog import Store
from flowillower.store.format import encode_frame
from flowillower.store.reader import RunReader
from tests.conftest_git import bare_remote, git, isolate_home, make_repo, tree_files

REF = "refs/flowillower/runs/"


@pytest.fixture
def team(tmp_path, monkeypatch):
    """Alice's store, Bob's store and their bare remote."""
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "main")
    remote = bare_remote(tmp_path / "team.git")
    return repo / ".flowillower", tmp_path / "bob" / ".flowillower", str(remote)


def _same(bob, alice, run_id: str) -> None:
    mine = tree_files(alice / "runs" / run_id, skip=("checkpoints",))
    theirs = tree_files(bob / "runs" / run_id)
    for rel in ("run.json", "summary.json", "summary.seg1.json", "data.fwl",
                "data.seg2.fwl"):
        assert theirs.get(rel) == mine.get(rel), rel


def test_a_run_pulled_while_running_reads_finished_after_the_next_pull(team):
    alice, bob, remote = team
    run = fw.init(id="live-run", dir=alice, snapshot=False, name="warming-up")
    for step in range(5):
        fw.log("loss", 1.0 / (step + 1), step=step)
    fw.flush()
    push(alice, remote)
    assert pull(bob, remote)["runs_added"] == 1
    assert RunReader(bob / "runs" / run.id).status == "running"
    assert fw.runs(dir=bob).set_index("run_id").loc[run.id, "status"] == "running"

    for step in range(5, 10):
        fw.log("loss", 1.0 / (step + 1), step=step)
    Store(alice).annotate(run.id, notes="converged", tags=["keep"])  # its author's note
    fw.finish()
    push(alice, remote)
    got = pull(bob, remote)
    assert got["refused"] == {} and got["runs_updated"] == 1, got
    theirs = RunReader(bob / "runs" / run.id)
    assert theirs.status == "success"
    assert theirs.summary == RunReader(run.dir).summary
    assert theirs.load().series["loss"].values.tolist() == [1.0 / (s + 1) for s in range(10)]
    _same(bob, alice, run.id)
    assert (tree_files(bob / "runs" / run.id, skip=("heartbeat", "index-row")).keys()
            == tree_files(run.dir, skip=("checkpoints", "heartbeat", "index-row")).keys())
    row = fw.runs(dir=bob).set_index("run_id").loc[run.id]
    assert row["status"] == "success"


def test_a_run_resumed_after_it_failed_drops_its_stale_summary(team):
    alice, bob, remote = team
    run = fw.init(id="preempted", dir=alice, snapshot=False)
    for step in range(4):
        fw.log("loss", float(step), step=step)
    fw.finish("failed")
    push(alice, remote)
    pull(bob, remote)
    assert RunReader(bob / "runs" / run.id).status == "failed"

    fw.init(id="preempted", dir=alice, resume="must", snapshot=False)
    for step in range(2, 6):
        fw.log("loss", 10.0 + step, step=step)
    fw.flush()
    push(alice, remote)
    got = pull(bob, remote)
    assert got["refused"] == {}, got
    here = bob / "runs" / run.id
    assert not (here / "summary.json").exists()  # set aside by the resume, there and here
    assert json.loads((here / "summary.seg1.json").read_text())["status"] == "failed"
    assert RunReader(here).status == "running"
    assert fw.runs(dir=bob).set_index("run_id").loc[run.id, "status"] == "running"

    fw.finish()
    push(alice, remote)
    assert pull(bob, remote)["refused"] == {}
    assert RunReader(here).status == "success"
    assert RunReader(here).load().series["loss"].values.tolist() == [0.0, 1.0] + [
        10.0 + s for s in range(2, 6)]
    _same(bob, alice, run.id)
    assert fw.runs(dir=bob).set_index("run_id").loc[run.id, "status"] == "success"


def _commit_over(remote: str, run_id: str, changes: dict[str, bytes]) -> None:
    """A newer version of `run_id` on the remote, made with plumbing as anyone with push
    access could: the current tree with `changes` written over it."""
    work = subprocess.run(["git", "--git-dir", remote, "rev-parse", REF + run_id],
                          capture_output=True, check=True).stdout.decode().strip()
    env_index = f"{remote}/hostile-index"
    env = {"GIT_INDEX_FILE": env_index, "PATH": "/usr/bin:/bin"}

    def plumb(*args: str, data: bytes | None = None) -> str:
        return subprocess.run(["git", "--git-dir", remote, *args], input=data, env=env,
                              capture_output=True, check=True).stdout.decode().strip()

    plumb("read-tree", work)
    for rel, content in changes.items():
        blob = plumb("hash-object", "-w", "--stdin", data=content)
        plumb("update-index", "--add", "--cacheinfo", f"100644,{blob},{rel}")
    tree = plumb("write-tree")
    commit = git(remote, "commit-tree", tree, "-p", work, "-m", "newer")
    git(remote, "update-ref", REF + run_id, commit.strip())


def test_a_newer_version_cannot_rewrite_values_or_a_finished_summary(team):
    alice, bob, remote = team
    run = fw.init(id="finished", dir=alice, snapshot=False)
    fw.log("loss", 0.5, step=0)
    fw.finish()
    push(alice, remote)
    pull(bob, remote)
    here = bob / "runs" / run.id
    before = tree_files(here)
    meta = json.loads(before["run.json"])
    forged = encode_frame(keys={0: ("loss", "metric")})
    _commit_over(remote, run.id, {
        "data.fwl": forged,  # not an extension of the values we have
        "summary.json": json.dumps({"status": "success", "last": {"loss": 0.0}}).encode(),
        "run.json": json.dumps({**meta, "user": "mallory"}).encode(),
        "notes/20990101T000000.json": b'{"notes": "a later note"}'})
    got = pull(bob, remote)
    refused = dict(map(tuple, got["refused"][run.id]))
    assert set(refused) == {"data.fwl", "summary.json", "run.json"}
    assert "does not extend" in refused["data.fwl"]
    assert "finished" in refused["summary.json"]
    assert "who made" in refused["run.json"]
    after = tree_files(here)
    for rel in ("data.fwl", "summary.json", "run.json"):
        assert after[rel] == before[rel]
    assert after["notes/20990101T000000.json"] == b'{"notes": "a later note"}'


def test_a_pulled_run_changed_here_and_a_run_made_here_are_only_joined(team):
    alice, bob, remote = team
    theirs = fw.init(id="theirs", dir=alice, snapshot=False, name="before")
    fw.log("loss", 1.0, step=0)
    fw.flush()
    push(alice, remote)
    pull(bob, remote)
    mine = fw.init(id="mine", dir=bob, snapshot=False, name="bobs")
    fw.log("loss", 2.0, step=0)
    fw.flush()
    push(bob, remote)
    here = bob / "runs" / theirs.id
    Store(bob).annotate(theirs.id, notes="bob was here")  # Bob's note: changed here
    (note,) = (here / "notes").iterdir()
    run_json = (here / "run.json").read_bytes()

    fw.finish()  # Bob's run ends here; a teammate then pushes a "newer" version of it
    mine_before = tree_files(bob / "runs" / mine.id)
    _commit_over(remote, mine.id, {"summary.json": b'{"status": "failed"}',
                                   "run.json": json.dumps({"id": mine.id}).encode()})
    fw.init(id="theirs", dir=alice, resume="must", snapshot=False, name="after")
    fw.log("loss", 3.0, step=1)
    fw.finish()
    push(alice, remote)
    got = pull(bob, remote)
    assert tree_files(bob / "runs" / mine.id) == mine_before  # ours: never replaced
    assert (here / "run.json").read_bytes() == run_json  # changed here: joined only
    assert json.loads(note.read_text()) == {"notes": "bob was here"}
    assert (here / "data.seg2.fwl").exists()  # what it lacked still arrives
    assert got["runs_updated"] >= 1
