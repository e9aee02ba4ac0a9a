"""Projects whose `train.py` logs a value in every repo state, for end-to-end tests that
run the script (tests/conftest_git.py's dirty state rewrites train.py, so it can't run)."""

from __future__ import annotations

from pathlib import Path

# One `git` runner and one fingerprint for all git tests (the stricter one: all of .git).
from tests.conftest_git import fingerprint, git


def _base_files(repo: Path) -> None:
    (repo / "train.py").write_text("import flowillower as fw\nfw.log('x', 1.0)\n")
    (repo / "lib").mkdir()
    (repo / "lib" / "model.py").write_text("WIDTH = 64\n")
    (repo / ".gitignore").write_text("*.ckpt\n")
    (repo / "notes.txt").write_text("to be deleted in the dirty state\n")


def make_repo(tmp: Path, state: str) -> Path:
    """A project directory in `state`."""
    repo = tmp / f"proj-{state}"
    repo.mkdir()
    if state == "non-git":
        _base_files(repo)
        return repo
    git(repo, "init", "-q", "-b", "master" if state == "master" else "main")
    _base_files(repo)
    if state == "empty":
        return repo
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "first")
    if state == "detached":
        git(repo, "checkout", "-q", "--detach")
    if state == "submodule":
        sub = tmp / "sub-origin"
        sub.mkdir()
        git(sub, "init", "-q", "-b", "main")
        (sub / "util.py").write_text("X = 1\n")
        git(sub, "add", "-A")
        git(sub, "commit", "-qm", "sub")
        git(repo, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(sub), "vendor")
        git(repo, "commit", "-qm", "add submodule")
    if state == "dirty":
        (repo / "lib" / "model.py").write_text("WIDTH = 128  # changed\n")
        (repo / "new_untracked.py").write_text("print('new')\n")
        (repo / "weights.ckpt").write_text("ignored\n")
        (repo / "staged.py").write_text("staged = True\n")
        git(repo, "add", "staged.py")
        (repo / "notes.txt").unlink()  # a tracked file deleted in the working tree
        git(repo, "stash", "list")
    if state == "stash":
        (repo / "lib" / "model.py").write_text("WIDTH = 1\n")
        git(repo, "stash", "-q")
    return repo


STATES = ["non-git", "empty", "main", "master", "detached", "submodule", "dirty", "stash"]


__all__ = ["STATES", "fingerprint", "git", "make_repo"]
