"""`deploy(site_or_store, target)`: push the static viewer, and the runs, to a Hugging
Face Space, a ModelScope studio or any git remote.

* ``hf:USER/SPACE`` or ``https://huggingface.co/spaces/USER/SPACE``: a static Space
  (README front matter ``sdk: static``); ``ms:USER/STUDIO`` or
  ``https://www.modelscope.cn/studios/USER/STUDIO``: a studio (``deployspec.entry_file``).
  For both, images and other binary or large files go through Git LFS (`deploy_lfs`).
* anything else is a git URL or path, used as is (no LFS unless asked: a plain host
  such as GitHub Pages would serve the pointers).

From a store, the run data travel too, on the refs `flowillower push` uses, so a
teammate can `flowillower pull` from the same repository. Everything happens in a
temporary repository: the user's repository, index and config are never touched, and
none of the user's git hooks runs. A token comes from `HF_TOKEN` /
`MODELSCOPE_API_TOKEN` (through a credential helper given on the command line, see
`deploy_targets`) or from the user's own git setup; it is never written anywhere. The
remote's history is kept: the site lands as one new commit on top of it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..errors import GitError, StoreError
from ..gitops.fastimport import whole_blobs
from ..gitops.repo import redact, run_git
from . import deploy_lfs
from .deploy_targets import Target, parse_target
from .deploy_targets import readme as _readme
from .export import MARKER, export_site

__all__ = ["deploy", "resolve_target", "readme", "parse_target"]
_RUN_REFS = "refs/flowillower/*:refs/flowillower/*"


def resolve_target(target: str) -> tuple[str, bool]:
    """(git URL, whether it is a hosted Space / studio)."""
    parsed = parse_target(target)
    return parsed.url, parsed.hosted


def readme(title: str, space: bool = False, kind: str | None = None) -> str:
    """The site's README; a Space's (or, with `kind="ms"`, a studio's) front matter tells
    the host to serve the static files."""
    return _readme(title, kind or ("hf" if space else "git"))


class _Clone:
    """Git commands in the throwaway repository, through the one git wrapper: the user's
    configuration (identity, proxies, URL rewrites) applies, their hooks never run, and
    stray GIT_DIR-like variables are dropped, so nothing can reach the user's repo."""

    def __init__(self, work: Path, target: Target) -> None:
        self.work, self.target = work, target
        self.auth_args: list[str] = []
        self.auth_env: dict[str, str] = {}

    def authenticate(self) -> None:
        """Credentials for the host `origin` leads to once the user's URL rewrites
        (`url.<base>.insteadOf`) are applied, as git itself will see it."""
        url = self(["ls-remote", "--get-url", "origin"]).stdout.decode().strip()
        host = urlsplit(url).netloc.rpartition("@")[2] if "://" in url else ""
        self.auth_args, self.auth_env = self.target.auth(host)

    def __call__(self, args: Sequence[str], input: bytes | None = None, check: bool = True,
                 *, remote: bool = False, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[bytes]:
        extra = {"GIT_TERMINAL_PROMPT": os.environ.get("GIT_TERMINAL_PROMPT", "0"),
                 "GIT_LFS_SKIP_SMUDGE": "1", **(env or {})}  # old site's LFS: never fetched
        pre = ["-c", f"core.hooksPath={os.devnull}"]
        if remote:
            pre += self.auth_args
            extra.update(self.auth_env)
        return run_git([*pre, "-C", self.work, *args], input=input, check=check, env=extra,
                       identity=False)


@contextlib.contextmanager
def _workspace(workdir: str | Path | None) -> Iterator[Path]:
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="flowillower-deploy-") as tmp:
            yield Path(tmp)
        return
    path = Path(workdir)
    if path.exists() and any(path.iterdir()):
        raise GitError(f"{path} is not empty; give deploy(workdir=) a new folder")
    path.mkdir(parents=True, exist_ok=True)
    yield path


def _checkout(git: _Clone, branch: str) -> bool:
    """An empty repository with `origin`, its index at the tip of `branch` if the remote
    has one (depth 1). Fails, before anything is written anywhere, when the remote cannot be
    read (a typo, no access): a push would fail the same way."""
    git.work.mkdir()
    git(["init", "--quiet", "--template=", "-b", branch])
    git(["config", "core.hooksPath", os.devnull])  # also for pushes *into* this repo
    git(["remote", "add", "origin", git.target.url])
    git.authenticate()
    listed = git(["ls-remote", "origin", f"refs/heads/{branch}"], check=False, remote=True)
    if listed.returncode != 0:
        err = listed.stderr.decode("utf-8", "replace").strip()
        raise GitError(redact(f"cannot read {git.target.url}: {err}"))
    if not listed.stdout.strip():
        return False  # a new repository or branch: the site starts its history
    tip = f"refs/remotes/origin/{branch}"
    git(["fetch", "--quiet", "--depth", "1", "origin", f"refs/heads/{branch}:{tip}"],
        remote=True)
    # The index only: the files are replaced by the new site anyway, so none is checked
    # out, except the remote's .gitattributes (kept, with our LFS block rewritten).
    git(["reset", "--quiet", tip])
    if git(["cat-file", "-e", f"{tip}:.gitattributes"], check=False).returncode == 0:
        git(["checkout", tip, "--", ".gitattributes"])
    return True


def _replace_site(work: Path, site: Path) -> list[str]:
    """Put `site` in place of the old one (git's files and the remote's .gitattributes
    stay). Links are never copied (their target could be anything on this machine)."""
    for child in work.iterdir():
        if child.name in (".git", ".gitattributes"):
            continue
        shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
    skipped: list[str] = []

    def ignore(folder: str, names: list[str]) -> set[str]:
        links = {n for n in names if os.path.islink(os.path.join(folder, n))}
        skipped.extend(Path(folder, n).relative_to(site).as_posix() for n in sorted(links))
        return links | ({".git"} & set(names))  # a repository inside the site: not ours

    shutil.copytree(site, work, dirs_exist_ok=True, ignore=ignore)
    return skipped


def _export(src: Path, out: Path, runs_filter: str | None) -> Path:
    """Export the store `src` into `out` (served over HTTP: no file:// twins); returns
    the store's root."""
    try:
        export_site(src, out, runs_filter, files=False)  # served over HTTP
    except StoreError as exc:
        raise StoreError(f"{src} is neither an exported site nor a store: {exc}") from None
    from ..store.catalog import Store
    return Store(src, must_exist=True).root


def _run_ids(store_root: Path, runs_filter: str | None) -> list[str] | None:
    if runs_filter is None:
        return None
    from ..queries.filters import row_filter
    from ..store.catalog import Store
    return [row["id"] for row in Store(store_root, must_exist=True).runs(row_filter(runs_filter))]


def _push_runs(git: _Clone, store_root: Path, ids: list[str] | None, **options: bool
               ) -> dict[str, Any]:
    """The run data on the refs `flowillower push` uses: `gitops.sync.push` writes them
    into the throwaway repository (a local push), which then sends them with the same
    authentication as the site. A refusal here leaves the deployed site in place."""
    from ..gitops.sync import push as push_runs

    if ids == []:
        return {"runs": 0, "pushed": 0, "up_to_date": 0, "rejected": [], "code": 0,
                "skipped_large": [], "catalog": None}
    local = push_runs(store_root, str(git.work), run_ids=ids, **options)
    result = {"runs": 0, "pushed": 0, "up_to_date": 0, "rejected": [], "code": local["code"],
              "skipped_large": local["skipped_large"]}
    # big blobs go whole (as the store keeps them): the host serves a filtered pull of
    # some runs without searching deltas again
    proc = git([*whole_blobs(), "push", "--porcelain", "--no-verify", "origin", _RUN_REFS],
               check=False, remote=True)
    total, declined = 0, []
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 2 or not parts[1].startswith("refs/flowillower/runs/"):
            continue
        total += 1
        run_id = parts[1].split(":")[0].removeprefix("refs/flowillower/runs/")
        if parts[0] == "!" and "remote rejected" in line:
            declined.append(run_id)  # the host's policy, not a teammate's newer version
        elif parts[0] == "!":
            result["rejected"].append(run_id)
        elif parts[0] == "=":
            result["up_to_date"] += 1
        else:
            result["pushed"] += 1
    if proc.returncode != 0 and (declined or not result["rejected"]):
        err = proc.stderr.decode("utf-8", "replace").strip()
        result["error"] = redact(f"the remote refused the run refs: {err[-2000:]}")
    result["runs"] = total - len(result["rejected"]) - len(declined)
    result["catalog"] = _push_catalog(git, store_root)
    return result


def _push_catalog(git: _Clone, store_root: Path) -> dict[str, Any]:
    """Bring the remote's run catalog up to date for the runs this deploy sent, so a
    `pull --runs FILTER` from it fetches only matching runs. Written in the store's
    repository (which has the run commits) and pushed from there as a fast-forward, with
    the deploy's credentials, as `flowillower push` does it (`catalogpush`): the clone
    cannot, its new catalog would not descend from the remote's. Never raises: the runs
    are on the remote whatever happens here (`["error"]` says why the catalog is not)."""
    from ..gitops.catalogpush import update_catalog
    from ..gitops.refs import CATALOG_REF, RUN_REF_PREFIX, list_refs, ls_remote, transport_env

    git_dir = store_root / "git"
    env = transport_env(git.auth_args, git.auth_env)
    sent = list_refs(git.work / ".git", RUN_REF_PREFIX)  # what this deploy staged
    try:
        there = ls_remote(git_dir, git.target.url, [RUN_REF_PREFIX + "*", CATALOG_REF], env)
    except GitError as exc:
        return {"rows": 0, "attempts": 0, "seconds": 0.0,
                "error": f"the remote's run catalog was not updated: {exc}"}
    # only runs whose ref on the remote is the version sent (a refused or newer one is
    # left to whoever pushed it)
    landed = {ref.removeprefix(RUN_REF_PREFIX): sha for ref, sha in sent.items()
              if there.get(ref) == sha}
    return update_catalog(git_dir, git.target.url, landed, there, env)


def _send(git: _Clone, args: list[str], what: str) -> None:
    """A transfer to the remote; on failure, git's own words without our command line
    (the credential helper's text would only hide them)."""
    proc = git(args, check=False, remote=True)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-2000:]
        raise GitError(redact(f"{what} {git.target.url} failed: {err}"))


def deploy(site_or_store: str | Path, target: str, *, runs_filter: str | None = None,
           branch: str = "main", message: str = "flowillower: update site",
           title: str = "flowillower runs", lfs: bool | None = None, runs: bool = True,
           include_large: bool = False, no_code: bool = False,
           workdir: str | Path | None = None) -> dict[str, Any]:
    """Push a site folder (or a fresh export of a store) to `target`; returns a summary.

    `lfs`: send binary and large files through Git LFS (default: for Spaces and studios
    only). `runs`: from a store, also push the runs' data refs (default; `include_large`
    and `no_code` as for `flowillower push`). `workdir`: build
    the throwaway repository there (a new folder, kept) instead of a temporary one.
    Returns ``{"url", "page", "kind", "branch", "pushed", "commit", "space", "lfs" (files
    sent through LFS), "skipped" (links left out), "runs" (None for a site folder, else
    like `flowillower push`: runs, pushed, up_to_date, rejected, code, skipped_large,
    catalog (the remote's run catalog update, as `push` reports it), and "error" when
    the remote refused them)}``.
    """
    tgt = parse_target(target)
    use_lfs = tgt.hosted if lfs is None else lfs
    src = Path(site_or_store)
    with _workspace(workdir) as tmp:
        store_root = None
        site = src
        if not (src / MARKER).is_file():
            site = tmp / "site"
            store_root = _export(src, site, runs_filter)
        git = _Clone(tmp / "repo", tgt)
        _checkout(git, branch)
        skipped = _replace_site(git.work, site)
        (git.work / "README.md").write_text(readme(title, kind=tgt.kind), encoding="utf-8")
        through_lfs = deploy_lfs.lfs_files(git.work) if use_lfs else []
        if through_lfs:
            deploy_lfs.ensure_lfs(git)  # before anything is pushed
            attrs = git.work / ".gitattributes"
            old = attrs.read_text(encoding="utf-8", errors="replace") if attrs.is_file() else ""
            attrs.write_text(deploy_lfs.attributes(through_lfs, old), encoding="utf-8")
            git(["lfs", "install", "--local", "--skip-repo"])
        if not git(["config", "user.email"], check=False).stdout.strip():
            # No identity configured: set one for this throwaway repository only.
            git(["config", "user.email", "flowillower@localhost"])
            git(["config", "user.name", "flowillower"])
        git(["add", "-A"])
        result: dict[str, Any] = {
            "url": redact(tgt.url), "page": tgt.page, "kind": tgt.kind, "branch": branch,
            "space": tgt.hosted, "lfs": through_lfs, "skipped": skipped, "pushed": False}
        if git(["status", "--porcelain"]).stdout.strip():
            git(["commit", "--quiet", "--no-verify", "-m", message])
            raw = deploy_lfs.not_pointers(git, through_lfs)
            if raw:
                raise GitError(f"{len(raw)} file(s) would reach git history without LFS "
                               f"(e.g. {raw[0]!r}); nothing was pushed")
            if through_lfs:
                _send(git, ["lfs", "push", "origin", "HEAD"],
                      f"uploading {len(through_lfs)} file(s) to the LFS storage of")
            _send(git, [*whole_blobs(), "push", "--quiet", "--no-verify", "origin",
                        f"HEAD:refs/heads/{branch}"], "pushing the site to")
            result.update(pushed=True,
                          commit=git(["rev-parse", "HEAD"]).stdout.decode().strip())
        else:
            result["reason"] = "the remote already has this site"
        result["runs"] = None
        if store_root is not None and runs:
            result["runs"] = _push_runs(git, store_root, _run_ids(store_root, runs_filter),
                                        include_large=include_large, no_code=no_code)
    return result
