"""What a code snapshot holds, and reading it back (list, read, diff, checkout)."""

from __future__ import annotations

import json
import os
import subprocess

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
from tests.conftest_git import git, isolate_home, make_repo, store_ref

KEYS = {"head", "branch", "dirty", "snapshot", "skipped", "root", "files"}


def test_dirty_tree_is_captured_as_the_user_sees_it(tmp_path):
    repo = make_repo(tmp_path, "dirty")
    (repo / "big.bin").write_bytes(b"\0" * 2048)
    (repo / "link.py").symlink_to("lib/model.py")
    store = tmp_path / "store" / "git"
    info = take_snapshot(repo, store, size_cap=1024)
    assert set(info) == KEYS
    sha = info["snapshot"]
    files = list_files(store, sha)
    assert read_file(store, sha, "lib/model.py") == b"WIDTH = 128  # changed\n"  # modified
    assert read_file(store, sha, "train.py") == b"# the working-tree version\n"  # not staged one
    assert read_file(store, sha, "staged.py") == b"staged = True\n"  # staged, new
    assert read_file(store, sha, "new untracked ñ.py") == b"print('new')\n"  # untracked
    assert "data dir/é ü 名前.txt" in files
    assert "weights.ckpt" not in files  # ignored
    assert "notes.txt" not in files  # deleted in the working tree
    assert not any(f.startswith(".flowillower") for f in files)
    assert info["skipped"] == [["big.bin", 2048]] and "big.bin" not in files
    assert info["files"] == len(files)
    assert info["dirty"] is True and info["branch"] == "main"
    assert info["head"] == git(repo, "rev-parse", "HEAD").strip()
    listing = store_ref(store, "ls-tree", "-r", sha)
    assert "100755 blob" in next(line for line in listing.splitlines() if "run.sh" in line)
    assert next(line for line in listing.splitlines() if "link.py" in line).startswith("120000")


def test_clean_tree_is_heads_tree_and_snapshots_dedupe(tmp_path):
    repo = make_repo(tmp_path, "main")
    store = tmp_path / "git"
    first = take_snapshot(repo, store)
    second = take_snapshot(repo, store)
    assert first["dirty"] is False and first["skipped"] == []
    assert first["snapshot"] == second["snapshot"]  # same code, same commit
    assert store_ref(store, "rev-parse", first["snapshot"] + "^{tree}") == \
        git(repo, "rev-parse", "HEAD^{tree}").strip()


def test_clean_is_clean_despite_eol_conversion_and_big_tracked_files(tmp_path):
    """Unchanged files keep git's own blob (CRLF normalised, LFS pointers...), so a clean
    checkout with core.autocrlf is not reported dirty; a big *unchanged* tracked file is
    skipped without making the tree dirty either."""
    repo = make_repo(tmp_path, "empty")
    git(repo, "config", "core.autocrlf", "true")
    (repo / "win.py").write_bytes(b"a = 1\r\nb = 2\r\n")
    (repo / "weights.npy").write_bytes(os.urandom(4096))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "crlf")
    info = take_snapshot(repo, tmp_path / "git", size_cap=1024)
    assert info["dirty"] is False, info
    assert info["skipped"] == [["weights.npy", 4096]]
    assert read_file(tmp_path / "git", info["snapshot"], "win.py") == b"a = 1\nb = 2\n"
    (repo / "weights.npy").write_bytes(os.urandom(4096))  # now it did change
    assert take_snapshot(repo, tmp_path / "git", size_cap=1024)["dirty"] is True


def test_repo_states_head_and_branch(tmp_path):
    store = tmp_path / "git"
    empty = take_snapshot(make_repo(tmp_path, "empty"), store)
    assert (empty["head"], empty["branch"], empty["dirty"]) == (None, "main", True)
    assert empty["files"] == 6
    detached = take_snapshot(make_repo(tmp_path, "detached"), store)
    assert detached["branch"] is None and len(detached["head"]) == 40
    assert take_snapshot(make_repo(tmp_path, "master"), store)["branch"] == "master"


def test_subdirectory_snapshots_the_whole_repository(tmp_path):
    repo = make_repo(tmp_path, "main")
    info = take_snapshot(repo / "lib", tmp_path / "git")
    assert info["root"] == str(repo.resolve())
    assert "train.py" in list_files(tmp_path / "git", info["snapshot"])


def test_submodules_and_nested_repositories_are_gitlinks(tmp_path):
    repo = make_repo(tmp_path, "submodule")
    sub_head = git(repo / "vendor", "rev-parse", "HEAD").strip()
    nested = repo / "third_party"
    nested.mkdir()
    git(nested, "init", "-q")
    (nested / "x.py").write_text("x = 1\n")
    git(nested, "add", "-A")
    git(nested, "commit", "-qm", "nested")
    store = tmp_path / "git"
    info = take_snapshot(repo, store)
    listing = store_ref(store, "ls-tree", info["snapshot"])
    assert f"160000 commit {sub_head}\tvendor" in listing
    nested_head = git(nested, "rev-parse", "HEAD").strip()
    assert f"160000 commit {nested_head}\tthird_party" in listing
    # An uninitialised submodule records the commit the superproject pins (not the
    # superproject's own HEAD, which `git -C vendor` would find by walking up).
    git(repo, "submodule", "deinit", "-q", "-f", "vendor")
    pinned = git(repo, "ls-files", "-s", "vendor").split()[1]
    info = take_snapshot(repo, store)
    assert f"160000 commit {pinned}\tvendor" in store_ref(store, "ls-tree", info["snapshot"])


def test_non_git_directory_walks_files(tmp_path):
    project = make_repo(tmp_path, "non-git")
    for junk in (".venv/lib.py", "__pycache__/x.pyc", "node_modules/m.js", ".cache/c",
                 ".flowillower/runs/r/run.json", "venv/bin/python"):
        (project / junk).parent.mkdir(parents=True, exist_ok=True)
        (project / junk).write_text("junk")
    (project / "lib" / "big.csv").write_bytes(b"1," * 1000)
    info = take_snapshot(project, tmp_path / "git", size_cap=1000)
    assert (info["head"], info["branch"], info["dirty"]) == (None, None, None)
    assert info["skipped"] == [["lib/big.csv", 2000]]
    assert sorted(list_files(tmp_path / "git", info["snapshot"])) == [
        ".gitignore", "data dir/é ü 名前.txt", "lib/model.py", "notes.txt", "run.sh", "train.py"]


def test_store_inside_the_project_is_never_captured(tmp_path):
    repo = make_repo(tmp_path, "main")
    store = repo / "my-store" / "git"  # a custom store name inside the repository
    (repo / "my-store" / "runs").mkdir(parents=True)
    (repo / "my-store" / "runs" / "x.json").write_text("{}")
    info = take_snapshot(repo, store)
    assert not any(f.startswith("my-store") for f in list_files(store, info["snapshot"]))
    assert info["dirty"] is False
    assert git(repo, "status", "--porcelain") == ""  # hidden by the .gitignore we wrote


def test_no_git_installed_degrades(tmp_path, monkeypatch):
    repo = make_repo(tmp_path, "main")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    info = take_snapshot(repo, tmp_path / "git")
    assert info["snapshot"] is None and "git is not installed" in info["error"]


def test_no_identity_configured(tmp_path, monkeypatch):
    repo = make_repo(tmp_path, "dirty")
    isolate_home(monkeypatch, tmp_path)
    assert subprocess.run(["git", "config", "user.name"], cwd=tmp_path).returncode != 0
    assert take_snapshot(repo, tmp_path / "git")["snapshot"]


def test_diff_read_list_and_their_errors(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path, "[diff]\n\tnoprefix = true\n\tmnemonicPrefix = true\n")
    repo = make_repo(tmp_path, "main")
    store = tmp_path / "git"
    a = take_snapshot(repo, store)["snapshot"]
    (repo / "lib" / "model.py").write_text("WIDTH = 256\n")
    (repo / "lib" / "model.py").rename(repo / "lib" / "net.py")
    b = take_snapshot(repo, store)["snapshot"]
    diff = diff_snapshots(store, a, b)
    assert "--- a/lib/model.py" in diff and "+++ b/lib/net.py" in diff  # user config ignored
    assert "-WIDTH = 64" in diff and "+WIDTH = 256" in diff
    assert diff_snapshots(store, a, a) == ""
    assert "lib/net.py" in list_files(store, b) and "lib/model.py" not in list_files(store, b)
    with pytest.raises(GitError, match="has no file 'nope.py'"):
        read_file(store, a, "nope.py")
    with pytest.raises(GitError):
        list_files(store, "0" * 40)


def test_checkout_is_byte_exact_and_refuses_unsafe_targets(tmp_path):
    repo = make_repo(tmp_path, "empty")
    # export-subst / export-ignore apply to `git archive`, never to our checkout.
    (repo / ".gitattributes").write_text("*.py export-subst\nsecret.txt export-ignore\n")
    (repo / "version.py").write_text("V = '$Format:%H$'\n")
    (repo / "secret.txt").write_text("kept\n")
    (repo / "crlf.txt").write_bytes(b"x\r\ny\r\n")
    (repo / "link").symlink_to("lib/model.py")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "c")
    store = tmp_path / "git"
    sha = take_snapshot(repo, store)["snapshot"]
    out = checkout_snapshot(store, sha, tmp_path / "out" / "code")
    for rel in list_files(store, sha):
        if rel != "link":
            assert (out / rel).read_bytes() == read_file(store, sha, rel), rel
    assert (out / "version.py").read_text() == "V = '$Format:%H$'\n"
    assert (out / "crlf.txt").read_bytes() == b"x\r\ny\r\n"
    assert os.readlink(out / "link") == "lib/model.py"
    assert os.access(out / "run.sh", os.X_OK) and not os.access(out / "train.py", os.X_OK)

    with pytest.raises(GitError, match="not an empty directory"):
        checkout_snapshot(store, sha, out)
    with pytest.raises(GitError, match="not an empty directory"):
        checkout_snapshot(store, sha, repo)  # the project itself
    with pytest.raises(GitError, match="inside the git working tree"):
        checkout_snapshot(store, sha, repo / "new-folder")
    assert not (repo / "new-folder").exists()
    with pytest.raises(GitError, match="git directory"):
        checkout_snapshot(store, sha, store / "x")
    (repo / "explicit").mkdir()  # the user made it: allowed
    assert (checkout_snapshot(store, sha, repo / "explicit") / "train.py").exists()
    with pytest.raises(GitError):
        checkout_snapshot(store, "0" * 40, tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()  # a failed checkout leaves nothing behind


def test_trees_and_commits_built_in_python_match_git(tmp_path):
    """Trees and the commit are computed here, not by git: check them against git's own
    write-tree (HEAD's tree), commit-tree and `fsck --strict`, on names whose order is
    tricky (a folder sorts as if its name ended in "/")."""
    repo = make_repo(tmp_path, "empty")
    for name in ("lib.py", "lib-x.txt", "lib0", "a/b/c/d.txt", "a b", "Z", "é/x"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(name)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "names")
    store = tmp_path / "git"
    info = take_snapshot(repo, store)
    assert info["dirty"] is False
    tree = store_ref(store, "rev-parse", info["snapshot"] + "^{tree}")
    assert tree == git(repo, "rev-parse", "HEAD^{tree}").strip()
    message = store_ref(store, "log", "-1", "--format=%B", info["snapshot"])
    env = {"GIT_AUTHOR_NAME": "flowillower", "GIT_AUTHOR_EMAIL": "flowillower@localhost",
           "GIT_COMMITTER_NAME": "flowillower", "GIT_COMMITTER_EMAIL": "flowillower@localhost",
           "GIT_AUTHOR_DATE": "1700000000 +0000", "GIT_COMMITTER_DATE": "1700000000 +0000"}
    by_git = subprocess.run(["git", f"--git-dir={store}", "commit-tree", tree, "-m", message],
                            env={**os.environ, **env}, capture_output=True, text=True,
                            check=True).stdout.strip()
    assert by_git == info["snapshot"]
    fsck = subprocess.run(["git", f"--git-dir={store}", "fsck", "--strict", "--no-dangling"],
                          capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_untracked_files_listed_from_a_subdirectory(tmp_path):
    repo = make_repo(tmp_path, "main")
    (repo / "lib" / "extra.py").write_text("x = 1\n")
    (repo / "top_level_new.py").write_text("y = 2\n")
    info = take_snapshot(repo / "lib", tmp_path / "git")
    files = list_files(tmp_path / "git", info["snapshot"])
    assert "lib/extra.py" in files and "top_level_new.py" in files and info["dirty"] is True


def test_run_records_snapshot(tmp_path, monkeypatch, store_dir):
    repo = make_repo(tmp_path, "dirty")
    monkeypatch.chdir(repo)
    run = fw.init()
    fw.log("x", 1.0)
    fw.finish()
    git_info = json.loads((run.dir / "run.json").read_text())["git"]
    assert git_info["dirty"] is True and git_info["branch"] == "main"
    assert "new untracked ñ.py" in list_files(store_dir / "git", git_info["snapshot"])
