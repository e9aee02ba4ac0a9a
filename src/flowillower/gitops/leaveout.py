"""What a code snapshot leaves out: secrets, the user's `.flowillowerignore`, and the
untracked files past a count / size cap.

A snapshot travels with `flowillower push` to a team remote, so files that usually hold
credentials never enter it, whether untracked, modified or committed (a committed secret
is in the user's own history already; it need not be in everyone's store too). A
`.flowillowerignore` at the project root adds patterns in gitignore syntax, matched by
git itself (`check-ignore --no-index` against an empty work tree, so only that file's
patterns count); a `!pattern` there brings back a file a secret pattern would leave out.
"""

from __future__ import annotations

import fnmatch
import os
import re
import tempfile
from pathlib import Path

from .repo import store_git

__all__ = ["SECRET_PATTERNS", "IGNORE_FILE", "MAX_UNTRACKED_FILES", "MAX_UNTRACKED_BYTES",
           "LeaveOut", "secret_pattern"]

# Matched against the file name (any folder, any case).
SECRET_PATTERNS = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_ed25519*",
                   "id_ecdsa*", "id_dsa*", ".netrc", ".pypirc", "credentials*", "*.p12",
                   "*.pfx", ".git-credentials")
# Matched against the end of the path.
SECRET_PATHS = (".aws/credentials", ".docker/config.json", ".kube/config")
IGNORE_FILE = ".flowillowerignore"
MAX_UNTRACKED_FILES = 2_000
MAX_UNTRACKED_BYTES = 100 * 2**20
_MAX_LISTED = 500  # entries of `left_out` kept in run.json


# One regular expression for every pattern: a snapshot tests each of its files once.
_ANY_SECRET = re.compile("|".join(
    [fnmatch.translate(p) for p in SECRET_PATTERNS]
    + [rf"(?:.*/)?{re.escape(p)}\Z" for p in SECRET_PATHS]))


def secret_pattern(rel: bytes) -> str | None:
    """The secret pattern `rel` (a "/"-separated path) matches, or None."""
    path = os.fsdecode(rel).lower()
    name = path.rsplit("/", 1)[-1]
    if not (_ANY_SECRET.match(name) or _ANY_SECRET.match(path)):
        return None
    for suffix in SECRET_PATHS:  # the more precise reason first
        if path == suffix or path.endswith("/" + suffix):
            return suffix
    for pattern in SECRET_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return pattern
    return None


class LeaveOut:
    """Decides, for one snapshot, which paths stay out and why; counts untracked files.

    `prepare(paths)` runs the `.flowillowerignore` patterns over every candidate path at
    once (one git process); `reason(rel)` then answers per path without a process.
    """

    def __init__(self, root: Path, store_git_dir: Path,
                 max_files: int = MAX_UNTRACKED_FILES,
                 max_bytes: int = MAX_UNTRACKED_BYTES) -> None:
        self.root = Path(root)
        self.store_git_dir = Path(store_git_dir)
        self.max_files, self.max_bytes = max_files, max_bytes
        self.ignored: dict[bytes, str] = {}  # path -> matching pattern
        self.kept: set[bytes] = set()  # paths re-included by a `!pattern`
        self.left_out: list[list[str]] = []
        self.capped: dict[str, list[int]] = {}  # top folder -> [files, bytes]
        self._files = 0
        self._bytes = 0

    def prepare(self, paths: list[bytes]) -> None:
        """Match every candidate path against `.flowillowerignore`, if there is one."""
        ignore = self.root / IGNORE_FILE
        if not paths or not ignore.is_file():
            return
        with tempfile.TemporaryDirectory(prefix="fw-ignore-") as empty:
            # An empty work tree: no .gitignore of the user's can mask our patterns.
            proc = store_git(self.store_git_dir, [
                "-c", f"core.excludesFile={ignore}", f"--work-tree={empty}",
                "check-ignore", "--no-index", "-v", "-z", "--stdin"],
                input=b"".join(p + b"\0" for p in paths), check=False)
        if proc.returncode not in (0, 1):  # 1: nothing matched
            return
        fields = proc.stdout.split(b"\0")
        for i in range(0, len(fields) - 3, 4):
            pattern, path = fields[i + 2], fields[i + 3]
            if pattern.startswith(b"!"):
                self.kept.add(path)
            else:
                self.ignored[path] = pattern.decode("utf-8", "replace")

    def reason(self, rel: bytes) -> str | None:
        """Why `rel` is left out (recorded), or None to keep it."""
        if rel in self.kept:
            return None
        why = None
        if rel in self.ignored:
            why = f"{IGNORE_FILE} pattern {self.ignored[rel]}"
        else:
            pattern = secret_pattern(rel)
            if pattern:
                why = f"secret pattern {pattern}"
        if why:
            self.left_out.append([os.fsdecode(rel), why])
        return why

    def over_cap(self, rel: bytes, size: int) -> bool:
        """Count one untracked file; True (and remembered) when it is past the cap."""
        if self._files + 1 <= self.max_files and self._bytes + size <= self.max_bytes:
            self._files += 1
            self._bytes += size
            return False
        top = os.fsdecode(rel.split(b"/", 1)[0]) + "/" if b"/" in rel else "."
        count = self.capped.setdefault(top, [0, 0])
        count[0] += 1
        count[1] += size
        return True

    def report(self) -> tuple[list[list[str]], str | None]:
        """(`left_out` entries for run.json, a warning naming the largest capped folders)."""
        entries = self.left_out[:_MAX_LISTED]
        if len(self.left_out) > _MAX_LISTED:
            entries.append(["...", f"{len(self.left_out) - _MAX_LISTED} more left out"])
        cap = f"untracked cap ({self.max_files} files / {self.max_bytes // 2**20} MB)"
        biggest = sorted(self.capped.items(), key=lambda kv: (-kv[1][1], -kv[1][0], kv[0]))
        for folder, (files, size) in biggest:
            entries.append([folder, f"{cap}: {files} file(s), {size / 2**20:.1f} MB"])
        warning = None
        if biggest:
            named = ", ".join(f"{folder} ({files} files, {size / 2**20:.1f} MB)"
                              for folder, (files, size) in biggest[:3])
            total = sum(files for files, _ in self.capped.values())
            warning = (f"flowillower: the code snapshot left out {total} untracked file(s) "
                       f"past the {cap}; largest: {named}. Add them to {IGNORE_FILE} or "
                       ".gitignore, or commit them")
        return entries, warning
