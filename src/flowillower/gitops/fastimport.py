"""Many run commits in one git process.

A run commit's tree is computed here, in Python (git's object format: a blob is
`blob <size>\\0<bytes>` hashed, a tree lists its entries sorted by name), so a push knows
before asking git whether a run's tree is the one its last version already has. The runs
whose tree changed are then written by one `git fast-import` for all of them: blobs the
repository already holds are named by id, new ones sent inline, and each commit gets the
fixed identity and date, so the same folder gives the same commit on any machine (the
same commit `git commit-tree` makes).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import GitError
from .repo import FIXED_DATE, IDENTITY, abandon, finish, store_git, store_popen

__all__ = ["RunCommit", "object_format", "hash_files", "tree_id", "existing", "import_commits",
           "import_tree_commit", "WHOLE_ABOVE", "whole_blobs"]

_CHUNK = 1 << 20
# Blobs larger than this (record files, images, artifacts of real runs) are stored and
# pushed whole, never as a delta of another run's blob: a remote then sends any subset
# of runs as they are stored (git skips the delta search between two objects it holds
# whole in one pack), instead of rebuilding delta chains and searching new deltas for
# every filtered pull. What whole storage costs on the remote is small: values of
# different runs hardly delta anyway, only shared headers do.
WHOLE_ABOVE = 64 * 1024


def whole_blobs() -> list[str]:
    """git options (`-c`) making a command that packs objects (`push`, `gc`) keep blobs
    over `WHOLE_ABOVE` bytes whole: no delta search for them (deltas already stored are
    reused as they are)."""
    return ["-c", f"core.bigFileThreshold={WHOLE_ABOVE}"]


@dataclass
class RunCommit:
    """One run commit to write: its ref's run id, files, blob ids, parents and tree."""

    run_id: str
    files: list[tuple[str, str, str]]  # (rel, mode, path)
    blobs: list[str]  # blob id of each file, in the same order
    tree: str
    parents: list[str]


def object_format(git_dir: Path) -> str:
    """'sha1' or 'sha256': the hash of the store's repository."""
    out = store_git(git_dir, ["rev-parse", "--show-object-format"]).stdout.decode().strip()
    return out or "sha1"


def _content(path: str, mode: str) -> Iterable[bytes]:
    if mode == "120000":
        yield os.fsencode(os.readlink(path))
        return
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _size(path: str, mode: str) -> int:
    return len(os.fsencode(os.readlink(path))) if mode == "120000" else os.stat(path).st_size


def hash_files(files: list[tuple[str, str, str]], algo: str) -> list[str]:
    """Blob id of each (rel, mode, path), as `git hash-object` would give it."""
    ids = []
    for _rel, mode, path in files:
        h = hashlib.new(algo)
        h.update(b"blob %d\0" % _size(path, mode))
        for chunk in _content(path, mode):
            h.update(chunk)
        ids.append(h.hexdigest())
    return ids


def tree_id(files: list[tuple[str, str, str]], blobs: list[str], algo: str) -> str:
    """The id of the tree holding `files` (nested folders included)."""
    root: dict[bytes, object] = {}
    for (rel, mode, _path), blob in zip(files, blobs):
        parts = rel.encode("utf-8", "surrogateescape").split(b"/")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})  # type: ignore[assignment]
        node[parts[-1]] = (mode.encode(), bytes.fromhex(blob))
    return _hash_tree(root, algo)[1].hex()


def _hash_tree(node: dict[bytes, object], algo: str) -> tuple[bytes, bytes]:
    items = []
    for name, value in node.items():
        if isinstance(value, dict):
            items.append((name + b"/", name, b"40000", _hash_tree(value, algo)[1]))
        else:
            mode, raw = value  # type: ignore[misc]
            items.append((name, name, mode, raw))
    items.sort()  # git orders a folder as if its name ended with "/"
    body = b"".join(mode + b" " + name + b"\0" + raw for _key, name, mode, raw in items)
    return b"40000", hashlib.new(algo, b"tree %d\0" % len(body) + body).digest()


def existing(git_dir: Path, names: Iterable[str]) -> dict[str, str]:
    """{name: object id} for the object names (ids, `<id>^{tree}`) the repository has,
    asked in one `cat-file --batch-check`."""
    names = list(dict.fromkeys(names))
    if not names:
        return {}
    proc = store_git(git_dir, ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
                     input="".join(f"{n}\n" for n in names).encode())
    found = {}
    for name, line in zip(names, proc.stdout.decode().splitlines()):
        fields = line.split()
        if len(fields) == 2 and fields[1] != "missing":
            found[name] = fields[0]
    return found


def _quote(rel: str) -> bytes:
    raw = rel.encode("utf-8", "surrogateescape")
    out = bytearray(b'"')
    for byte in raw:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte == 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _send_blob(out: IO[bytes], mark: int, mode: str, path: str) -> None:
    """Stream one file as a marked blob, exactly the announced size even if the file
    grows meanwhile (a live run)."""
    size = _size(path, mode)
    out.write(b"blob\nmark :%d\ndata %d\n" % (mark, size))
    left = size
    for chunk in _content(path, mode):
        chunk = chunk[:left]
        out.write(chunk)
        left -= len(chunk)
        if not left:
            break
    if left:
        raise GitError(f"{path} shrank while it was being pushed; push again")
    out.write(b"\n")


def _similar_first(item: tuple[str, tuple[str, str, str]]) -> tuple[str, str, str]:
    """Sort key putting files of one kind together (every run.json, every data.fwl):
    fast-import stores each small blob as a delta of the one before, so neighbours that
    look alike make a small pack, and pushes reuse those deltas (blobs over
    `WHOLE_ABOVE` are stored whole)."""
    rel = item[1][0]
    name = rel.rsplit("/", 1)[-1]
    return (name.rsplit(".", 1)[-1], name, rel)


@dataclass
class _Session:
    """One `git fast-import` being fed: its input, the scratch ref its commits go on,
    and, once it has finished, {mark: object id} of what it wrote."""

    out: IO[bytes]
    scratch: bytes
    marks: dict[int, str] = field(default_factory=dict)

    def commit(self, mark: int, message: bytes, parents: Iterable[str]) -> None:
        """Start commit `mark` with the fixed identity and date (the same files on the
        same parents give the same commit on any machine) and an empty tree."""
        who = f"{IDENTITY['GIT_AUTHOR_NAME']} <{IDENTITY['GIT_AUTHOR_EMAIL']}> {FIXED_DATE}"
        self.out.write(b"reset %s\ncommit %s\nmark :%d\n" % (self.scratch, self.scratch, mark))
        self.out.write(b"author %s\ncommitter %s\n" % (who.encode(), who.encode()))
        self.out.write(b"data %d\n%s" % (len(message), message))
        for kind, parent in zip(("from", "merge", "merge"), parents):
            self.out.write(f"{kind} {parent}\n".encode())
        self.out.write(b"deleteall\n")  # the tree is what follows, not the parent's plus


@contextmanager
def _fast_import(git_dir: Path, ref: str | None = None) -> Iterator[_Session]:
    """A `git fast-import` to feed; its marks are read once it finished. Without `ref`
    the commits go on a scratch ref of this call's own (two pushes of one process may
    run at once), which the caller resets."""
    scratch = ref or f"refs/flowillower/import/{os.getpid()}-{os.urandom(6).hex()}"
    with tempfile.TemporaryDirectory(prefix="fw-import-") as tmp:
        marks = Path(tmp) / "marks"
        # big blobs are written whole (not as a delta of the blob sent before them)
        proc = store_popen(git_dir, ["fast-import", "--quiet", "--done", "--force",
                                     f"--big-file-threshold={WHOLE_ABOVE}",
                                     f"--export-marks={marks}"], stdout=None)
        assert proc.stdin is not None
        session = _Session(proc.stdin, scratch.encode())
        try:
            yield session
        except BaseException:
            abandon(proc)
            raise
        finish(proc)
        for line in marks.read_text().splitlines():
            mark, _, sha = line.partition(" ")
            session.marks[int(mark.lstrip(":"))] = sha


def import_commits(git_dir: Path, commits: list[RunCommit], have: set[str]
                   ) -> dict[str, str]:
    """Write `commits` with one `git fast-import`; {run id: commit id}.

    Blobs in `have` are already in the repository and are named, not sent; the others
    are sent first, alike ones together. No ref is left behind: the caller points the run
    refs at the commits (one transaction).
    """
    if not commits:
        return {}
    with _fast_import(git_dir) as session:
        out = session.out
        new: dict[str, tuple[str, str, str]] = {}
        for commit in commits:
            for file, blob in zip(commit.files, commit.blobs):
                if blob not in have:
                    new.setdefault(blob, file)
        marks_of: dict[str, int] = {}
        for mark, (blob, (_rel, mode, path)) in enumerate(
                sorted(new.items(), key=_similar_first), start=len(commits) + 1):
            _send_blob(out, mark, mode, path)
            marks_of[blob] = mark  # what was sent, even if the file changed meanwhile
        for mark, commit in enumerate(commits, start=1):
            session.commit(mark, f"flowillower run {commit.run_id}\n".encode(), commit.parents)
            for (rel, mode, _path), blob in zip(commit.files, commit.blobs):
                ref = b":%d" % marks_of[blob] if blob in marks_of else blob.encode()
                out.write(b"M %s %s %s\n" % (mode.encode(), ref, _quote(rel)))
            out.write(b"\n")
        out.write(b"reset %s\ndone\n" % session.scratch)  # leave no scratch ref
    ids = session.marks
    result = {commit.run_id: ids[mark] for mark, commit in enumerate(commits, start=1)
              if mark in ids}
    if len(result) != len(commits):
        raise GitError("git fast-import did not report every run commit")
    return result


def import_tree_commit(git_dir: Path, files: dict[str, bytes | str], parents: list[str],
                       message: str, ref: str | None = None) -> str:
    """One commit whose tree holds exactly `files` ({path: content, or the id of a blob
    the repository has}), written by one `git fast-import`; its id. `ref` is pointed at
    it (forced); without one no ref is left behind. Like run commits it gets the fixed
    identity and date.
    """
    with _fast_import(git_dir, ref) as session:
        out = session.out
        session.commit(1, message.encode(), parents)
        for path in sorted(files):
            content = files[path]
            if isinstance(content, str):
                out.write(b"M 100644 %s %s\n" % (content.encode(), _quote(path)))
            else:
                out.write(b"M 100644 inline %s\ndata %d\n" % (_quote(path), len(content)))
                out.write(content + b"\n")
        out.write(b"\n" if ref else b"\nreset %s\n" % session.scratch)
        out.write(b"done\n")
    if 1 not in session.marks:
        raise GitError("git fast-import did not report the commit")
    return session.marks[1]
