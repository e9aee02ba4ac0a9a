"""Code snapshots: the working tree as the user sees it, stored as a commit in our repo.

A snapshot is HEAD + uncommitted changes + untracked files that are not ignored, minus
files over a size cap (listed in `skipped`), minus secrets, `.flowillowerignore` patterns
and untracked files past a cap (listed in `left_out`, see `leaveout`), and minus the store
itself. How it is built (`scan`, then here), without writing a byte in the user's
repository:

1. one `git ls-files -t -s -c -m -o --exclude-standard` (read-only, no optional locks)
   names every tracked file with its index blob id, flags the modified ones, and lists
   the untracked ones;
2. files git knows to be unchanged keep their index blob id (so a clean tree gives exactly
   HEAD's tree, whatever the user's eol or LFS settings); modified and untracked files are
   hashed here, in Python;
3. only the blobs our repository lacks are written, all in one pack through
   `git fast-import` (unchanged files are copied once out of the user's object store, or
   read from disk as a fallback), then `update-index --index-info` on a throw-away index
   file, `write-tree` and `commit-tree`.

The commit has no parent and a fixed date, so the same code gives the same commit on any
machine, and a ref `refs/flowillower/code/<sha>` keeps it alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.layout import STORE_DIRNAME
from .checkout import checkout_snapshot, diff_snapshots, list_files, read_file
from .leaveout import MAX_UNTRACKED_BYTES, MAX_UNTRACKED_FILES, LeaveOut
from .maintenance import store_lock, touch_ref
from .paths import is_inside
from .repo import (
    FIXED_DATE,
    IDENTITY,
    GitNotFoundError,
    abandon,
    batch_read,
    collect,
    ensure_store_ignored,
    ensure_store_repo,
    failure_message,
    finish,
    git_available,
    popen_git,
    start_user_git,
    store_git,
    store_popen,
    user_git,
)
from .scan import LS_FILES, Collector, Entry, blob_sha, scan_dir, scan_git

__all__ = ["take_snapshot", "checkout_snapshot", "diff_snapshots", "read_file",
           "list_files", "SIZE_CAP", "SNAPSHOT_REF_PREFIX"]

SIZE_CAP = 5 * 2**20
SNAPSHOT_REF_PREFIX = "refs/flowillower/code/"


def _read_user_repo(source: Path
                    ) -> tuple[Path | None, tuple[str | None, str | None, str | None], bytes]:
    """(top level or None outside git, (head, head tree, branch), ls-files output).

    The four read-only queries run at the same time: each costs a process start.
    """
    procs = [start_user_git(source, args) for args in (
        ["rev-parse", "--show-toplevel"],
        ["rev-parse", "HEAD^{commit}", "HEAD^{tree}"],
        ["symbolic-ref", "-q", "--short", "HEAD"],
        LS_FILES)]
    (rc_top, top_out, _), (rc_head, head_out, _), (_, branch_out, _), \
        (rc_ls, listing, ls_err) = (collect(p) for p in procs)
    top = top_out.decode("utf-8", "surrogateescape").strip()
    if rc_top != 0 or not top:
        return None, (None, None, None), b""  # not a git working tree
    if rc_ls != 0:
        raise GitError(failure_message(["git", *LS_FILES], rc_ls, ls_err))
    head = tree = None
    if rc_head == 0:
        lines = head_out.decode().split()
        if len(lines) == 2:
            head, tree = lines
    branch = branch_out.decode("utf-8", "replace").strip() or None
    return Path(top), (head, tree, branch), listing


def _missing(git_dir: Path, shas: set[str]) -> set[str]:
    """Which of these objects our repository lacks (one `cat-file --batch-check`)."""
    if not shas:
        return set()
    listing = store_git(git_dir, ["cat-file", "--batch-check=%(objectname)"],
                        input="".join(s + "\n" for s in shas).encode()).stdout.decode()
    return {line.split()[0] for line in listing.splitlines() if line.endswith(" missing")}


def _write_blobs(git_dir: Path, top: Path, col: Collector, missing: set[str]) -> None:
    """Write the blobs our repository lacks, all in one pack through `fast-import`."""
    by_sha: dict[str, list[Entry]] = {}
    for entry in col.entries:
        if entry.origin != "link" and entry.sha in missing:
            by_sha.setdefault(entry.sha, []).append(entry)
    if not by_sha:
        return
    from_index = [sha for sha, es in by_sha.items() if es[0].origin == "index"]
    from_disk = [sha for sha, es in by_sha.items() if es[0].origin == "disk"]
    importer = store_popen(git_dir, ["fast-import", "--quiet"], stdout=subprocess.DEVNULL)
    assert importer.stdin is not None
    try:
        if from_index:
            # Unchanged files: copy the blob out of the user's object store (read-only),
            # so the snapshot holds exactly what git holds, eol and LFS pointers included.
            reader = popen_git(["-C", top, "cat-file", "--batch"], isolated=False)
            try:
                for sha, data in batch_read(reader, from_index):
                    if data is None:  # e.g. a partial clone lacks it: take the file
                        data = _reread(col, by_sha[sha])
                    importer.stdin.write(b"blob\ndata %d\n%s\n" % (len(data), data))
            except BaseException:
                abandon(reader)
                raise
            finish(reader)
        for sha in from_disk:
            data = col.contents.get(sha)
            if data is None:  # not kept in memory: read again (and follow any change)
                data = _reread(col, by_sha[sha])
            importer.stdin.write(b"blob\ndata %d\n%s\n" % (len(data), data))
    except BrokenPipeError:
        pass  # fast-import died: finish() below reports its error
    finally:
        importer.stdin.close()
        finish(importer)


def _reread(col: Collector, entries: list[Entry]) -> bytes:
    """Read a file again; if it changed since it was hashed, snapshot what is there now."""
    full = col.top + b"/" + entries[0].path
    if entries[0].mode == "120000":
        data = os.readlink(full)
    else:
        with open(full, "rb") as fh:
            data = fh.read()
    sha = blob_sha(data)
    if sha != entries[0].sha:
        col.changed_while_reading = True
    for entry in entries:
        entry.sha, entry.origin = sha, "disk"
    return data


def _tree_objects(entries: list[Entry]) -> tuple[str, dict[str, bytes]]:
    """Build the tree objects for these entries in Python: (root tree id, {id: body}).

    Git orders a tree's entries by name, a sub-tree's name compared as if it ended in
    "/"; modes are written without leading zeros. Tests check the result against
    `git write-tree` (HEAD's own tree) and `git fsck --strict`.
    """
    root: dict[bytes, Any] = {}
    for entry in entries:
        *dirs, name = entry.path.split(b"/")
        node = root
        for part in dirs:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):  # a file where a folder is expected: drop it
                child = node[part] = {}
            node = child
        if not isinstance(node.get(name), dict):
            node[name] = entry
    trees: dict[str, bytes] = {}

    def build(node: dict[bytes, Any]) -> str:
        rows = []
        for name, child in node.items():
            if isinstance(child, dict):
                rows.append((name + b"/", b"40000", name, build(child)))
            else:
                rows.append((name, child.mode.encode(), name, child.sha))
        rows.sort(key=lambda row: row[0])
        body = b"".join(mode + b" " + name + b"\0" + bytes.fromhex(sha)
                        for _key, mode, name, sha in rows)
        sha = hashlib.sha1(b"tree %d\0" % len(body) + body).hexdigest()
        trees[sha] = body
        return sha

    return build(root), trees


def _commit_object(tree: str, message: str) -> tuple[str, bytes]:
    """The snapshot commit, as `git commit-tree` would write it (fixed identity, date)."""
    who = (f"{IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}> "
           f"{FIXED_DATE}").encode()
    text = message if message.endswith("\n") else message + "\n"
    body = b"tree %s\nauthor %s\ncommitter %s\n\n" % (tree.encode(), who, who) + \
        text.encode("utf-8")
    return hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest(), body


def _write_loose(git_dir: Path, kind: bytes, sha: str, body: bytes) -> None:
    """Write one object file into our repository (atomic rename; git's own format)."""
    folder = git_dir / "objects" / sha[:2]
    path = folder / sha[2:]
    if path.exists():
        return
    folder.mkdir(exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="tmp_obj_", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(zlib.compress(b"%s %d\0" % (kind, len(body)) + body))
        os.chmod(tmp, 0o444)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _head_differs(top: Path, col: Collector, head: str) -> bool:
    """With files skipped, compare HEAD's listing with ours plus the skipped-but-clean."""
    if col.dropped_changes:
        return True  # a modified or untracked file was left out: the tree is not HEAD's
    raw = user_git(top, ["ls-tree", "-r", "-z", "--full-tree", head]).stdout
    theirs = {}
    for record in raw.split(b"\0"):
        if record:
            meta, _, rel = record.partition(b"\t")
            mode, _kind, sha = meta.decode().split()
            theirs[rel] = (mode, sha)
    ours = {e.path: (e.mode, e.sha) for e in col.entries}
    ours.update(col.skipped_clean)
    return ours != theirs


def take_snapshot(source_dir: Path, store_git_dir: Path, size_cap: int = SIZE_CAP,
                  message: str = "flowillower code snapshot", *,
                  max_untracked_files: int = MAX_UNTRACKED_FILES,
                  max_untracked_bytes: int = MAX_UNTRACKED_BYTES) -> dict[str, Any]:
    """Snapshot the code around `source_dir` into the bare repository `store_git_dir`.

    Returns the `git` record of run.json: `head` (commit sha, None outside git or before
    the first commit), `branch` (None outside git or on a detached HEAD), `dirty` (the
    working tree differs from HEAD; None outside git), `snapshot` (commit sha in our
    repo), `skipped` ([path, size] of files over `size_cap`), `root` (the directory
    snapshotted: the repository's top level, else `source_dir`), `files` (entries
    captured), `left_out` (present when files were kept out: [path, why] for secret
    patterns and the project's `.flowillowerignore`, [folder, why] for untracked files
    past `max_untracked_files` / `max_untracked_bytes`, which also warns). Without git
    installed, `snapshot` is None and `error` says why.
    """
    source_dir = Path(source_dir).resolve()
    info: dict[str, Any] = {"head": None, "branch": None, "dirty": None, "snapshot": None,
                            "skipped": [], "root": str(source_dir), "files": 0}
    if not git_available():
        info["error"] = "git is not installed; install git to get code snapshots"
        return info
    store_git_dir = ensure_store_repo(Path(store_git_dir))
    store_root = store_git_dir.parent
    looks_like_store = store_root.name == STORE_DIRNAME or (store_root / "runs").is_dir()
    if looks_like_store and not is_inside(source_dir, store_root) \
            and not (store_root / ".git").exists():
        ensure_store_ignored(store_root)  # so the user's `git status` never shows it
    try:
        top, head, listing = _read_user_repo(source_dir)
    except GitNotFoundError as exc:
        info["error"] = str(exc)
        return info
    root = top or source_dir
    info["root"] = str(root)
    try:
        exclude: bytes | None = os.fsencode(store_root.relative_to(root).as_posix())
        exclude = None if exclude in (b".", b"") else exclude
    except ValueError:
        exclude = None
    policy = LeaveOut(root, store_git_dir, max_untracked_files, max_untracked_bytes)
    col = Collector(os.fsencode(root), size_cap, exclude, policy)
    head_tree = None
    if top is not None:
        info["head"], head_tree, info["branch"] = head
        scan_git(listing, col)
    else:
        scan_dir(root, col)
    tree, trees = _tree_objects(col.entries)
    trailer = f"\n\nhead: {info['head'] or '-'}\nbranch: {info['branch'] or '-'}"
    commit, commit_body = _commit_object(tree, message + trailer)
    blobs = {e.sha for e in col.entries if e.origin != "link"}
    # Shared lock from "which objects are there?" to the ref: `gc` cannot prune an object
    # found present (perhaps unreachable) before the ref makes it reachable.
    with store_lock(store_git_dir):
        missing = _missing(store_git_dir, blobs | set(trees) | {commit})
        if missing:
            _write_blobs(store_git_dir, root, col, missing)
            if col.changed_while_reading:
                # a file changed between hashing and writing: its new content was written
                tree, trees = _tree_objects(col.entries)
                commit, commit_body = _commit_object(tree, message + trailer)
                missing |= set(trees) | {commit}
            for sha, body in trees.items():
                if sha in missing:
                    _write_loose(store_git_dir, b"tree", sha, body)
            if commit in missing:
                _write_loose(store_git_dir, b"commit", commit, commit_body)
        ref = SNAPSHOT_REF_PREFIX + commit
        if not (store_git_dir / ref).exists():
            store_git(store_git_dir, ["update-ref", ref, commit])
        touch_ref(store_git_dir, ref, commit)  # new or reused: fresh for gc's grace period
    info["snapshot"] = commit
    info["files"] = len(col.entries)
    info["skipped"] = col.skipped
    left_out, warning = policy.report()
    if left_out:  # only when something was left out (older readers know the other keys)
        info["left_out"] = left_out
    if warning:
        info["warning"] = warning
        warnings.warn(warning, stacklevel=2)
    if info["head"]:
        partial = col.skipped or col.skipped_clean or col.dropped_changes
        info["dirty"] = tree != head_tree and (not partial
                                               or _head_differs(root, col, info["head"]))
    elif top is not None:
        # no commit yet: everything is uncommitted
        info["dirty"] = bool(col.entries or col.skipped or col.dropped_changes)
    return info
