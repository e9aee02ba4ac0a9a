"""Helpers for the gitops tests: real repositories in every state a user's project can be
in, a fingerprint of everything of theirs that must stay byte-identical, hand-made runs.

Imported explicitly (`from tests.conftest_git import ...`); not a pytest conftest.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
from array import array
from pathlib import Path
from typing import Any

# Identity for *building* fixtures only; the code under test must work without one.
_ID = ["-c", "user.name=Test", "-c", "user.email=test@example.com",
       "-c", "protocol.file.allow=always", "-c", "init.defaultBranch=main"]

STATES = ["non-git", "empty", "main", "master", "detached", "no-identity", "submodule",
          "dirty", "stash"]


def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in `repo` the way a user would (their config, an identity given)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    proc = subprocess.run(["git", *_ID, "-C", str(repo), *args], capture_output=True,
                          env=env, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {args} failed: {proc.stderr.decode()}")
    return proc.stdout.decode("utf-8", "surrogateescape")


def bare_remote(path: Path) -> Path:
    """A bare repository to push to (what a team would host)."""
    git(path.parent, "init", "-q", "--bare", str(path))
    return path


def isolate_home(monkeypatch, tmp: Path, gitconfig: str | None = None) -> Path:
    """HOME without any git identity (or with the given ~/.gitconfig text)."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    if gitconfig is not None:
        (home / ".gitconfig").write_text(gitconfig)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in list(os.environ):
        if var.startswith(("GIT_AUTHOR", "GIT_COMMITTER", "EMAIL")) or var == "GIT_CONFIG_GLOBAL":
            monkeypatch.delenv(var, raising=False)
    return home


def _base_files(repo: Path) -> None:
    (repo / "train.py").write_text("import flowillower as fw\nfw.log('x', 1.0)\n")
    (repo / "lib").mkdir()
    (repo / "lib" / "model.py").write_text("WIDTH = 64\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "data dir").mkdir()
    (repo / "data dir" / "é ü 名前.txt").write_text("unicode and spaces\n")
    (repo / ".gitignore").write_text("*.ckpt\n")
    (repo / "notes.txt").write_text("deleted in the dirty state\n")


def make_repo(tmp: Path, state: str, *, runnable: bool = False) -> Path:
    """A project directory in `state` (one of STATES).

    `runnable`: `train.py` stays the script that logs a value in every state (the dirty
    state then leaves it alone), for end-to-end tests that run it.
    """
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
    elif state == "submodule":
        sub = tmp / "sub-origin"
        sub.mkdir()
        git(sub, "init", "-q")
        (sub / "util.py").write_text("X = 1\n")
        git(sub, "add", "-A")
        git(sub, "commit", "-qm", "sub")
        git(repo, "submodule", "add", "-q", str(sub), "vendor")
        git(repo, "commit", "-qm", "add submodule")
    elif state == "dirty":
        (repo / "lib" / "model.py").write_text("WIDTH = 128  # changed\n")
        (repo / "new untracked ñ.py").write_text("print('new')\n")
        (repo / "weights.ckpt").write_text("ignored\n")
        (repo / "staged.py").write_text("staged = True\n")
        git(repo, "add", "staged.py")
        if not runnable:
            (repo / "train.py").write_text("# staged and then changed again\n")
            git(repo, "add", "train.py")
            (repo / "train.py").write_text("# the working-tree version\n")
        (repo / "notes.txt").unlink()  # tracked, deleted in the working tree
    elif state == "stash":
        (repo / "lib" / "model.py").write_text("WIDTH = 1\n")
        git(repo, "stash", "-q")
        (repo / "lib" / "model.py").write_text("WIDTH = 2\n")
    return repo


def _digest(path: Path) -> str:
    if path.is_symlink():
        return "link:" + os.readlink(path)
    return hashlib.sha1(path.read_bytes()).hexdigest()


def fingerprint(project: Path) -> dict[str, str]:
    """Hashes of every file of the project *including all of .git* (HEAD, index, config,
    refs, objects...), plus the stash list and `git status`, all read without locks.
    Only our store, `.flowillower/`, is left out."""
    prints: dict[str, str] = {}
    for path in sorted(project.rglob("*")):
        rel = path.relative_to(project).as_posix()
        if rel == ".flowillower" or rel.startswith(".flowillower/"):
            continue
        if path.is_file() or path.is_symlink():
            prints[rel] = _digest(path)
    if (project / ".git").exists():
        prints["<stash>"] = git(project, "--no-optional-locks", "stash", "list")
        prints["<refs>"] = git(project, "--no-optional-locks", "for-each-ref")
        prints["<status>"] = status(project)
    return prints


def status(project: Path) -> str:
    """`git status --porcelain` of the user's repo, without refreshing its index."""
    return git(project, "--no-optional-locks", "status", "--porcelain",
               "--untracked-files=all", "--ignore-submodules=none")


def store_ref(git_dir: Path, *args: str) -> str:
    """A read of our store repository, for assertions."""
    return git(git_dir.parent, f"--git-dir={git_dir}", *args).strip()


def record_file(seed: str, frames: int = 2, key: str = "loss") -> bytes:
    """A record file as a run writes it: a key definition, then `frames` intact frames of
    ten values each (the values differ with `seed`)."""
    from flowillower.store.format import encode_frame

    rng = random.Random(seed)
    parts = [encode_frame(keys={0: (key, "metric")})]
    for first in range(0, 10 * frames, 10):
        steps = range(first, first + 10)
        parts.append(encode_frame(
            call_cols=[array("I", [0] * 10), array("q", steps),
                       array("d", [1732360000.0 + s for s in steps]), array("I", [1] * 10)],
            float_cols=[array("I", [0] * 10), array("d", [rng.random() for _ in steps])]))
    return b"".join(parts)


def make_run(store_root: Path, run_id: str, snapshot: dict[str, Any] | None,
             extra_files: dict[str, bytes] | None = None) -> Path:
    """A finished run folder as the store writes it (run.json, records, media, ...)."""
    run_dir = store_root / "runs" / run_id
    run_dir.mkdir(parents=True)
    meta = {"id": run_id, "project": "p", "name": run_id[-4:], "tags": [], "notes": "",
            "created": 1732360000.0, "git": snapshot}
    (run_dir / "run.json").write_text(json.dumps(meta))
    (run_dir / "data.fwl").write_bytes(record_file(run_id))
    (run_dir / "summary.json").write_text(json.dumps({"status": "finished"}))
    (run_dir / "media" / "img").mkdir(parents=True)
    (run_dir / "media" / "img" / "3.png").write_bytes(b"\x89PNG" + os.urandom(32))
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "epoch1.pt").write_bytes(b"local only")
    for rel, data in (extra_files or {}).items():
        (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / rel).write_bytes(data)
    return run_dir


def tree_files(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
    """{relative path: content} of every file under `folder`."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.relative_to(folder).as_posix().startswith(skip)}
