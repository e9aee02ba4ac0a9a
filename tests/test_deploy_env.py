"""`deploy` runs git only through gitops/repo.py: a surrounding tool's GIT_DIR cannot
redirect the throwaway clone's commands into the user's own repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flowillower.server.demo import make_demo_store
from flowillower.server.deploy import deploy
from flowillower.server.export import export_site


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def test_deploy_ignores_a_stray_git_dir_and_keeps_the_users_identity(tmp_path, monkeypatch):
    root = tmp_path / "proj" / ".flowillower"
    make_demo_store(root, runs=1, steps=20, names=["a"], model=False, media=False)
    site = tmp_path / "site"
    export_site(root, site)
    user = tmp_path / "user"
    user.mkdir()
    git(user, "init", "-q", "-b", "main")
    git(user, "-c", "user.name=U", "-c", "user.email=u@x", "commit", "-q", "--allow-empty",
        "-m", "mine")
    before = (git(user, "rev-parse", "HEAD"), git(user, "ls-files"),
              (user / ".git" / "config").read_text())
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    # As inside a git hook or `git rebase --exec`: every plain `git` would act on `user`.
    monkeypatch.setenv("GIT_DIR", str(user / ".git"))
    monkeypatch.setenv("GIT_WORK_TREE", str(user))
    monkeypatch.setenv("GIT_INDEX_FILE", str(user / ".git" / "index"))
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tname = Ada\n\temail = ada@example.org\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)

    result = deploy(site, str(remote), message="site")

    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(name)
    assert result["pushed"]
    after = (git(user, "rev-parse", "HEAD"), git(user, "ls-files"),
             (user / ".git" / "config").read_text())
    assert after == before  # no commit, no staged site files, no remote added
    log = git(remote, "log", "--format=%s|%an|%ae", "main").strip()
    # The commit is the user's own (their global identity), not flowillower's.
    assert log == "site|Ada|ada@example.org"
    assert git(remote, "ls-tree", "--name-only", "main").split().count("index.html") == 1
