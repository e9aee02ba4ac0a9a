"""Pushing and pulling many runs costs what changed: only new or changed runs are read,
committed and offered; commits are built by one git process, not a chain per run; the
record of past pushes is a hint that can never cause a wrong push."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import flowillower.gitops.repo as repo
import flowillower.gitops.runcommits as runcommits
from flowillower.gitops.sync import pull, push
from tests.conftest_git import bare_remote, git, isolate_home, make_run, record_file, store_ref

REF = "refs/flowillower/runs/"
PAST = time.time() - 3600


def settle(run_dir: Path) -> None:
    """Date every file of a run an hour back: a finished run, not one being written."""
    for path in run_dir.rglob("*"):
        os.utime(path, (PAST, PAST), follow_symlinks=False)


def run_id(i: int) -> str:
    return f"20261124-{i:06d}-{i:08x}"


@pytest.fixture
def store(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    root = tmp_path / "alice" / ".flowillower"
    for i in range(30):
        settle(make_run(root, run_id(i), None))
    return root


def received(remote: Path) -> list[str]:
    """Run refs the remote's receive-pack updated, as its post-receive hook logged them
    (the run catalog ref, updated after the runs, is counted by test_pull_catalog.py)."""
    log = remote / "received.log"
    return [ref for ref in (log.read_text().split() if log.exists() else [])
            if ref.startswith(REF)]


def log_receives(remote: Path) -> None:
    hook = remote / "hooks" / "post-receive"
    hook.write_text(f"#!/bin/sh\nwhile read old new ref; do echo $ref >> {remote}/received.log;"
                    " done\n")
    hook.chmod(0o755)


def count_hashed(monkeypatch) -> list[str]:
    """Run ids whose files a push reads (hashes) to build a commit."""
    seen: list[str] = []
    real = runcommits.hash_files

    def spy(files, algo):
        seen.append(Path(files[0][2]).parent.name if files else "?")
        return real(files, algo)

    monkeypatch.setattr(runcommits, "hash_files", spy)
    return seen


def test_push_offers_only_new_and_changed_runs(store, tmp_path, monkeypatch):
    remote = bare_remote(tmp_path / "remote.git")
    log_receives(remote)
    # a run's own index row is this machine's (inode, ctime): it never travels
    (store / "runs" / run_id(2) / "index-row.json").write_text("{}")
    first = push(store, str(remote))
    assert (first["new"], first["updated"], first["up_to_date"], first["runs"]) == (30, 0, 0, 30)
    assert len(received(remote)) == 30
    assert (store / "local" / "push" / "commits.json").is_file()
    assert "index-row.json" not in store_ref(remote, "ls-tree", "--name-only",
                                             REF + run_id(2)).split()

    settle(make_run(store, run_id(99), None))
    replay = store / "runs" / run_id(3) / "replays" / "r1.fwl"
    replay.parent.mkdir()
    replay.write_bytes(record_file("r1"))
    settle(replay.parent.parent)
    hashed = count_hashed(monkeypatch)
    again = push(store, str(remote))
    assert (again["new"], again["updated"], again["up_to_date"]) == (1, 1, 29)
    assert again["pushed"] == 2 and again["runs"] == 31
    assert sorted(hashed) == sorted([run_id(99), run_id(3)])  # the other 29 not even read
    assert received(remote)[30:] == sorted([REF + run_id(3), REF + run_id(99)])
    assert "replays/r1.fwl" in store_ref(remote, "ls-tree", "-r", "--name-only",
                                         REF + run_id(3)).split()
    hashed.clear()
    third = push(store, str(remote))
    assert (third["pushed"], third["up_to_date"], third["attempts"], hashed) == (0, 31, 0, [])


def test_a_damaged_or_lying_push_record_only_costs_time(store, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    push(store, str(remote))
    state = store / "local" / "push" / "commits.json"
    truth = {rid: store_ref(store / "git", "rev-parse", REF + rid) for rid in
             (run_id(0), run_id(1))}
    # A record naming another run's commit for run 0 (its fingerprint right): not used.
    record = json.loads(state.read_text())
    record["runs"][run_id(0)]["commit"] = truth[run_id(1)]
    state.write_text(json.dumps(record))
    (store / "runs" / run_id(0) / "notes").mkdir()
    (store / "runs" / run_id(0) / "notes" / "n.json").write_text('{"notes": "x"}')
    result = push(store, str(remote))
    assert (result["updated"], result["up_to_date"]) == (1, 29)
    tip = store_ref(remote, "rev-parse", REF + run_id(0))
    assert store_ref(remote, "rev-parse", tip + "^") == truth[run_id(0)]  # its own history
    # Half a file, garbage, a folder in its place: rebuilt, same commits, nothing pushed.
    for damage in ("{", "\0\xff", None):
        if damage is None:
            state.unlink()
            state.mkdir()
        else:
            state.write_text(damage)
        result = push(store, str(remote))
        assert (result["pushed"], result["up_to_date"], result["rejected"]) == (0, 30, [])
        if damage is None:
            state.rmdir()


def test_run_commits_are_the_ones_plain_git_makes(tmp_path, monkeypatch):
    """fast-import's commit for a folder (nested folders, an executable, odd names) is the
    very commit `update-index` + `write-tree` + `commit-tree` make, so machines running
    any version agree on a run's commit."""
    isolate_home(monkeypatch, tmp_path)
    root = tmp_path / "s" / ".flowillower"
    rid = run_id(7)
    extra = {"media/img/a b \"q\" é.png": b"x", "media/deep/er/still/1.txt": b"y",
             "artifacts/tool.sh": b"#!/bin/sh\n", "notes/1.json": b"{}"}
    run_dir = make_run(root, rid, None, extra)
    (run_dir / "artifacts" / "tool.sh").chmod(0o755)
    push(root, str(bare_remote(tmp_path / "r.git")))
    ours = store_ref(root / "git", "rev-parse", REF + rid)

    files = sorted(p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*")
                   if p.is_file() and not p.relative_to(run_dir).as_posix().startswith(
                       "checkpoints/"))
    plain = tmp_path / "plain.git"
    git(tmp_path, "init", "-q", "--bare", str(plain))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
               "GIT_INDEX_FILE": f"{tmp}/index", **repo.IDENTITY,
               "GIT_AUTHOR_DATE": repo.FIXED_DATE, "GIT_COMMITTER_DATE": repo.FIXED_DATE}
        base = ["git", f"--git-dir={plain}", f"--work-tree={run_dir}"]
        subprocess.run([*base, "update-index", "--add", "-z", "--stdin"], cwd=run_dir,
                       env=env, check=True, input="".join(f + "\0" for f in files).encode())
        tree = subprocess.run([*base, "write-tree"], env=env, check=True,
                              capture_output=True, text=True).stdout.strip()
        commit = subprocess.run([*base, "commit-tree", tree, "-m", f"flowillower run {rid}"],
                                env=env, check=True, capture_output=True, text=True
                                ).stdout.strip()
    assert ours == commit
    assert "100755 blob" in store_ref(root / "git", "ls-tree", REF + rid, "artifacts/tool.sh")


def test_a_run_being_written_is_committed_again_when_it_grew(store, tmp_path):
    remote = bare_remote(tmp_path / "remote.git")
    live = store / "runs" / run_id(5)
    data = live / "data.fwl"
    head = data.read_bytes()
    data.write_bytes(head[:len(head) // 2])  # still being written: fresh mtime
    push(store, str(remote))
    entry = json.loads((store / "local/push/commits.json").read_text())["runs"]
    assert run_id(5) not in entry and run_id(6) in entry  # not trusted while it may change
    old = store_ref(remote, "rev-parse", REF + run_id(5))
    data.write_bytes(head)
    result = push(store, str(remote))
    assert (result["updated"], result["up_to_date"]) == (1, 29)
    assert store_ref(remote, "rev-parse", REF + run_id(5) + "^") == old
    assert store_ref(remote, "cat-file", "-s", REF + run_id(5) + ":data.fwl") == str(len(head))


def test_push_and_pull_start_a_few_git_processes_not_a_chain_per_run(store, tmp_path,
                                                                     monkeypatch):
    remote = bare_remote(tmp_path / "remote.git")
    started: list[str] = []
    real_popen = repo.subprocess.Popen

    class Popen(real_popen):  # type: ignore[misc,valid-type]
        """Notes our git commands (`git --no-optional-locks ...`) by their verb."""

        def __init__(self, cmd, *args, **kwargs):
            if cmd[:2] == ["git", "--no-optional-locks"]:
                words = iter(cmd[2:])
                for word in words:
                    if word == "-c":
                        next(words)
                    elif not word.startswith("-"):
                        started.append(word)
                        break
            super().__init__(cmd, *args, **kwargs)

    monkeypatch.setattr(repo.subprocess, "Popen", Popen)
    assert push(store, str(remote))["new"] == 30
    assert len(started) <= 12, started  # was 4 per run (~120) before
    started.clear()
    got = pull(tmp_path / "bob" / ".flowillower", str(remote))
    assert (got["runs_added"], got["files_added"], got["refused"]) == (30, 120, {})
    assert len(started) <= 14, started  # was 2 per run (~60) before


def test_many_refs_go_as_one_pattern_or_in_chunks(store, tmp_path, monkeypatch):
    """Thousands of runs: sent as one refspec pattern when it names exactly the runs being
    pushed, else in chunks of named refs (a command line has a length limit). Shown here
    with chunks of 4."""
    import flowillower.gitops.sync as sync

    monkeypatch.setattr(sync, "_CHUNK", 4)
    remote = bare_remote(tmp_path / "remote.git")
    some = [run_id(i) for i in range(10)]
    assert push(store, str(remote), run_ids=some)["new"] == 10  # no other refs yet: pattern
    other = [run_id(i) for i in range(10, 20)]
    assert push(store, str(remote), run_ids=other)["new"] == 10  # named refs, 3 chunks
    everything = push(store, str(remote))  # pattern again: every ref here is selected
    assert (everything["new"], everything["up_to_date"], everything["rejected"]) == (10, 20, [])
    assert len(store_ref(remote, "for-each-ref", REF).splitlines()) == 30
    # A run deleted here keeps its ref until gc: the pattern would send it, so named refs go.
    shutil.rmtree(store / "runs" / run_id(0))
    fresh = bare_remote(tmp_path / "fresh.git")
    assert push(store, str(fresh))["new"] == 29
    sent = store_ref(fresh, "for-each-ref", "--format=%(refname)", REF).split()
    assert len(sent) == 29 and REF + run_id(0) not in sent
    bob = tmp_path / "bob" / ".flowillower"
    assert pull(bob, str(remote))["runs_added"] == 30
