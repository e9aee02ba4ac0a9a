"""Reading snapshots back: file lists, single files, diffs and checkouts into a folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..errors import GitError
from .paths import GITLINK, decode_path, is_inside, safe_rel
from .repo import abandon, batch_read, finish, store_git, store_popen

__all__ = ["list_files", "read_file", "diff_snapshots", "checkout_snapshot"]


def list_files(store_git_dir: Path, sha: str) -> list[str]:
    """Paths of every file in a snapshot (submodules included as their path)."""
    raw = store_git(store_git_dir, ["ls-tree", "-r", "-z", "--full-tree", "--name-only",
                                    _commitish(sha)]).stdout
    return [decode_path(p) for p in raw.split(b"\0") if p]


def read_file(store_git_dir: Path, sha: str, path: str) -> bytes:
    """The content of one file of a snapshot."""
    proc = store_git(store_git_dir, ["cat-file", "blob", f"{_commitish(sha)}:{path}"],
                     check=False)
    if proc.returncode != 0:
        raise GitError(f"snapshot {sha[:12]} has no file {path!r} (or the snapshot is not in "
                       f"{store_git_dir}): {proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def diff_snapshots(store_git_dir: Path, sha_a: str, sha_b: str) -> str:
    """Unified diff (with renames) from snapshot `sha_a` to snapshot `sha_b`."""
    return store_git(store_git_dir, ["diff", "--no-color", "--no-ext-diff", "--no-textconv",
                                     "-M", _commitish(sha_a), _commitish(sha_b), "--"]
                     ).stdout.decode("utf-8", "replace")


def _commitish(sha: str) -> str:
    sha = str(sha)
    if not sha or sha.startswith("-") or any(c.isspace() for c in sha):
        raise GitError(f"not a snapshot id: {sha!r}")
    return sha


def _enclosing_worktree(path: Path) -> Path | None:
    """The git working tree `path` would be inside (walks up; no subprocess)."""
    for candidate in (path, *path.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def checkout_snapshot(store_git_dir: Path, sha: str, dest_dir: Path) -> Path:
    """Write a snapshot's files into `dest_dir` and return it.

    `dest_dir` must be new or an empty directory. A *new* directory may not be created
    inside a git working tree (the files would show up in that repository's status):
    create the empty directory yourself to confirm you want it there. Files are written
    byte for byte (no eol conversion or filters), with their executable bit and symlinks;
    submodules become empty directories.
    """
    store_git_dir = Path(store_git_dir).resolve()
    dest = Path(dest_dir).expanduser().resolve()
    existed = dest.exists()
    if existed and (not dest.is_dir() or any(dest.iterdir())):
        raise GitError(f"{dest} is not an empty directory; checkout only writes into a new "
                       "or empty one, so nothing of yours is overwritten")
    if is_inside(dest, store_git_dir) or ".git" in dest.parts:
        raise GitError(f"refusing to write a checkout inside a git directory ({dest})")
    if not existed:
        worktree = _enclosing_worktree(dest.parent)
        if worktree is not None:
            raise GitError(f"{dest} is inside the git working tree {worktree}: the files would "
                           "appear in that repository. Pick a folder outside it, or create "
                           "the empty folder yourself first to confirm")
    raw = store_git(store_git_dir, ["ls-tree", "-r", "-z", "--full-tree", _commitish(sha)]
                    ).stdout
    items: list[tuple[str, str, bytes]] = []
    for record in raw.split(b"\0"):
        if record:
            meta, _, rel = record.partition(b"\t")
            mode, _kind, obj = meta.decode().split()
            if not safe_rel(rel):
                raise GitError(f"snapshot {sha[:12]} holds an unsafe path {rel!r}; not written")
            items.append((mode, obj, rel))
    dest.mkdir(parents=True, exist_ok=True)
    base = os.fsencode(dest)
    try:
        blobs = [obj for mode, obj, _ in items if mode != GITLINK]
        contents: dict[str, bytes] = {}
        reader = store_popen(store_git_dir, ["cat-file", "--batch"])
        try:
            for obj, data in batch_read(reader, list(dict.fromkeys(blobs))):
                if data is None:
                    raise GitError(f"object {obj} of snapshot {sha[:12]} is missing")
                contents[obj] = data
        except BaseException:
            abandon(reader)
            raise
        finish(reader)
        links = []
        for mode, obj, rel in items:
            target = base + b"/" + rel
            os.makedirs(os.path.dirname(target), exist_ok=True)
            if mode == GITLINK:
                os.makedirs(target, exist_ok=True)
            elif mode == "120000":
                links.append((contents[obj], target))
            else:
                with open(target, "wb") as fh:
                    fh.write(contents[obj])
                if mode == "100755":
                    os.chmod(target, 0o755)
        # Links last: no file of the snapshot is ever written through one of them.
        for link_to, target in links:
            try:
                os.symlink(link_to, target)
            except OSError:  # no symlink support (Windows without privilege)
                with open(target, "wb") as fh:
                    fh.write(link_to)
    except BaseException:
        if not existed:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() \
                    else child.unlink()
        raise
    return dest
