"""Real git repositories in every state the snapshot must survive, and a fingerprint of
everything of the user's that must stay byte-identical."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
       "GIT_COMMITTER_EMAIL": "t@t"}


def git(repo: Path, *args: str, identity: bool = True) -> str:
    env = {**os.environ, **(ENV if identity else {})}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True, env=env).stdout


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


def fingerprint(repo: Path) -> dict[str, str]:
    """Hashes of HEAD, index, config, refs, stash list and every working-tree file."""
    prints: dict[str, str] = {}
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.startswith(".flowillower") or not path.is_file():
            continue
        if rel.startswith(".git/") and not (rel in (".git/HEAD", ".git/index", ".git/config",
                                                    ".git/packed-refs")
                                            or rel.startswith(".git/refs/")
                                            or rel.startswith(".git/logs/")):
            continue
        prints[rel] = hashlib.sha1(path.read_bytes()).hexdigest()
    if (repo / ".git").exists():
        prints["<stash>"] = git(repo, "stash", "list")
        prints["<status>"] = git(repo, "--no-optional-locks", "status", "--porcelain",
                                 "--untracked-files=all")
    return prints
