"""Running git safely: fixed identity, no prompts, no locks in the user's repository."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import GitError

# Snapshots are content-addressed: the same code gives the same commit on any machine.
_FIXED_DATE = "1700000000 +0000"
IDENTITY = {
    "GIT_AUTHOR_NAME": "flowillower", "GIT_AUTHOR_EMAIL": "flowillower@localhost",
    "GIT_COMMITTER_NAME": "flowillower", "GIT_COMMITTER_EMAIL": "flowillower@localhost",
    "GIT_AUTHOR_DATE": _FIXED_DATE, "GIT_COMMITTER_DATE": _FIXED_DATE,
}
# Settings for our own repository, passed per command so no config file is ever written.
_STORE_CONFIG = ("-c", "core.autocrlf=false", "-c", "core.safecrlf=false",
                 "-c", "core.fileMode=true", "-c", "core.symlinks=true",
                 "-c", "gc.auto=0", "-c", "core.quotePath=false")


def git_available() -> bool:
    return shutil.which("git") is not None


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # Variables a surrounding git hook or tool may have set must not redirect us.
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
                "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_PREFIX"):
        env.pop(var, None)
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env.update(IDENTITY)
    if extra:
        env.update(extra)
    return env


def run_git(args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            input: bytes | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run `git args...`, raising GitError with git's stderr when `check` and it fails."""
    cmd = ["git", "--no-optional-locks", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=_env(env), input=input, capture_output=True,
                              check=False)
    except FileNotFoundError:
        raise GitError("git is not installed; install git to snapshot code and share runs"
                       ) from None
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(f"`{' '.join(cmd)}` failed ({proc.returncode}): {err}")
    return proc


def out(args: Sequence[str], **kwargs) -> str:
    """stdout of a git command, stripped."""
    return run_git(args, **kwargs).stdout.decode(errors="replace").strip()


def store_git(git_dir: Path, args: Sequence[str], **kwargs) -> subprocess.CompletedProcess:
    """A git command against the store's bare repository (created on first use)."""
    git_dir = Path(git_dir).resolve()
    ensure_store_repo(git_dir)
    return run_git([f"--git-dir={git_dir}", *_STORE_CONFIG, *args], **kwargs)


def ensure_store_repo(git_dir: Path) -> Path:
    """Create the store's bare repository if missing (idempotent, race-safe)."""
    if (git_dir / "HEAD").exists():
        return git_dir
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = git_dir.with_name(f".{git_dir.name}.{os.getpid()}.tmp")
    run_git(["init", "--bare", "-q", str(tmp)])
    try:
        os.rename(tmp, git_dir)  # another process may have won the race: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return git_dir


def user_toplevel(path: Path) -> Path | None:
    """The root of the git work tree containing `path`, or None outside git."""
    proc = run_git(["-C", str(path), "rev-parse", "--show-toplevel"], check=False)
    if proc.returncode != 0:
        return None
    return Path(proc.stdout.decode().strip())


def resolve_remote(remote: str, project_dir: Path) -> str:
    """A remote name of the user's repo (read-only lookup), or a path / URL as given."""
    if "/" in remote or ":" in remote or remote.startswith("."):
        path = Path(remote).expanduser()
        return str(path.resolve()) if path.exists() else remote
    proc = run_git(["-C", str(project_dir), "config", "--get", f"remote.{remote}.url"],
                   check=False)
    url = proc.stdout.decode().strip()
    if proc.returncode != 0 or not url:
        raise GitError(f"no git remote named {remote!r} in {project_dir}; give a path or URL "
                       "(e.g. /srv/runs.git) or add the remote with `git remote add`")
    return url
