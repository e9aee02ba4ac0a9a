"""Many machines pushing to one remote at the same moment never lose a run: real
processes, one bare remote, pushes released together."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

from flowillower.gitops.sync import pull, push
from tests.conftest import wait_for
from tests.conftest_git import (
    bare_remote,
    git,
    isolate_home,
    make_run,
    record_file,
    store_ref,
)

REF = "refs/flowillower/runs/"
SHARED = "20261125-000000-5a5a5a5a"
PUSHERS = 4
RUNS_EACH = 8

# A pusher: waits for the start signal, pushes its store, prints the result.
PUSHER = """
import json, os, sys, time
from pathlib import Path
from flowillower.gitops.sync import push
store, remote, go = sys.argv[1:4]
Path(go + ".ready." + str(os.getpid())).write_text("")
while not os.path.exists(go):
    time.sleep(0.005)
print(json.dumps(push(Path(store), remote)))
"""


def machine(tmp_path, name: str):
    return tmp_path / name / ".flowillower"


def test_four_machines_push_at_once_and_lose_nothing(tmp_path, monkeypatch):
    """Four processes push their own runs, and each a replay of one shared run, to one
    bare remote at the same moment: every run and every replay is there afterwards."""
    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "remote.git")
    first = machine(tmp_path, "m0")
    make_run(first, SHARED, None)
    push(first, str(remote))  # the shared run, as everyone pulled it
    stores = []
    for m in range(PUSHERS):
        store = machine(tmp_path, f"m{m}")
        if m:
            pull(store, str(remote))
        for i in range(RUNS_EACH):
            make_run(store, f"20261125-{m:06d}-{i:08x}", None)
        replays = store / "runs" / SHARED / "replays"
        replays.mkdir()
        (replays / f"from-m{m}.fwl").write_bytes(record_file(f"m{m}"))
        stores.append(store)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(store), str(remote), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ))
             for store in stores]
    wait_for(lambda: len(list(tmp_path.glob("go.ready.*"))) == PUSHERS, timeout=120,
             what="all pushers started")
    go.write_text("")  # released together
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["rejected"] for r in results] == [[]] * PUSHERS, results
    assert [r["conflicts"] for r in results] == [{}] * PUSHERS, results
    assert sum(r["new"] for r in results) == PUSHERS * RUNS_EACH
    # all but the first to land had the shared run rejected, caught up and pushed again
    assert sum(r["attempts"] > 1 for r in results) >= PUSHERS - 1, results
    refs = store_ref(remote, "for-each-ref", "--format=%(refname)", REF).split()
    assert len(refs) == PUSHERS * RUNS_EACH + 1
    replays = store_ref(remote, "ls-tree", "--name-only", f"{REF}{SHARED}:replays").split()
    assert replays == [f"from-m{m}.fwl" for m in range(PUSHERS)]

    fresh = machine(tmp_path, "fresh")
    got = pull(fresh, str(remote))
    assert (got["runs_added"], got["refused"], got["runs_refused"]) == (
        PUSHERS * RUNS_EACH + 1, {}, [])
    assert sorted(p.name for p in (fresh / "runs" / SHARED / "replays").iterdir()) == replays
    for m in range(PUSHERS):
        assert (fresh / "runs" / SHARED / "replays" / f"from-m{m}.fwl").read_bytes() == \
            record_file(f"m{m}")


def test_one_file_changed_on_two_machines_is_a_conflict_not_an_overwrite(tmp_path,
                                                                         monkeypatch):
    """Two clones give one run a note of the same name with different text: the second
    push reports the run and the file, and the remote keeps the first note."""
    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "remote.git")
    alice, bob = machine(tmp_path, "alice"), machine(tmp_path, "bob")
    make_run(alice, SHARED, None)
    push(alice, str(remote))
    pull(bob, str(remote))
    for store, text in ((alice, "alice's"), (bob, "bob's")):
        (store / "runs" / SHARED / "notes").mkdir()
        (store / "runs" / SHARED / "notes" / "n.json").write_text(json.dumps({"notes": text}))
    assert push(alice, str(remote))["rejected"] == []
    tip = store_ref(remote, "rev-parse", REF + SHARED)
    result = push(bob, str(remote))
    assert result["rejected"] == [SHARED] and result["runs"] == 0
    assert [path for path, _why in result["conflicts"][SHARED]] == ["notes/n.json"]
    assert store_ref(remote, "rev-parse", REF + SHARED) == tip  # nothing pushed over it
    assert json.loads((bob / "runs" / SHARED / "notes" / "n.json").read_text()) == {
        "notes": "bob's"}  # and nothing of bob's replaced
    # The command line says which run and file did not go, and exits 1 for scripts.
    from click.testing import CliRunner

    from flowillower.cli import main as cli_main

    out = CliRunner().invoke(cli_main, ["push", str(remote), "--dir", str(bob.parent)])
    assert out.exit_code == 1, out.output
    assert f"not pushed {SHARED}" in out.output and "notes/n.json" in out.output
    assert "0 new, 0 updated" in out.output
    # Pushing again (the join of both versions is not kept as ours) still sends nothing
    # over Alice's note.
    again = push(bob, str(remote))
    assert again["rejected"] == [SHARED] and SHARED in again["conflicts"]
    assert store_ref(remote, "rev-parse", REF + SHARED) == tip
    assert json.loads(store_ref(remote, "show", f"{REF}{SHARED}:notes/n.json")) == {
        "notes": "alice's"}


def test_a_hostile_version_on_the_remote_is_never_joined(tmp_path, monkeypatch):
    """While catching up, the remote's version of our run is checked like any pull: a
    version holding a file no run holds is reported, never written here, never joined."""
    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "remote.git")
    alice, mallory = machine(tmp_path, "alice"), machine(tmp_path, "mallory")
    make_run(alice, SHARED, None)
    push(alice, str(remote))
    pull(mallory, str(remote))
    # Mallory commits a file no run holds on top of the run, by hand, with plain git.
    evil = tmp_path / "evil"
    shutil.copytree(mallory / "runs" / SHARED, evil)
    (evil / "hook.py").write_text("import os\n")
    git(evil, "init", "-q")
    git(evil, "fetch", "-q", str(remote), REF + SHARED)
    git(evil, "add", "-A")
    tree = git(evil, "write-tree").strip()
    commit = git(evil, "commit-tree", tree, "-p", "FETCH_HEAD", "-m", "evil").strip()
    git(evil, "push", "-q", str(remote), f"{commit}:{REF}{SHARED}")
    (alice / "runs" / SHARED / "notes").mkdir()
    (alice / "runs" / SHARED / "notes" / "mine.json").write_text('{"notes": "ok"}')
    result = push(alice, str(remote))
    assert result["rejected"] == [SHARED]
    assert ["hook.py", "not a file a run holds"] in result["conflicts"][SHARED]
    assert not (alice / "runs" / SHARED / "hook.py").exists()
    assert store_ref(remote, "rev-parse", REF + SHARED) == commit
