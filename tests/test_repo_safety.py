"""Nothing of the user's changes, whatever state their repository is in.

FlorDB switches branches and commits user files; fitlog renames `.git`. Here every file
of the project, all of `.git` included (HEAD, index, config, refs, objects, modules),
the stash list, the refs and `git status` must be byte-identical after a snapshot, a
diff, a checkout, a push and a pull. No git identity is configured (HOME is empty).
The same holds end to end: the user's script logging runs, then the CLI's diff, checkout
and push.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from flowillower.gitops.snapshot import (
    checkout_snapshot,
    diff_snapshots,
    list_files,
    take_snapshot,
)
from flowillower.gitops.sync import pull, push
from tests.conftest_git import (
    STATES,
    bare_remote,
    fingerprint,
    git,
    isolate_home,
    make_repo,
    make_run,
    status,
    store_ref,
)


@pytest.mark.parametrize("state", STATES)
def test_user_repo_is_byte_identical(state, tmp_path, monkeypatch):
    repo = make_repo(tmp_path, state)
    isolate_home(monkeypatch, tmp_path)
    in_git = state != "non-git"
    store = repo / ".flowillower"
    before = fingerprint(repo)
    status_before = status(repo) if in_git else None

    first = take_snapshot(repo, store / "git")
    assert fingerprint(repo) == before
    if in_git:
        assert status(repo) == status_before  # the new store does not show up
    (repo / "lib" / "model.py").write_text("WIDTH = 7  # edited between runs\n")
    (repo / "old-code").mkdir()  # an explicit empty folder for a checkout, see below
    before = fingerprint(repo)  # those were the user's own edits; nothing after is
    status_before = status(repo) if in_git else None
    second = take_snapshot(repo, store / "git")

    assert set(first) >= {"head", "branch", "dirty", "snapshot", "skipped", "root", "files"}
    assert first["snapshot"] and second["snapshot"] != first["snapshot"]
    assert first["root"] == str(repo.resolve())
    assert "train.py" in list_files(store / "git", first["snapshot"])
    assert "+WIDTH = 7" in diff_snapshots(store / "git", first["snapshot"], second["snapshot"])
    checkout_snapshot(store / "git", first["snapshot"], tmp_path / "co")
    checkout_snapshot(store / "git", second["snapshot"], repo / "old-code")
    assert (repo / "old-code" / "lib" / "model.py").read_text().startswith("WIDTH = 7")
    for child in (repo / "old-code").iterdir():  # the user clears their folder again
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    make_run(store, "20261123-120000-0000abcd", first)
    remote = bare_remote(tmp_path / "remote.git")
    assert push(store, str(remote))["pushed"] == 1
    assert pull(store, str(remote))["files_added"] == 0

    assert fingerprint(repo) == before
    if in_git:
        assert status(repo) == status_before  # the store never shows in `git status`
        assert (store / ".gitignore").read_text().strip().endswith("*")
    if state == "submodule":
        sub_head = git(repo / "vendor", "rev-parse", "HEAD").strip()
        tree = git(tmp_path, f"--git-dir={store / 'git'}", "ls-tree", first["snapshot"], "vendor")
        assert tree.startswith(f"160000 commit {sub_head}")
    if state in ("non-git",):
        assert first["head"] is None and first["branch"] is None and first["dirty"] is None
    if state == "empty":
        assert first["head"] is None and first["branch"] == "main" and first["dirty"] is True
    if state == "detached":
        assert first["branch"] is None and first["head"]
    if state == "master":
        assert first["branch"] == "master"


def test_hostile_environment_does_not_redirect_us(tmp_path, monkeypatch):
    """A surrounding git hook's GIT_DIR / GIT_INDEX_FILE, a global hooksPath with a
    reference-transaction hook, and a global fetch.prune must not reach the user's repo
    or our store."""
    repo = make_repo(tmp_path, "dirty")
    other_repo = make_repo(tmp_path, "main")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "hook-ran"
    for name in ("reference-transaction", "pre-push", "post-update"):
        hook = hooks / name
        hook.write_text(f"#!/bin/sh\necho {name} $(pwd) >> '{marker}'\n")
        hook.chmod(0o755)
    isolate_home(monkeypatch, tmp_path,
                 f"[core]\n\thooksPath = {hooks}\n[fetch]\n\tprune = true\n"
                 "[diff]\n\tnoprefix = true\n")
    monkeypatch.setenv("GIT_DIR", str(repo / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(repo / ".git" / "index"))
    monkeypatch.setenv("GIT_WORK_TREE", str(repo))
    before = fingerprint(repo)
    store = repo / ".flowillower"
    info = take_snapshot(repo, store / "git")
    other = take_snapshot(other_repo, store / "git")
    assert "--- a/" in diff_snapshots(store / "git", other["snapshot"], info["snapshot"])
    make_run(store, "20261123-120000-0000abcd", info)
    remote = bare_remote(tmp_path / "remote.git")
    push(store, str(remote))
    pull(store, str(remote))  # fetch.prune would drop `other`'s code ref if honoured
    assert store_ref(store / "git", "rev-parse", "refs/flowillower/code/" + other["snapshot"])
    ran = marker.read_text() if marker.exists() else ""
    # Only the remote's own hooks may run (that is its business), never any in our repo.
    assert all("remote.git" in line for line in ran.splitlines()), ran
    assert fingerprint(repo) == before


@pytest.mark.parametrize("state", STATES)
def test_run_diff_checkout_push_leave_repo_untouched(state, tmp_path, monkeypatch):
    repo = make_repo(tmp_path, state, runnable=True)
    monkeypatch.delenv("FLOWILLOWER_DIR")
    isolate_home(monkeypatch, tmp_path)  # no git identity configured
    before = fingerprint(repo)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    for lr in ("0.1", "0.2"):
        subprocess.run([sys.executable, "train.py", "--kwargs", f"lr={lr}"], cwd=repo, env=env,
                       check=True, capture_output=True)
    store = repo / ".flowillower"
    runs = sorted((store / "runs").iterdir())
    assert len(runs) == 2
    meta = json.loads((runs[0] / "run.json").read_text())
    assert meta["git"]["snapshot"], meta["git"]
    cli = [sys.executable, "-m", "flowillower"]
    subprocess.run([*cli, "diff", runs[0].name, runs[1].name], cwd=repo, env=env, check=True,
                   capture_output=True)
    subprocess.run([*cli, "checkout", runs[0].name, str(tmp_path / "co")], cwd=repo, env=env,
                   check=True, capture_output=True)
    remote = bare_remote(tmp_path / "remote.git")
    subprocess.run([*cli, "push", str(remote)], cwd=repo, env=env, check=True,
                   capture_output=True)
    assert fingerprint(repo) == before
    assert (tmp_path / "co" / "train.py").exists()
