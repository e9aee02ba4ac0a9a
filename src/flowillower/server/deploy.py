"""`deploy(site_or_store, target)`: push the static UI to a Hugging Face Space or a git remote.

* ``hf:USER/SPACE`` -> ``https://huggingface.co/spaces/USER/SPACE`` with a README whose
  front matter says ``sdk: static`` (the Space must exist; create it on the Hub first).
* anything else is a git URL or path, used as is.

Everything happens in a temporary clone: the user's repository, index and config are
never touched. Credentials come from the user's own git setup (credential helper, SSH
agent, ``~/.git-credentials``); nothing is read from or written to our files. The
remote's history is kept: the site lands as one new commit on top of it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError, StoreError
from ..gitops.repo import run_git
from .export import MARKER, export_site

_HF = re.compile(r"^hf:([A-Za-z0-9][\w.-]*)/([A-Za-z0-9][\w.-]*)$")
# Binary files the Hub only accepts through LFS / Xet.
_BINARY = ("*.png", "*.jpg", "*.jpeg", "*.gif", "*.webp", "*.bmp", "*.pt", "*.bin", "*.npz")


def resolve_target(target: str) -> tuple[str, bool]:
    """(git URL, whether it is a Hugging Face Space)."""
    m = _HF.match(target)
    if m:
        return f"https://huggingface.co/spaces/{m.group(1)}/{m.group(2)}", True
    if target.startswith("hf:"):
        raise GitError(f"{target!r}: write a Space as hf:USER/SPACE")
    return target, False


def _git(args: list[str], cwd: Path, check: bool = True
         ) -> subprocess.CompletedProcess[bytes]:
    """A git command in the throwaway clone, through the one git wrapper: the user's
    configuration (credentials, proxies) and identity apply; stray GIT_DIR-like variables
    do not, so nothing can be redirected into the user's own repository."""
    # A user who allows prompts (GIT_TERMINAL_PROMPT=1) may type a password for the push.
    prompt = {"GIT_TERMINAL_PROMPT": os.environ.get("GIT_TERMINAL_PROMPT", "0")}
    return run_git(["-C", cwd, *args], check=check, env=prompt, identity=False)


def readme(title: str, space: bool) -> str:
    """The site's README; a Space's front matter tells the Hub to serve static files."""
    body = (f"# {title}\n\nExperiment runs exported by flowillower "
            "(`flowillower export` / `flowillower deploy`). Open index.html.\n")
    if not space:
        return body
    return ("---\n"
            f"title: {title}\n"
            "emoji: 📈\n"
            "colorFrom: blue\n"
            "colorTo: indigo\n"
            "sdk: static\n"
            "app_file: index.html\n"
            "pinned: false\n"
            "---\n\n" + body)


def _has_binaries(site: Path) -> bool:
    return any(next(site.rglob(p), None) is not None for p in _BINARY)


def deploy(site_or_store: str | Path, target: str, *, runs_filter: str | None = None,
           branch: str = "main", message: str = "flowillower: update site",
           title: str = "flowillower runs") -> dict[str, Any]:
    """Push a site folder (or a fresh export of a store) to `target`; returns a summary."""
    url, space = resolve_target(target)
    src = Path(site_or_store)
    with tempfile.TemporaryDirectory(prefix="flowillower-deploy-") as tmp:
        tmp_path = Path(tmp)
        if (src / MARKER).is_file():
            site = src
        else:
            site = tmp_path / "site"
            try:
                export_site(src, site, runs_filter, files=False)  # served over HTTP
            except StoreError as exc:
                raise StoreError(f"{src} is neither an exported site nor a store: {exc}"
                                 ) from None
        work = tmp_path / "repo"
        cloned = _git(["clone", "--quiet", "--depth", "1", "--branch", branch, url, str(work)],
                      tmp_path, check=False)
        if cloned.returncode != 0:
            # A new (empty) remote or a missing branch: start a repository of our own.
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            _git(["init", "--quiet"], work)
            _git(["checkout", "--quiet", "-b", branch], work)
            _git(["remote", "add", "origin", url], work)
        for child in work.iterdir():  # replace the old site, keep git's own files
            if child.name in (".git", ".gitattributes"):
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        shutil.copytree(site, work, dirs_exist_ok=True)
        (work / "README.md").write_text(readme(title, space), encoding="utf-8")
        if space and _has_binaries(work):
            if _git(["lfs", "version"], work, check=False).returncode != 0:
                raise GitError("Hugging Face only accepts images through git LFS: install "
                               "git-lfs (https://git-lfs.com) and deploy again")
            _git(["lfs", "install", "--local"], work)
            _git(["lfs", "track", *_BINARY], work)
        if not _git(["config", "user.email"], work, check=False).stdout.strip():
            # No identity configured: set one for this throwaway clone only.
            _git(["config", "user.email", "flowillower@localhost"], work)
            _git(["config", "user.name", "flowillower"], work)
        _git(["add", "-A"], work)
        if not _git(["status", "--porcelain"], work).stdout.strip():
            return {"url": url, "branch": branch, "pushed": False, "space": space,
                    "reason": "the remote already has this site"}
        _git(["commit", "--quiet", "-m", message], work)
        sha = _git(["rev-parse", "HEAD"], work).stdout.decode().strip()
        _git(["push", "--quiet", "origin", f"HEAD:refs/heads/{branch}"], work)
    return {"url": url, "branch": branch, "pushed": True, "commit": sha, "space": space}
