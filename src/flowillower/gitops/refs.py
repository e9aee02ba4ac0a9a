"""Where runs and snapshots live in the store's repository, and where remotes are named."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..errors import GitError
from .repo import redact, store_git

__all__ = ["RUN_REF_PREFIX", "INCOMING_PREFIX", "INCOMING_CODE_PREFIX", "CODE_PREFIX",
           "CATALOG_REF", "list_refs", "ls_remote", "project_dirs", "transport_env"]

RUN_REF_PREFIX = "refs/flowillower/runs/"
INCOMING_PREFIX = "refs/flowillower/incoming/"
# Code refs as a remote has them, before their names are checked against their ids.
INCOMING_CODE_PREFIX = "refs/flowillower/incoming-code/"
CODE_PREFIX = "refs/flowillower/code/"
# A remote's catalog of its runs' filter rows (`catalog`); only ever a hint.
CATALOG_REF = "refs/flowillower/catalog"
# git's words for a push refused because the remote moved meanwhile (a race: fetch and
# try again); any other refusal (a hook, permissions) stays a refusal.
BEHIND_REASONS = ("fetch first", "non-fast-forward", "stale info", "already exists")


def list_refs(git_dir: Path, prefix: str) -> dict[str, str]:
    """{ref name: object id} of our refs under `prefix`."""
    listing = store_git(git_dir, ["for-each-ref", "--format=%(refname) %(objectname)",
                                  prefix]).stdout.decode()
    return dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)


def ls_remote(git_dir: Path, url: str, patterns: list[str],
              env: Mapping[str, str] | None = None) -> dict[str, str]:
    """{ref: object id} of the remote's refs named exactly or matched by a `prefix*`
    pattern (one `git ls-remote`); GitError when the remote cannot be read. `env`: extra
    variables for git (a deploy's credentials, `transport_env`)."""
    proc = store_git(git_dir, ["ls-remote", url, *patterns], transport=True, check=False,
                     env=env)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise GitError(redact(f"reading the refs of {url} failed: {err}"))
    exact = {p for p in patterns if not p.endswith("*")}
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    refs = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, ref = line.partition("\t")
        if ref in exact or ref.startswith(prefixes):  # ls-remote matches ref name tails
            refs[ref] = sha
    return refs


def project_dirs(store_root: Path) -> list[Path]:
    """Where a remote *name* is looked up: the project holding the store, then cwd."""
    return list(dict.fromkeys([Path(store_root).parent, Path.cwd()]))


def transport_env(config: Sequence[str], env: Mapping[str, str] | None = None
                  ) -> dict[str, str]:
    """Git's `-c key=value` options (`config`: ["-c", "k=v", ...]) as environment
    variables (`GIT_CONFIG_COUNT`, git >= 2.31), plus `env`: what a command given only an
    environment (`ls_remote`, a catalog update) needs to authenticate as a deploy does."""
    pairs = [config[i + 1] for i, arg in enumerate(config[:-1]) if arg == "-c"]
    out = dict(env or {})
    if pairs:
        out["GIT_CONFIG_COUNT"] = str(len(pairs))
        for i, pair in enumerate(pairs):
            key, _, value = pair.partition("=")
            out[f"GIT_CONFIG_KEY_{i}"], out[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return out
