"""Code snapshots: the working tree as the user sees it, stored as a commit in our repo.

A snapshot is HEAD + uncommitted changes + untracked files that are not ignored, minus
files over a size cap (listed in `skipped`) and minus the store itself. How it is built,
without writing a byte in the user's repository:

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
import shutil
import stat
import subprocess
import tempfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GitError
from .leaveout import MAX_UNTRACKED_BYTES, MAX_UNTRACKED_FILES, LeaveOut
from .maintenance import store_lock, touch_ref
from .paths import safe_rel
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

__all__ = ["take_snapshot", "checkout_snapshot", "diff_snapshots", "read_file",
           "list_files", "SIZE_CAP", "SNAPSHOT_REF_PREFIX"]

SIZE_CAP = 5 * 2**20
SNAPSHOT_REF_PREFIX = "refs/flowillower/code/"
STORE_DIRNAME = ".flowillower"
# Outside git we cannot know what is junk: skip the usual environment / cache folders and
# every hidden folder, and give up past this many files (started from $HOME, say).
_SKIP_DIRS = {b".git", b".flowillower", b"__pycache__", b".venv", b"venv", b"node_modules",
              b"site-packages", b"__pypackages__"}
MAX_WALK_FILES = 50_000
_KEEP_IN_MEMORY = 64 * 2**20  # hashed contents kept for writing; beyond this, re-read
_GITLINK = "160000"


@dataclass
class _Entry:
    path: bytes  # relative, "/"-separated, exactly as git names it
    mode: str
    sha: str
    origin: str  # "index": blob of the user's repo; "disk": hashed here; "link": gitlink


def _blob_sha(data: bytes) -> str:
    """The id git gives a blob with this content (computed here: no process, no write)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _decode(path: bytes) -> str:
    return os.fsdecode(path) if os.name != "nt" else path.decode("utf-8", "surrogateescape")


class _Collector:
    """Accumulates entries, skipped files and the contents hashed so far."""

    def __init__(self, top: bytes, size_cap: int, exclude: bytes | None,
                 policy: LeaveOut) -> None:
        self.top = top
        self.size_cap = size_cap
        self.policy = policy  # secrets, .flowillowerignore, the untracked cap
        self.dropped_changes = False  # a modified or untracked file was left out
        self.exclude = exclude  # store location relative to top, if inside it
        self.entries: list[_Entry] = []
        self.skipped: list[list[Any]] = []
        # skipped files git reports unchanged: path -> (mode, index blob id); they are
        # compared with HEAD by id, so leaving them out does not make the tree "dirty"
        self.skipped_clean: dict[bytes, tuple[str, str]] = {}
        self.contents: dict[str, bytes] = {}
        self.changed_while_reading = False
        self._kept = 0

    def excluded(self, rel: bytes) -> bool:
        if STORE_DIRNAME.encode() in rel.split(b"/"):
            return True
        return self.exclude is not None and (rel == self.exclude
                                             or rel.startswith(self.exclude + b"/"))

    def add_from_disk(self, rel: bytes, st: os.stat_result | None = None,
                      untracked: bool = False) -> None:
        """Hash one file of the working tree (regular file or symlink)."""
        full = self.top + b"/" + rel
        try:
            st = st or os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                mode, data = "120000", os.readlink(full)
            elif not stat.S_ISREG(st.st_mode):
                return
            elif st.st_size > self.size_cap:
                self.skipped.append([_decode(rel), st.st_size])
                self.dropped_changes = True
                return
            elif untracked and self.policy.over_cap(rel, st.st_size):
                self.dropped_changes = True
                return
            else:
                mode = "100755" if st.st_mode & 0o111 else "100644"
                with open(full, "rb") as fh:
                    data = fh.read()
        except OSError:
            return  # vanished (deleted in the working tree) or unreadable: not part of it
        sha = _blob_sha(data)
        if self._kept + len(data) <= _KEEP_IN_MEMORY:
            self.contents[sha] = data
            self._kept += len(data)
        self.entries.append(_Entry(rel, mode, sha, "disk"))

    def add_gitlink(self, rel: bytes, recorded: str | None) -> None:
        """A submodule (or nested repository): record the commit its work tree is at."""
        sha = _nested_head(self.top + b"/" + rel) or recorded
        if sha:
            self.entries.append(_Entry(rel, _GITLINK, sha, "link"))


def _nested_head(path: bytes) -> str | None:
    """HEAD of the repository whose work tree is `path`, or None (uninitialised)."""
    if not os.path.exists(path + b"/.git"):
        return None  # without this check rev-parse would answer for the superproject
    proc = user_git(Path(os.fsdecode(path)), ["rev-parse", "--verify", "-q", "HEAD"],
                    check=False)
    sha = proc.stdout.decode().strip()
    return sha if proc.returncode == 0 and len(sha) >= 40 else None


_LS_FILES = ["ls-files", "-z", "-t", "-s", "-c", "-m", "-o", "--exclude-standard",
             "--full-name", "--", ":/"]


def _scan_git(raw: bytes, col: _Collector) -> None:
    """Tracked + untracked-not-ignored files, from the output of `_LS_FILES`.

    Tags: H cached, C changed, R removed, S skip-worktree, M unmerged, ? untracked.
    """
    tracked: dict[bytes, tuple[str, str, bytes]] = {}
    changed: set[bytes] = set()
    sparse: set[bytes] = set()
    untracked: list[bytes] = []
    for record in raw.split(b"\0"):
        if not record:
            continue
        tag, rest = record[:1], record[2:]
        if tag == b"?":
            untracked.append(rest)
            continue
        meta, _, rel = rest.partition(b"\t")
        mode, sha, stage = meta.decode().split()
        if tag in (b"C", b"R", b"K"):
            changed.add(rel)
        elif tag == b"S":
            sparse.add(rel)  # skip-worktree (sparse checkout): not in the working tree
        if stage != "0":
            changed.add(rel)  # conflicted: take whatever the file holds now
        tracked.setdefault(rel, (mode, sha, tag))
    col.policy.prepare([*tracked, *untracked])
    for rel, (mode, sha, _tag) in tracked.items():
        if rel in sparse or col.excluded(rel):
            continue
        if mode != _GITLINK and col.policy.reason(rel):
            if rel in changed:
                col.dropped_changes = True
            else:  # committed and unchanged: compared with HEAD as if it were there
                col.skipped_clean[rel] = (mode, sha)
            continue
        if mode == _GITLINK:
            col.add_gitlink(rel, sha)
            continue
        try:
            st = os.lstat(col.top + b"/" + rel)
        except OSError:
            continue  # deleted in the working tree
        if rel in changed:
            col.add_from_disk(rel, st)
        elif stat.S_ISREG(st.st_mode) and st.st_size > col.size_cap:
            col.skipped.append([_decode(rel), st.st_size])
            col.skipped_clean[rel] = (mode, sha)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            # git says the file matches its index entry: reuse the blob id, no reading
            col.entries.append(_Entry(rel, mode, sha, "index"))
    for rel in untracked:
        if col.excluded(rel.rstrip(b"/")):
            continue
        if rel.endswith(b"/"):  # an untracked nested repository: record it like `git add`
            col.add_gitlink(rel.rstrip(b"/"), None)
        elif col.policy.reason(rel):
            col.dropped_changes = True
        else:
            col.add_from_disk(rel, untracked=True)


def _scan_dir(top: Path, col: _Collector) -> None:
    """Every file under a directory that is not a git repository."""
    count = 0
    found: list[bytes] = []
    for dirpath, dirnames, filenames in os.walk(col.top):
        rel_dir = os.path.relpath(dirpath, col.top).replace(os.sep.encode(), b"/")
        prefix = b"" if rel_dir == b"." else rel_dir + b"/"
        keep = []
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                filenames.append(name)  # a symlinked folder is recorded as a link
            elif (name not in _SKIP_DIRS and not name.startswith(b".")
                  and not col.excluded(prefix + name)):
                keep.append(name)
        dirnames[:] = sorted(keep)
        for name in filenames:
            rel = prefix + name
            if col.excluded(rel):
                continue
            count += 1
            if count > MAX_WALK_FILES:
                raise GitError(f"{top} is not a git repository and holds more than "
                               f"{MAX_WALK_FILES} files; start the run from your project "
                               "folder (or `git init` it) to get a code snapshot")
            found.append(rel)
    col.policy.prepare(found)
    for rel in found:
        if not col.policy.reason(rel):
            col.add_from_disk(rel, untracked=True)


def _read_user_repo(source: Path
                    ) -> tuple[Path | None, tuple[str | None, str | None, str | None], bytes]:
    """(top level or None outside git, (head, head tree, branch), ls-files output).

    The four read-only queries run at the same time: each costs a process start.
    """
    procs = [start_user_git(source, args) for args in (
        ["rev-parse", "--show-toplevel"],
        ["rev-parse", "HEAD^{commit}", "HEAD^{tree}"],
        ["symbolic-ref", "-q", "--short", "HEAD"],
        _LS_FILES)]
    (rc_top, top_out, _), (rc_head, head_out, _), (_, branch_out, _), \
        (rc_ls, listing, ls_err) = (collect(p) for p in procs)
    top = top_out.decode("utf-8", "surrogateescape").strip()
    if rc_top != 0 or not top:
        return None, (None, None, None), b""  # not a git working tree
    if rc_ls != 0:
        raise GitError(failure_message(["git", *_LS_FILES], rc_ls, ls_err))
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


def _write_blobs(git_dir: Path, top: Path, col: _Collector, missing: set[str]) -> None:
    """Write the blobs our repository lacks, all in one pack through `fast-import`."""
    by_sha: dict[str, list[_Entry]] = {}
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


def _reread(col: _Collector, entries: list[_Entry]) -> bytes:
    """Read a file again; if it changed since it was hashed, snapshot what is there now."""
    full = col.top + b"/" + entries[0].path
    if entries[0].mode == "120000":
        data = os.readlink(full)
    else:
        with open(full, "rb") as fh:
            data = fh.read()
    sha = _blob_sha(data)
    if sha != entries[0].sha:
        col.changed_while_reading = True
    for entry in entries:
        entry.sha, entry.origin = sha, "disk"
    return data


def _tree_objects(entries: list[_Entry]) -> tuple[str, dict[str, bytes]]:
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


def _head_differs(top: Path, col: _Collector, head: str) -> bool:
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
    if looks_like_store and not _inside(source_dir, store_root) \
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
    col = _Collector(os.fsencode(root), size_cap, exclude, policy)
    head_tree = None
    if top is not None:
        info["head"], head_tree, info["branch"] = head
        _scan_git(listing, col)
    else:
        _scan_dir(root, col)
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


# -- reading snapshots back -------------------------------------------------------------

def list_files(store_git_dir: Path, sha: str) -> list[str]:
    """Paths of every file in a snapshot (submodules included as their path)."""
    raw = store_git(store_git_dir, ["ls-tree", "-r", "-z", "--full-tree", "--name-only",
                                    _commitish(sha)]).stdout
    return [_decode(p) for p in raw.split(b"\0") if p]


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


def _inside(path: Path, parent: Path) -> bool:
    try:
        path.relative_to(parent)
        return True
    except ValueError:
        return False


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
    if _inside(dest, store_git_dir) or ".git" in dest.parts:
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
        blobs = [obj for mode, obj, _ in items if mode != _GITLINK]
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
            if mode == _GITLINK:
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
