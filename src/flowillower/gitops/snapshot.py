"""Code snapshots: the working tree as the user sees it, as a commit in the store's repo.

HEAD + uncommitted changes + untracked files that are not ignored, minus files over a
size cap (listed). Blobs are hashed straight from the user's files into `<store>/git`
through a temporary index, so the user's index, HEAD, refs, stash and config are never
written. The commit has a fixed date and no parent: the same code always gives the same
commit, on any machine.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from ..errors import GitError
from .repo import out, run_git, store_git, user_toplevel

SIZE_CAP = 5 * 2**20
_SKIP_DIRS = {".git", ".flowillower", "__pycache__", ".venv", "venv", "node_modules",
              ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"}
SNAPSHOT_REF_PREFIX = "refs/flowillower/code/"


def _git_files(top: Path) -> tuple[list[str], list[tuple[str, str]]]:
    """(paths of tracked + untracked-unignored files, [(path, sha)] of submodules)."""
    tracked = run_git(["-C", str(top), "ls-files", "-z", "-s"]).stdout.split(b"\0")
    files: list[str] = []
    gitlinks: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in tracked:
        if not entry:
            continue
        meta, _, path_b = entry.partition(b"\t")
        mode, sha, _stage = meta.decode().split()
        path = path_b.decode("utf-8", "surrogateescape")
        if path in seen:  # conflicted entries appear once per stage
            continue
        seen.add(path)
        if mode == "160000":
            gitlinks.append((path, sha))
        else:
            files.append(path)
    untracked = run_git(["-C", str(top), "ls-files", "-z", "-o", "--exclude-standard"]).stdout
    files += [p.decode("utf-8", "surrogateescape") for p in untracked.split(b"\0") if p]
    return files, gitlinks


def _walk_files(top: Path) -> list[str]:
    files = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(".")]
        rel = os.path.relpath(dirpath, top)
        for name in filenames:
            files.append(name if rel == "." else os.path.join(rel, name))
    return files


def _submodule_sha(top: Path, path: str, recorded: str) -> str:
    """The commit a submodule's work tree is at (falls back to the recorded one)."""
    proc = run_git(["-C", str(top / path), "rev-parse", "--verify", "-q", "HEAD"], check=False)
    sha = proc.stdout.decode().strip()
    return sha if proc.returncode == 0 and len(sha) == 40 else recorded


def _blob_sha(data: bytes) -> str:
    """The id git gives a blob with this content (hashed here: no process, no write)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _write_missing_blobs(store_git_dir: Path, blobs: dict[str, bytes]) -> int:
    """Add the blobs the store lacks, all in one pack (1,000 loose files cost ~0.4 s)."""
    if not blobs:
        return 0
    shas = list(blobs)
    check = store_git(store_git_dir, ["cat-file", "--batch-check"],
                      input="\n".join(shas).encode() + b"\n").stdout.decode().splitlines()
    missing = [line.split()[0] for line in check if line.endswith(" missing")]
    if not missing:
        return 0
    stream = bytearray()
    for sha in missing:
        data = blobs[sha]
        stream += b"blob\ndata %d\n" % len(data) + data + b"\n"
    store_git(store_git_dir, ["fast-import", "--quiet"], input=bytes(stream))
    return len(missing)


def take_snapshot(source_dir: Path, store_git_dir: Path, size_cap: int = SIZE_CAP,
                  message: str = "flowillower code snapshot") -> dict[str, Any]:
    """Snapshot the code around `source_dir` into `store_git_dir`.

    Returns the `git` record of run.json: `head`, `branch` (None outside git, on an
    unborn branch or a detached HEAD), `dirty`, `snapshot` (commit sha), `skipped`
    ([path, size] of files over `size_cap`), `root` (the snapshotted directory), `files`.
    """
    source_dir = Path(source_dir).resolve()
    top = user_toplevel(source_dir)
    in_git = top is not None
    info: dict[str, Any] = {"head": None, "branch": None, "dirty": None, "root": None,
                            "snapshot": None, "skipped": [], "files": 0}
    if top is not None:
        head = run_git(["-C", str(top), "rev-parse", "--verify", "-q", "HEAD"], check=False)
        info["head"] = head.stdout.decode().strip() or None
        branch = run_git(["-C", str(top), "symbolic-ref", "-q", "--short", "HEAD"], check=False)
        info["branch"] = branch.stdout.decode().strip() or None
        files, gitlinks = _git_files(top)
    else:
        top = source_dir
        files, gitlinks = _walk_files(top), []
    info["root"] = str(top)
    entries: list[tuple[str, str, str]] = []  # (mode, blob sha, path)
    blobs: dict[str, bytes] = {}
    for rel in files:
        if rel.startswith(".flowillower/") or "/.flowillower/" in rel:
            continue
        path = top / rel
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                mode, data = "120000", os.readlink(path).encode("utf-8", "surrogateescape")
            elif not stat.S_ISREG(st.st_mode):
                continue
            elif st.st_size > size_cap:
                info["skipped"].append([rel, st.st_size])
                continue
            else:
                mode = "100755" if st.st_mode & 0o111 else "100644"
                data = path.read_bytes()
        except OSError:
            continue  # tracked but deleted in the working tree: not part of it
        sha = _blob_sha(data)
        blobs[sha] = data
        entries.append((mode, sha, rel))
    entries += [("160000", _submodule_sha(top, p, sha), p) for p, sha in gitlinks]
    _write_missing_blobs(store_git_dir, blobs)
    with tempfile.TemporaryDirectory(prefix="fw-snap-") as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if entries:
            listing = b"".join(f"{mode} {sha}\t".encode() + rel.encode("utf-8", "surrogateescape")
                               + b"\0" for mode, sha, rel in entries)
            store_git(store_git_dir, ["update-index", "-z", "--add", "--index-info"], env=env,
                      input=listing)
        tree = store_git(store_git_dir, ["write-tree"], env=env).stdout.decode().strip()
    commit = store_git(store_git_dir, ["commit-tree", tree, "-m", message]
                       ).stdout.decode().strip()
    store_git(store_git_dir, ["update-ref", SNAPSHOT_REF_PREFIX + commit, commit])
    info["snapshot"] = commit
    info["files"] = len(entries)
    if info["head"]:
        # Same content => same tree id: the code differs from HEAD iff the trees differ.
        head_tree = out(["-C", info["root"], "rev-parse", info["head"] + "^{tree}"])
        info["dirty"] = head_tree != tree or bool(info["skipped"])
    elif in_git:
        info["dirty"] = bool(entries)  # unborn branch: anything present is uncommitted
    return info


def list_files(store_git_dir: Path, sha: str) -> list[str]:
    """Paths of the files in a snapshot."""
    raw = store_git(store_git_dir, ["ls-tree", "-r", "-z", "--name-only", sha]).stdout
    return [p.decode("utf-8", "surrogateescape") for p in raw.split(b"\0") if p]


def read_file(store_git_dir: Path, sha: str, path: str) -> bytes:
    """One file of a snapshot."""
    return store_git(store_git_dir, ["cat-file", "blob", f"{sha}:{path}"]).stdout


def diff_snapshots(store_git_dir: Path, sha_a: str, sha_b: str) -> str:
    """A unified diff between two snapshots."""
    return store_git(store_git_dir, ["diff", "--no-color", "--no-ext-diff", sha_a, sha_b]
                     ).stdout.decode("utf-8", "replace")


def checkout_snapshot(store_git_dir: Path, sha: str, dest_dir: Path) -> Path:
    """Write a snapshot's files into `dest_dir`, which must be new or empty."""
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise GitError(f"{dest_dir} is not an empty directory; checkout writes only into a "
                       "new or empty one so nothing of yours is overwritten")
    archive = store_git(store_git_dir, ["archive", "--format=tar", sha]).stdout
    dest_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        try:
            tar.extractall(dest_dir, filter="data")
        except TypeError:  # Python < 3.10.12 has no extraction filters; git wrote the tar
            tar.extractall(dest_dir)
    return dest_dir
