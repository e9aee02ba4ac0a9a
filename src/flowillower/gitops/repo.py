"""Running git safely.

Two kinds of repository are touched, under different rules:

* the **user's** repository is only ever *read*. Every command gets `--no-optional-locks`
  (so not even `git status`-like commands refresh their index) and runs with their own
  configuration, because ignore rules and remotes live there;
* **our** bare repository (`<store>/git`) is written with plumbing only, under an isolated
  configuration: no system or global config file is read (`GIT_CONFIG_NOSYSTEM`,
  `GIT_CONFIG_GLOBAL=/dev/null`), settings are passed with `-c` (nothing is ever written to
  a config file) and hooks are disabled, so a user's filters, textconv drivers, aliases or
  hooks never run on our behalf. Only transport (push / fetch) reads the user's global and
  system configuration: that is where their credential helpers, proxies and URL rewrites
  live. Credentials are never stored by us.

Identity comes from the environment, so nothing depends on `user.name` being set.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from ..errors import GitError

__all__ = [
    "GitError", "GitNotFoundError", "IDENTITY", "FIXED_DATE", "git_available", "git_env",
    "run_git", "popen_git", "start_user_git", "collect", "store_popen", "batch_read",
    "finish", "abandon", "out", "user_git", "store_git", "ensure_store_repo",
    "ensure_store_ignored", "user_toplevel", "resolve_remote", "redact",
]

IDENTITY = {
    "GIT_AUTHOR_NAME": "flowillower", "GIT_AUTHOR_EMAIL": "flowillower@localhost",
    "GIT_COMMITTER_NAME": "flowillower", "GIT_COMMITTER_EMAIL": "flowillower@localhost",
}
# Commits in our repo have a fixed date: the same content always gives the same commit,
# on any machine (snapshots dedupe; a run pushed from two machines is one commit).
FIXED_DATE = "1700000000 +0000"

# Inherited GIT_* variables we keep (transport, credentials, tracing, where to look for
# config). All others are dropped: GIT_DIR, GIT_INDEX_FILE, GIT_CONFIG_PARAMETERS... set by
# a surrounding git hook or tool would silently redirect our commands.
_KEEP_PREFIXES = (
    "GIT_SSH", "GIT_ASKPASS", "GIT_SSL_", "GIT_HTTP_", "GIT_PROXY_", "GIT_CURL_",
    "GIT_TRACE", "GIT_EXEC_PATH", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM", "GIT_CEILING_DIRECTORIES", "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    "GIT_ALLOW_PROTOCOL", "GIT_PROTOCOL_FROM_USER",
)

# Settings for our repository, passed on every command (never written to its config).
# hooksPath=/dev/null: a global core.hooksPath (pre-commit, husky) must not run its
# pre-push or reference-transaction hooks inside our repo.
_STORE_CONFIG = (
    "-c", "core.bare=true", "-c", "core.autocrlf=false", "-c", "core.safecrlf=false",
    "-c", "core.fileMode=true", "-c", "core.symlinks=true", "-c", "core.quotePath=false",
    "-c", f"core.hooksPath={os.devnull}", "-c", "core.fsmonitor=false",
    "-c", "gc.auto=0", "-c", "maintenance.auto=false",
    "-c", "fetch.recurseSubmodules=false", "-c", "fetch.fsckObjects=true",
    "-c", "push.recurseSubmodules=no",
)


class GitNotFoundError(GitError):
    """No `git` executable on PATH: code snapshots and push / pull are unavailable."""


def git_available() -> bool:
    """Whether a `git` executable is on PATH."""
    return shutil.which("git") is not None


def redact(text: str) -> str:
    """Hide credentials embedded in URLs (`https://user:token@host/...`)."""
    return re.sub(r"(\w+://)[^/@\s]+@", r"\1***@", text)


def git_env(*, isolated: bool, extra: Mapping[str, str] | None = None,
            identity: bool = True) -> dict[str, str]:
    """Environment of a git child process.

    `isolated` cuts off the system and global configuration (our own repository);
    otherwise the user's configuration is honoured (reading their repo, transport).
    `identity=False` leaves commit authorship to the user's configuration (a commit
    made on their behalf, e.g. a deployed site), instead of our fixed identity.
    """
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIT_") or k.startswith(_KEEP_PREFIXES)}
    env["GIT_TERMINAL_PROMPT"] = "0"  # fail with a message instead of hanging on a prompt
    env["GIT_OPTIONAL_LOCKS"] = "0"
    env["GIT_NO_LAZY_FETCH"] = "1"  # a partial clone must not go to the network on a read
    if identity:
        env.update(IDENTITY)
    if isolated:
        env["GIT_CONFIG_NOSYSTEM"] = "1"
        env["GIT_CONFIG_GLOBAL"] = os.devnull
    if extra:
        env.update(extra)
    return env


def _cmd(args: Sequence[str | os.PathLike[str]]) -> list[str]:
    return ["git", "--no-optional-locks", *(os.fspath(a) for a in args)]


def _describe(cmd: Sequence[str]) -> str:
    return redact(" ".join(c if len(c) <= 120 else c[:120] + "..." for c in cmd))


def run_git(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
            env: Mapping[str, str] | None = None, input: bytes | None = None,
            check: bool = True, isolated: bool = False, timeout: float | None = None,
            identity: bool = True) -> subprocess.CompletedProcess[bytes]:
    """Run `git --no-optional-locks <args>`; stdout and stderr come back as bytes.

    Raises `GitNotFoundError` without git, `GitError` (command + git's stderr) when
    `check` and git fails. `identity`: as for `git_env`.
    """
    cmd = _cmd(args)
    try:
        proc = subprocess.run(cmd, cwd=cwd,
                              env=git_env(isolated=isolated, extra=env, identity=identity),
                              input=input, capture_output=True, check=False, timeout=timeout)
    except FileNotFoundError:
        if cwd is not None and not Path(cwd).is_dir():
            raise GitError(f"directory {cwd} does not exist (for `{_describe(cmd)}`)"
                           ) from None
        raise GitNotFoundError("git is not installed (or not on PATH); install git to "
                               "snapshot code and share runs") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`{_describe(cmd)}` did not finish within {timeout} s") from None
    if check and proc.returncode != 0:
        raise GitError(failure_message(cmd, proc.returncode, proc.stderr))
    return proc


def failure_message(cmd: Sequence[str], code: int, stderr: bytes) -> str:
    """The text of a GitError: the command, its exit code and git's own words."""
    err = stderr.decode("utf-8", "replace").strip() or "(no error output)"
    return redact(f"`{_describe(cmd)}` failed (exit {code}): {err}")


def popen_git(args: Sequence[str | os.PathLike[str]], *, isolated: bool,
              env: Mapping[str, str] | None = None, stdout: int | None = subprocess.PIPE,
              stdin: int | None = subprocess.PIPE) -> subprocess.Popen[bytes]:
    """Start a long-lived git process (batch readers, fast-import) with pipes."""
    cmd = _cmd(args)
    try:
        return subprocess.Popen(cmd, env=git_env(isolated=isolated, extra=env),
                                stdin=stdin, stdout=stdout,
                                stderr=subprocess.PIPE)
    except FileNotFoundError:
        raise GitNotFoundError("git is not installed (or not on PATH)") from None


def start_user_git(cwd: Path, args: Sequence[str | os.PathLike[str]]
                   ) -> subprocess.Popen[bytes]:
    """Start a read-only command in the user's repository, to run alongside others."""
    return popen_git(["-C", cwd, *args], isolated=False, stdin=subprocess.DEVNULL)


def collect(proc: subprocess.Popen[bytes]) -> tuple[int, bytes, bytes]:
    """(exit code, stdout, stderr) of a process from `start_user_git`."""
    stdout, stderr = proc.communicate()
    return proc.returncode, stdout, stderr


def out(args: Sequence[str | os.PathLike[str]], **kwargs) -> str:
    """stdout of a git command, decoded and stripped."""
    return run_git(args, **kwargs).stdout.decode("utf-8", "replace").strip()


def user_git(repo: Path, args: Sequence[str | os.PathLike[str]], **kwargs
             ) -> subprocess.CompletedProcess[bytes]:
    """A read-only command in the user's repository (their config, no optional locks)."""
    return run_git(["-C", repo, *args], **kwargs)


def store_git(git_dir: Path, args: Sequence[str | os.PathLike[str]], *,
              transport: bool = False, env: Mapping[str, str] | None = None, **kwargs
              ) -> subprocess.CompletedProcess[bytes]:
    """A command against our bare repository (created on first use).

    Isolated from the user's configuration unless `transport` (push / fetch), which needs
    their credential helpers. Commits made here get the fixed identity and date.
    """
    git_dir = ensure_store_repo(Path(git_dir))
    extra = {"GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE, **(env or {})}
    return run_git([f"--git-dir={git_dir}", *_STORE_CONFIG, *args], env=extra,
                   isolated=not transport, **kwargs)


def store_popen(git_dir: Path, args: Sequence[str | os.PathLike[str]], **kwargs
                ) -> subprocess.Popen[bytes]:
    """A long-lived process against our repository (isolated configuration)."""
    git_dir = ensure_store_repo(Path(git_dir))
    return popen_git([f"--git-dir={git_dir}", *_STORE_CONFIG, *args], isolated=True, **kwargs)


def ensure_store_repo(git_dir: Path) -> Path:
    """Create our bare repository at `git_dir` if missing (idempotent, race-safe)."""
    git_dir = Path(git_dir).resolve()
    if (git_dir / "HEAD").exists():
        return git_dir
    git_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = git_dir.with_name(f".{git_dir.name}.{os.getpid()}.tmp")
    # `--template=`: a user's init.templateDir may carry live hooks.
    run_git(["-c", "init.defaultBranch=main", "init", "--bare", "-q", "--template=", tmp],
            isolated=True)
    # Should the repo sit inside someone's working tree, this hides it from `git status`
    # (git ignores unknown files inside a git directory).
    (tmp / ".gitignore").write_text("*\n")
    try:
        os.rename(tmp, git_dir)  # another process may have won the race: keep theirs
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (git_dir / "HEAD").exists():
            raise GitError(f"cannot create the store's git repository at {git_dir}") from None
    return git_dir


def ensure_store_ignored(store_root: Path) -> Path:
    """Give the store a `.gitignore` of `*`, so it never shows in the user's `git status`
    (and a `git add -A` of theirs never picks it up). Never touches the user's own files.
    """
    store_root = Path(store_root)
    if (store_root / ".git").exists():
        raise GitError(f"{store_root} is a git working tree, not a flowillower store")
    ignore = store_root / ".gitignore"
    if not ignore.exists():
        store_root.mkdir(parents=True, exist_ok=True)
        tmp = store_root / f".gitignore.{os.getpid()}.tmp"
        tmp.write_text("# flowillower store: hidden from git\n*\n")
        os.replace(tmp, ignore)
    return ignore


def user_toplevel(path: Path) -> Path | None:
    """The root of the git working tree containing `path`, or None outside git."""
    proc = user_git(path, ["rev-parse", "--show-toplevel"], check=False)
    top = proc.stdout.decode("utf-8", "surrogateescape").strip()
    if proc.returncode != 0 or not top:
        return None  # not a repository, or inside a .git directory / bare repository
    return Path(top)


_URL_LIKE = re.compile(r"^(\w[\w+.-]*://|[\w.-]+@[\w.-]+:|file:)")


def resolve_remote(remote: str, project_dirs: Sequence[Path] = (), *, push: bool = False
                   ) -> str:
    """A URL or path to hand to git.

    URLs and existing paths are used as given. Anything else is a remote name of the
    user's repository, read (never written) from its config: `pushurl` first when
    pushing, then `url`. `project_dirs` are the places to look for that repository.
    """
    if _URL_LIKE.match(remote):
        return remote
    path = Path(remote).expanduser()
    if path.exists() or os.sep in remote or "/" in remote or remote.startswith("."):
        return str(path.resolve()) if path.exists() else remote
    keys = ([f"remote.{remote}.pushurl"] if push else []) + [f"remote.{remote}.url"]
    looked: list[str] = []
    for project in project_dirs:
        if not Path(project).is_dir():
            continue
        looked.append(str(project))
        for key in keys:
            proc = user_git(Path(project), ["config", "--get", key], check=False)
            url = proc.stdout.decode("utf-8", "replace").strip()
            if proc.returncode == 0 and url:
                return url
    where = " or ".join(looked) or "the project directory"
    raise GitError(f"no git remote named {remote!r} in {where}; give a path or URL "
                   "(e.g. /srv/runs.git, git@host:team/runs.git) or add the remote with "
                   "`git remote add`")


def batch_read(proc: subprocess.Popen[bytes], shas: Sequence[str]
               ) -> Iterator[tuple[str, bytes | None]]:
    """Stream objects out of a running `git cat-file --batch`: (sha, content or None).

    The requests are written from a thread: writing them all before reading could fill
    both pipes and deadlock.
    """
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout

    def feed() -> None:
        with contextlib.suppress(OSError, ValueError):  # the reader gave up: fine
            for sha in shas:
                stdin.write(sha.encode() + b"\n")
        with contextlib.suppress(OSError, ValueError):
            stdin.close()

    writer = threading.Thread(target=feed, name="flowillower-git-batch", daemon=True)
    writer.start()
    done = False
    try:
        for sha in shas:
            header = stdout.readline()
            if not header:
                err = proc.stderr.read() if proc.stderr else b""
                raise GitError(failure_message(proc.args, proc.wait(), err))
            fields = header.split()
            if len(fields) < 3 or fields[1] == b"missing":
                yield sha, None
                continue
            size = int(fields[2])
            data = stdout.read(size)
            stdout.read(1)  # the newline after each object
            yield sha, data
        done = True
    finally:
        if not done:
            abandon(proc)  # unblocks a writer stuck on a full pipe
        writer.join()


def abandon(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we no longer need (after an error on our side); never raises."""
    with contextlib.suppress(OSError):
        proc.kill()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
    proc.wait()


def finish(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a git process started with `popen_git`; raise GitError if it failed.

    Our ends of stdin / stdout are closed first: a process abandoned half-way (an error
    on our side) then ends on a broken pipe instead of blocking on a full one.
    """
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None and not pipe.closed:
            with contextlib.suppress(OSError, ValueError):
                pipe.close()
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr is not None:
        proc.stderr.close()
    code = proc.wait()
    if code != 0:
        raise GitError(failure_message(proc.args, code, err))
