"""Sharing runs through a git remote: a teammate pulls them, replays travel, nothing
conflicts."""

from __future__ import annotations

import subprocess
import sys

import pytest

import flowillower as fw
from flowillower import api
from flowillower.errors import GitError
from flowillower.gitops.snapshot import checkout_snapshot
from flowillower.gitops.sync import pull, push
from flowillower.store.catalog import Store
from tests.conftest_git import record_file
from tests.gitrepos import make_repo


def _make_runs(project, monkeypatch, n=2):
    monkeypatch.chdir(project)
    ids = []
    for i in range(n):
        run = fw.init(project="shared", name=f"r{i}", dir=project)
        fw.arg("lr", 0.1 * (i + 1))
        for step in fw.loop("step", range(5)):
            fw.log("loss", 1.0 / (step + 1 + i))
        fw.finish()
        (run.dir / "checkpoints").mkdir()
        (run.dir / "checkpoints" / "ckpt.bin").write_bytes(b"local only")
        ids.append(run.id)
    api._current = None
    return ids


@pytest.fixture
def remote(tmp_path):
    path = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return path


def test_push_then_teammate_pulls(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    ids = _make_runs(alice, monkeypatch)
    result = push(alice / ".flowillower", str(remote))
    assert result["runs"] == 2 and result["rejected"] == []

    bob = tmp_path / "bob"
    bob.mkdir()
    got = pull(bob / ".flowillower", str(remote))
    assert got["runs_added"] == 2
    for run_id in ids:
        a, b = alice / ".flowillower/runs" / run_id, bob / ".flowillower/runs" / run_id
        a_files = {p.relative_to(a).as_posix(): p.read_bytes() for p in a.rglob("*")
                   if p.is_file() and "checkpoints" not in p.parts}
        b_files = {p.relative_to(b).as_posix(): p.read_bytes() for p in b.rglob("*")
                   if p.is_file()}
        assert a_files == b_files  # identical data, no checkpoints
    df = fw.dataframe("lr", "loss", dir=bob)
    assert len(df) == 10 and sorted(df["lr"].unique()) == [0.1, 0.2]
    # The teammate can read the code of a pulled run.
    store = Store(bob)
    sha = store.reader(ids[0]).meta["git"]["snapshot"]
    out = checkout_snapshot(store.git_dir, sha, tmp_path / "bob-code")
    assert (out / "train.py").exists()


def test_replay_files_fast_forward(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    ids = _make_runs(alice, monkeypatch, n=1)
    push(alice / ".flowillower", str(remote))
    bob = tmp_path / "bob"
    pull(bob / ".flowillower", str(remote))
    replay = alice / ".flowillower/runs" / ids[0] / "replays"
    replay.mkdir()
    (replay / "r1.fwl").write_bytes(b"")
    again = push(alice / ".flowillower", str(remote))
    assert again["rejected"] == []
    got = pull(bob / ".flowillower", str(remote))
    assert got == {**got, "runs_added": 0, "files_added": 1}
    assert (bob / ".flowillower/runs" / ids[0] / "replays" / "r1.fwl").exists()
    # Pushing the same run again from the other machine is a no-op, not a conflict.
    assert push(bob / ".flowillower", str(remote))["rejected"] == []


def test_pull_never_overwrites_local_files(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    ids = _make_runs(alice, monkeypatch, n=1)
    push(alice / ".flowillower", str(remote))
    notes = alice / ".flowillower/runs" / ids[0] / "run.json"
    original = notes.read_bytes()
    notes.write_bytes(b'{"id": "edited locally"}')
    pull(alice / ".flowillower", str(remote))
    assert notes.read_bytes() == b'{"id": "edited locally"}' != original


def test_remote_by_name_and_clear_errors(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    _make_runs(alice, monkeypatch, n=1)
    subprocess.run(["git", "-C", str(alice), "remote", "add", "origin", str(remote)], check=True)
    assert fw.push("origin", dir=alice)["runs"] == 1
    with pytest.raises(GitError, match="no git remote named 'upstream'"):
        fw.push("upstream", dir=alice)
    with pytest.raises(GitError, match="failed"):
        fw.push(str(tmp_path / "missing.git"), dir=alice)


def test_cli_push_pull(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    _make_runs(alice, monkeypatch, n=2)
    cli = [sys.executable, "-m", "flowillower"]
    subprocess.run([*cli, "push", str(remote), "--dir", str(alice)], check=True,
                   capture_output=True)
    bob = tmp_path / "bob"
    bob.mkdir()
    out = subprocess.run([*cli, "pull", str(remote), "--dir", str(bob), "--json"], check=True,
                         capture_output=True, text=True).stdout
    assert '"runs_added": 2' in out
    listing = subprocess.run([*cli, "ls", "--dir", str(bob)], check=True, capture_output=True,
                             text=True).stdout
    assert "r0" in listing and "r1" in listing


def test_two_machines_replay_the_same_run(tmp_path, monkeypatch, remote):
    alice = make_repo(tmp_path, "main")
    [run_id] = _make_runs(alice, monkeypatch, n=1)
    push(alice / ".flowillower", str(remote))
    bob = tmp_path / "bob"
    pull(bob / ".flowillower", str(remote))
    for who, name in ((alice, "a.fwl"), (bob, "b.fwl")):
        folder = who / ".flowillower/runs" / run_id / "replays"
        folder.mkdir()
        (folder / name).write_bytes(record_file(name))  # pull accepts intact frames only
    assert push(alice / ".flowillower", str(remote))["rejected"] == []
    assert push(bob / ".flowillower", str(remote))["rejected"] == [run_id]  # pull first
    pull(bob / ".flowillower", str(remote))
    assert push(bob / ".flowillower", str(remote))["rejected"] == []  # merged, no conflict
    pull(alice / ".flowillower", str(remote))
    replays = alice / ".flowillower/runs" / run_id / "replays"
    assert sorted(p.name for p in replays.iterdir()) == ["a.fwl", "b.fwl"]
