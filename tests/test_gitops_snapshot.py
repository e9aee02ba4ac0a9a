"""Code snapshots in every repo state, without changing a byte of the user's repo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import flowillower as fw
from flowillower.errors import GitError
from flowillower.gitops.snapshot import (
    checkout_snapshot,
    diff_snapshots,
    list_files,
    read_file,
    take_snapshot,
)
from tests.gitrepos import STATES, fingerprint, git, make_repo


@pytest.mark.parametrize("state", STATES)
def test_run_diff_checkout_push_leave_repo_untouched(state, tmp_path, monkeypatch):
    repo = make_repo(tmp_path, state)
    monkeypatch.delenv("FLOWILLOWER_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no git identity configured
    (tmp_path / "home").mkdir()
    before = fingerprint(repo)
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GIT_")}
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
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run([*cli, "push", str(remote)], cwd=repo, env=env, check=True,
                   capture_output=True)
    assert fingerprint(repo) == before
    assert (tmp_path / "co" / "train.py").exists()


def test_snapshot_content_of_a_dirty_tree(tmp_path):
    repo = make_repo(tmp_path, "dirty")
    (repo / "big.bin").write_bytes(b"\0" * 2048)
    info = take_snapshot(repo, tmp_path / "git", size_cap=1024)
    files = list_files(tmp_path / "git", info["snapshot"])
    assert read_file(tmp_path / "git", info["snapshot"], "lib/model.py") == \
        b"WIDTH = 128  # changed\n"  # the working-tree version
    assert "new_untracked.py" in files and "staged.py" in files
    assert "weights.ckpt" not in files  # ignored
    assert "notes.txt" not in files  # deleted in the working tree
    assert info["skipped"] == [["big.bin", 2048]] and "big.bin" not in files
    assert info["dirty"] is True and info["branch"] == "main"
    assert info["head"] == git(repo, "rev-parse", "HEAD").strip()


def test_clean_tree_is_not_dirty_and_snapshots_dedupe(tmp_path):
    repo = make_repo(tmp_path, "main")
    first = take_snapshot(repo, tmp_path / "git")
    second = take_snapshot(repo, tmp_path / "git")
    assert first["dirty"] is False
    assert first["snapshot"] == second["snapshot"]  # same code, same commit


def test_submodule_recorded_as_gitlink(tmp_path):
    repo = make_repo(tmp_path, "submodule")
    info = take_snapshot(repo, tmp_path / "git")
    tree = subprocess.run(["git", f"--git-dir={tmp_path / 'git'}", "ls-tree", info["snapshot"],
                           "vendor"], capture_output=True, text=True, check=True).stdout
    sub_head = git(repo / "vendor", "rev-parse", "HEAD").strip()
    assert tree.startswith("160000 commit " + sub_head)


def test_non_git_directory_walks_files(tmp_path):
    repo = make_repo(tmp_path, "non-git")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "junk.py").write_text("x")
    info = take_snapshot(repo, tmp_path / "git")
    assert info["head"] is None and info["branch"] is None
    assert sorted(list_files(tmp_path / "git", info["snapshot"])) == [".gitignore", "lib/model.py",
                                                                      "notes.txt", "train.py"]


def test_diff_and_checkout(tmp_path):
    repo = make_repo(tmp_path, "main")
    a = take_snapshot(repo, tmp_path / "git")["snapshot"]
    (repo / "lib" / "model.py").write_text("WIDTH = 256\n")
    b = take_snapshot(repo, tmp_path / "git")["snapshot"]
    diff = diff_snapshots(tmp_path / "git", a, b)
    assert "-WIDTH = 64" in diff and "+WIDTH = 256" in diff
    out = checkout_snapshot(tmp_path / "git", a, tmp_path / "old")
    assert (out / "lib" / "model.py").read_text() == "WIDTH = 64\n"
    with pytest.raises(GitError, match="not an empty directory"):
        checkout_snapshot(tmp_path / "git", a, repo)


def test_run_records_snapshot(tmp_path, monkeypatch, store_dir):
    repo = make_repo(tmp_path, "dirty")
    monkeypatch.chdir(repo)
    run = fw.init()
    fw.log("x", 1.0)
    fw.finish()
    git_info = json.loads((run.dir / "run.json").read_text())["git"]
    assert git_info["dirty"] is True and git_info["branch"] == "main"
    assert "new_untracked.py" in list_files(store_dir / "git", git_info["snapshot"])
