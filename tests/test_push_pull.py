"""Sharing runs through a git remote: a teammate pulls them (code included), replays
fast-forward, pushes from two machines never conflict, and nothing leaks or is lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import flowillower as fw
from flowillower.errors import GitError
from flowillower.gitops.snapshot import checkout_snapshot, list_files, take_snapshot
from flowillower.gitops.sync import pull, push
from flowillower.store.format import frame_spans
from flowillower.store.reader import RunReader
from tests.conftest_git import (
    bare_remote,
    fingerprint,
    git,
    isolate_home,
    make_repo,
    make_run,
    record_file,
    status,
    store_ref,
    tree_files,
)

RUN_A = "20261123-120000-aaaaaaaa"
RUN_B = "20261123-120500-bbbbbbbb"
REF = "refs/flowillower/runs/"


@pytest.fixture
def alice(tmp_path, monkeypatch):
    """Alice's project (a dirty repo, no git identity) with two finished runs."""
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "dirty")
    store = repo / ".flowillower"
    snap = take_snapshot(repo, store / "git")
    make_run(store, RUN_A, snap, {"artifacts/model/w.bin": b"weights",
                                  "notes/2026.json": b'{"notes": "hi"}'})
    make_run(store, RUN_B, snap)
    return repo


def test_teammate_pulls_runs_and_their_code(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    before, status_before = fingerprint(alice), status(alice)
    result = push(alice / ".flowillower", str(remote))
    assert (result["runs"], result["pushed"], result["rejected"]) == (2, 2, [])
    assert fingerprint(alice) == before and status(alice) == status_before
    assert git(remote, "for-each-ref", "--format=%(refname)", REF).split() == [
        REF + RUN_A, REF + RUN_B]

    bob = tmp_path / "bob" / ".flowillower"  # a fresh store on another machine
    got = pull(bob, f"file://{remote}")
    assert (got["runs_added"], got["runs_updated"]) == (2, 0)
    for run_id in (RUN_A, RUN_B):
        local = ("checkpoints", "index-row.json")  # never travel (pull writes its own row)
        mine = tree_files(alice / ".flowillower/runs" / run_id, skip=local)
        assert tree_files(bob / "runs" / run_id, skip=local) == mine  # identical
        assert (bob / "runs" / run_id / "index-row.json").is_file()  # indexed at pull
    assert not (bob / "runs" / RUN_A / "checkpoints").exists()
    assert (bob / ".gitignore").exists()
    # The teammate can check out the code of a pulled run.
    sha = json.loads((bob / "runs" / RUN_A / "run.json").read_text())["git"]["snapshot"]
    code = checkout_snapshot(bob / "git", sha, tmp_path / "bob-code")
    assert (code / "lib" / "model.py").read_text() == "WIDTH = 128  # changed\n"
    assert sorted(list_files(bob / "git", sha)) == sorted(
        list_files(alice / ".flowillower/git", sha))
    # Pulling again brings nothing new; pushing again sends nothing.
    assert pull(bob, str(remote))["files_added"] == 0
    again = push(alice / ".flowillower", str(remote))
    assert (again["pushed"], again["up_to_date"]) == (0, 2)


def test_new_replay_fast_forwards(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    push(alice / ".flowillower", str(remote))
    old = git(remote, "rev-parse", REF + RUN_A).strip()
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(remote))

    replay = alice / ".flowillower/runs" / RUN_A / "replays" / "r1.fwl"
    replay.parent.mkdir()
    replayed = record_file("replay r1", key="grad_norm")
    replay.write_bytes(replayed)
    result = push(alice / ".flowillower", str(remote), run_ids=[RUN_A])
    assert (result["pushed"], result["rejected"]) == (1, [])
    new = git(remote, "rev-parse", REF + RUN_A).strip()
    assert new != old
    assert git(remote, "rev-parse", new + "^1").strip() == old  # parent: the old version
    got = pull(bob, str(remote))
    assert (got["runs_added"], got["runs_updated"], got["files_added"]) == (0, 1, 1)
    assert (bob / "runs" / RUN_A / "replays" / "r1.fwl").read_bytes() == replayed
    series = RunReader(bob / "runs" / RUN_A).load(["grad_norm"]).series["grad_norm"]
    assert series.replayed.all() and len(series.values) == 20
    # The same run pushed back from the teammate's machine is the same commit: a no-op.
    assert push(bob, str(remote))["rejected"] == []
    assert git(remote, "rev-parse", REF + RUN_A).strip() == new


def test_two_machines_add_files_to_one_run(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    push(alice / ".flowillower", str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(remote))
    for store, name in ((alice / ".flowillower", "a.fwl"), (bob, "b.fwl")):
        folder = store / "runs" / RUN_A / "replays"
        folder.mkdir()
        (folder / name).write_bytes(record_file(name))
    assert push(alice / ".flowillower", str(remote))["rejected"] == []
    alices = git(remote, "rev-parse", REF + RUN_A).strip()
    # Bob's push is rejected at first, fetches Alice's replay, and pushes a version with
    # both as parents (the union of both folders: nothing to merge).
    result = push(bob, str(remote))
    assert (result["rejected"], result["conflicts"], result["attempts"]) == ([], {}, 2)
    assert (result["updated"], result["up_to_date"]) == (1, 1)
    tip = git(remote, "rev-parse", REF + RUN_A).strip()
    assert alices in git(remote, "rev-list", "--parents", "-n", "1", tip).split()[1:]
    assert sorted(store_ref(remote, "ls-tree", "--name-only", tip + ":replays").split()) == [
        "a.fwl", "b.fwl"]
    pull(alice / ".flowillower", str(remote))
    for store in (alice / ".flowillower", bob):
        assert sorted(p.name for p in (store / "runs" / RUN_A / "replays").iterdir()) == [
            "a.fwl", "b.fwl"]


def test_pull_adds_but_never_overwrites(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    run = alice / ".flowillower/runs" / RUN_A
    data = run / "data.fwl"
    head = data.read_bytes()
    spans = list(frame_spans(head))
    assert len(spans) == 3
    data.write_bytes(head[:spans[1][1]])  # pushed while the run was still writing
    push(alice / ".flowillower", str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(remote))
    data.write_bytes(head)  # the run went on
    push(alice / ".flowillower", str(remote))
    (bob / "runs" / RUN_A / "run.json").write_text('{"edited": "by bob"}')
    pull(bob, str(remote))
    assert (bob / "runs" / RUN_A / "data.fwl").read_bytes() == head  # grown record file
    assert (bob / "runs" / RUN_A / "run.json").read_text() == '{"edited": "by bob"}'
    # A record file that is not a prefix of the remote one is left alone.
    (bob / "runs" / RUN_B / "data.fwl").write_bytes(b"XX")
    pull(bob, str(remote))
    assert (bob / "runs" / RUN_B / "data.fwl").read_bytes() == b"XX"


def test_large_artifacts_stay_unless_asked(alice, tmp_path, monkeypatch):
    import flowillower.gitops.sync as sync

    remote = bare_remote(tmp_path / "remote.git")
    # Under the limit (7 bytes against 50 MiB): pushed like any other file.
    assert push(alice / ".flowillower", str(remote))["skipped_large"] == []
    assert "artifacts/model/w.bin" in store_ref(remote, "ls-tree", "-r", "--name-only",
                                                REF + RUN_A).split()

    other = bare_remote(tmp_path / "other.git")
    monkeypatch.setattr(sync, "LARGE_ARTIFACT", 4)  # "weights" (7 bytes) counts as large
    result = push(alice / ".flowillower", str(other))
    assert result["skipped_large"] == [[RUN_A, "artifacts/model/w.bin", 7]]
    files = store_ref(other, "ls-tree", "-r", "--name-only", REF + RUN_A).split()
    assert "artifacts/model/w.bin" not in files and "checkpoints/epoch1.pt" not in files
    assert "notes/2026.json" in files and "data.fwl" in files  # the rest went
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(other))
    assert not (bob / "runs" / RUN_A / "artifacts").exists()
    assert (bob / "runs" / RUN_A / "notes" / "2026.json").read_bytes() == b'{"notes": "hi"}'

    assert push(alice / ".flowillower", str(other), include_large=True)["pushed"] == 1
    files = store_ref(other, "ls-tree", "-r", "--name-only", REF + RUN_A).split()
    assert "artifacts/model/w.bin" in files and "checkpoints/epoch1.pt" not in files
    assert pull(bob, str(other))["files_added"] == 1  # the artifact, byte for byte
    assert (bob / "runs" / RUN_A / "artifacts" / "model" / "w.bin").read_bytes() == b"weights"


def test_remote_by_name_is_read_from_the_users_repo(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    git(alice, "remote", "add", "origin", str(remote))
    before = fingerprint(alice)
    assert push(alice / ".flowillower", "origin")["pushed"] == 2
    assert pull(alice / ".flowillower", "origin")["files_added"] == 0
    assert fingerprint(alice) == before  # no remote, ref or config added to their repo
    with pytest.raises(GitError, match="no git remote named 'upstream'"):
        push(alice / ".flowillower", "upstream")


def test_errors_are_clear_and_hide_credentials(alice, tmp_path):
    with pytest.raises(GitError, match="push to .* failed") as err:
        push(alice / ".flowillower", "https://alice:s3cret-token@127.0.0.1:9/runs.git")
    assert "s3cret-token" not in str(err.value)
    with pytest.raises(GitError, match="fetching runs from"):
        pull(alice / ".flowillower", str(tmp_path / "missing.git"))
    with pytest.raises(GitError, match="no run"):
        push(alice / ".flowillower", str(bare_remote(tmp_path / "r.git")),
             run_ids=["20990101-000000-deadbeef"])
    config = (alice / ".flowillower" / "git" / "config").read_text()
    assert "s3cret" not in config and "remote" not in config  # nothing stored


def test_pulled_run_reads_back_the_same_values(alice, tmp_path, monkeypatch):
    """A real run (loops, args, text) pushed through a bare remote: the teammate reads the
    very values, steps and summary that were logged, not just the same file names."""
    monkeypatch.chdir(alice)
    monkeypatch.setenv("FLOWILLOWER_DIR", str(alice))
    run = fw.init(project="shared", name="sweep-3")
    fw.arg("lr", 0.01)
    for epoch in fw.loop("epoch", range(3)):
        for step in fw.loop("step", range(4)):
            fw.log("loss", 1 / (1 + 4 * epoch + step))
        fw.log("acc", 0.5 + epoch / 10)
    fw.log("comment", "résumé: converged")
    fw.finish()
    remote = bare_remote(tmp_path / "remote.git")
    assert push(alice / ".flowillower", str(remote), run_ids=[run.id])["pushed"] == 1

    bob = tmp_path / "bob" / ".flowillower"
    assert pull(bob, str(remote))["runs_added"] == 1
    theirs = RunReader(bob / "runs" / run.id)
    assert theirs.status == "success" and theirs.meta["name"] == "sweep-3"
    data = theirs.load().series
    assert data["loss"].values.tolist() == [1 / (1 + i) for i in range(12)]
    assert data["acc"].values.tolist() == [0.5, 0.6, 0.7]
    assert data["comment"].last() == "résumé: converged"
    assert theirs.summary == RunReader(run.dir).summary
    frame = fw.dataframe("lr", "loss", "acc", dir=bob)
    assert frame["run_id"].unique().tolist() == [run.id]
    assert frame[["epoch", "step"]].values.tolist() == [[e, s] for e in range(3)
                                                        for s in range(4)]
    assert frame["loss"].tolist() == [1 / (1 + i) for i in range(12)]
    assert frame["acc"].tolist() == [a for a in (0.5, 0.6, 0.7) for _ in range(4)]
    assert (frame["lr"] == 0.01).all()


def test_an_empty_replay_file_travels_too(alice, tmp_path):
    """A replay that has just started (its file still empty) is pushed and pulled as is."""
    remote = bare_remote(tmp_path / "remote.git")
    push(alice / ".flowillower", str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, str(remote))
    replay = alice / ".flowillower/runs" / RUN_A / "replays" / "r1.fwl"
    replay.parent.mkdir()
    replay.write_bytes(b"")
    assert push(alice / ".flowillower", str(remote))["rejected"] == []
    got = pull(bob, str(remote))
    assert got == {**got, "runs_added": 0, "files_added": 1}
    assert (bob / "runs" / RUN_A / "replays" / "r1.fwl").read_bytes() == b""


def test_fw_push_by_remote_name_and_clear_errors(alice, tmp_path):
    """The public `fw.push`: a remote name of the user's repo, an unknown name, a
    remote that is not there."""
    remote = bare_remote(tmp_path / "remote.git")
    git(alice, "remote", "add", "origin", str(remote))
    assert fw.push("origin", dir=alice)["runs"] == 2
    with pytest.raises(GitError, match="no git remote named 'upstream'"):
        fw.push("upstream", dir=alice)
    with pytest.raises(GitError, match="failed"):
        fw.push(str(tmp_path / "missing.git"), dir=alice)


def test_cli_push_pull(alice, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
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
    assert RUN_A[-4:] in listing and RUN_B[-4:] in listing  # the runs' names
