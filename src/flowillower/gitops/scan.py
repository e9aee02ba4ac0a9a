"""Which files of the working tree a snapshot holds, found without writing anything.

In a git working tree one `git ls-files` names tracked files (with their index blob ids
and whether they changed) and untracked, non-ignored ones; outside git a bounded walk
lists every file. `Collector` turns them into entries (blob ids computed here), leaving
out what the snapshot's `LeaveOut` policy or the size cap says.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.layout import STORE_DIRNAME
from .leaveout import LeaveOut
from .paths import GITLINK, decode_path
from .repo import user_git

__all__ = ["Entry", "Collector", "blob_sha", "scan_git", "scan_dir", "LS_FILES",
           "MAX_WALK_FILES"]

# Outside git we cannot know what is junk: skip the usual environment / cache folders and
# every hidden folder, and give up past this many files (started from $HOME, say).
_SKIP_DIRS = {b".git", STORE_DIRNAME.encode(), b"__pycache__", b".venv", b"venv",
              b"node_modules", b"site-packages", b"__pypackages__"}
MAX_WALK_FILES = 50_000
_KEEP_IN_MEMORY = 64 * 2**20  # hashed contents kept for writing; beyond this, re-read


@dataclass
class Entry:
    """One file of a snapshot: its path, mode, blob id and where the blob comes from."""

    path: bytes  # relative, "/"-separated, exactly as git names it
    mode: str
    sha: str
    origin: str  # "index": blob of the user's repo; "disk": hashed here; "link": gitlink


def blob_sha(data: bytes) -> str:
    """The id git gives a blob with this content (computed here: no process, no write)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Collector:
    """Accumulates entries, skipped files and the contents hashed so far."""

    def __init__(self, top: bytes, size_cap: int, exclude: bytes | None,
                 policy: LeaveOut) -> None:
        self.top = top
        self.size_cap = size_cap
        self.policy = policy  # secrets, .flowillowerignore, the untracked cap
        self.dropped_changes = False  # a modified or untracked file was left out
        self.exclude = exclude  # store location relative to top, if inside it
        self.entries: list[Entry] = []
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
                self.skipped.append([decode_path(rel), st.st_size])
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
        sha = blob_sha(data)
        if self._kept + len(data) <= _KEEP_IN_MEMORY:
            self.contents[sha] = data
            self._kept += len(data)
        self.entries.append(Entry(rel, mode, sha, "disk"))

    def add_gitlink(self, rel: bytes, recorded: str | None) -> None:
        """A submodule (or nested repository): record the commit its work tree is at."""
        sha = _nested_head(self.top + b"/" + rel) or recorded
        if sha:
            self.entries.append(Entry(rel, GITLINK, sha, "link"))


def _nested_head(path: bytes) -> str | None:
    """HEAD of the repository whose work tree is `path`, or None (uninitialised)."""
    if not os.path.exists(path + b"/.git"):
        return None  # without this check rev-parse would answer for the superproject
    proc = user_git(Path(os.fsdecode(path)), ["rev-parse", "--verify", "-q", "HEAD"],
                    check=False)
    sha = proc.stdout.decode().strip()
    return sha if proc.returncode == 0 and len(sha) >= 40 else None


LS_FILES = ["ls-files", "-z", "-t", "-s", "-c", "-m", "-o", "--exclude-standard",
             "--full-name", "--", ":/"]


def scan_git(raw: bytes, col: Collector) -> None:
    """Tracked + untracked-not-ignored files, from the output of `LS_FILES`.

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
        if mode != GITLINK and col.policy.reason(rel):
            if rel in changed:
                col.dropped_changes = True
            else:  # committed and unchanged: compared with HEAD as if it were there
                col.skipped_clean[rel] = (mode, sha)
            continue
        if mode == GITLINK:
            col.add_gitlink(rel, sha)
            continue
        try:
            st = os.lstat(col.top + b"/" + rel)
        except OSError:
            continue  # deleted in the working tree
        if rel in changed:
            col.add_from_disk(rel, st)
        elif stat.S_ISREG(st.st_mode) and st.st_size > col.size_cap:
            col.skipped.append([decode_path(rel), st.st_size])
            col.skipped_clean[rel] = (mode, sha)
        elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            # git says the file matches its index entry: reuse the blob id, no reading
            col.entries.append(Entry(rel, mode, sha, "index"))
    for rel in untracked:
        if col.excluded(rel.rstrip(b"/")):
            continue
        if rel.endswith(b"/"):  # an untracked nested repository: record it like `git add`
            col.add_gitlink(rel.rstrip(b"/"), None)
        elif col.policy.reason(rel):
            col.dropped_changes = True
        else:
            col.add_from_disk(rel, untracked=True)


def scan_dir(top: Path, col: Collector) -> None:
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
