"""The entries of many fetched run commits, read by a handful of git processes.

`git ls-tree -r` reads one commit per process; a fresh pull of thousands of runs would
start thousands. Here the commits, then every run's trees level by level, are read by one
`cat-file --batch` per level (a run folder is a few levels deep), and the blob sizes by
one `cat-file --batch-check`. Each entry then goes through the same checks as before
(`incoming.entry_refusal`); a tree that cannot be parsed refuses its run.
"""

from __future__ import annotations

import stat
from pathlib import Path

from .incoming import entry_refusal
from .repo import abandon, batch_read, finish, store_git, store_popen

__all__ = ["Entry", "read_entries", "read_objects", "parse_tree"]

Entry = tuple[bytes, str, str, int]  # (path, mode, blob id, size)
_MAX_DEPTH = 64
_GITLINK = 0o160000


def read_objects(git_dir: Path, shas: list[str]) -> dict[str, bytes | None]:
    """{id: content} of `shas`, one `cat-file --batch` for all."""
    found: dict[str, bytes | None] = {}
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return found
    reader = store_popen(git_dir, ["cat-file", "--batch"])
    try:
        for sha, data in batch_read(reader, wanted):
            found[sha] = data
    except BaseException:
        abandon(reader)
        raise
    finish(reader)
    return found


def parse_tree(data: bytes, raw_len: int) -> list[tuple[int, bytes, str]]:
    """[(mode, name, id)] of a tree object; ValueError when malformed."""
    entries, pos = [], 0
    while pos < len(data):
        space = data.index(b" ", pos)
        nul = data.index(b"\0", space)
        end = nul + 1 + raw_len
        if end > len(data):
            raise ValueError("truncated tree")
        entries.append((int(data[pos:space], 8), data[space + 1:nul],
                        data[nul + 1:end].hex()))
        pos = end
    return entries


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "tree"
    return "commit" if (mode & 0o170000) == _GITLINK else "blob"


def read_entries(git_dir: Path, commits: dict[str, str]
                 ) -> dict[str, tuple[list[Entry], list[tuple[bytes, str]], str | None]]:
    """{run id: (entries that may be written, refused (path, why), why the whole run is
    refused or None)} for each run's commit."""
    out: dict[str, tuple[list[Entry], list[tuple[bytes, str]], str | None]] = {}
    listed: dict[str, list[tuple[bytes, str, str, str]]] = {rid: [] for rid in commits}
    broken: dict[str, str] = {}
    bodies = read_objects(git_dir, list(commits.values()))
    level: list[tuple[str, bytes, str]] = []  # (run id, path prefix, tree id)
    for run_id, commit in commits.items():
        body = bodies.get(commit) or b""
        if not body.startswith(b"tree "):
            broken[run_id] = "not a commit"
            continue
        tree = body[5:body.index(b"\n")].decode()
        level.append((run_id, b"", tree))
    for depth in range(_MAX_DEPTH + 1):
        if not level:
            break
        trees = read_objects(git_dir, [tree for _r, _p, tree in level])
        below = []
        for run_id, prefix, tree in level:
            if run_id in broken:
                continue
            if depth == _MAX_DEPTH:
                broken[run_id] = f"folders nested deeper than {_MAX_DEPTH} levels"
                continue
            try:
                parsed = parse_tree(trees.get(tree) or b"", len(tree) // 2)
            except ValueError:
                broken[run_id] = "a malformed tree"
                continue
            for mode, name, sha in parsed:
                kind = _kind(mode)
                if kind == "tree":
                    below.append((run_id, prefix + name + b"/", sha))
                else:
                    listed[run_id].append((prefix + name, f"{mode:06o}", kind, sha))
        level = below
    sizes = _sizes(git_dir, [sha for items in listed.values()
                             for _p, _m, kind, sha in items if kind == "blob"])
    for run_id in commits:
        if run_id in broken:
            out[run_id] = ([], [], broken[run_id])
            continue
        ok: list[Entry] = []
        refused: list[tuple[bytes, str]] = []
        seen: set[bytes] = set()
        for rel, mode, kind, sha in sorted(listed[run_id], key=lambda item: item[0]):
            size = sizes.get(sha, 0) if kind == "blob" else 0
            # a hand-made tree may name one path twice (or twice but for case): first wins
            reason = "a duplicate entry" if rel.lower() in seen else \
                entry_refusal(rel, mode, kind, size)
            seen.add(rel.lower())
            if reason:
                refused.append((rel, reason))
            else:
                ok.append((rel, mode, sha, size))
        out[run_id] = (ok, refused, None)
    return out


def _sizes(git_dir: Path, shas: list[str]) -> dict[str, int]:
    wanted = list(dict.fromkeys(shas))
    if not wanted:
        return {}
    proc = store_git(git_dir, ["cat-file", "--batch-check=%(objectname) %(objectsize)"],
                     input="".join(f"{sha}\n" for sha in wanted).encode())
    sizes = {}
    for line in proc.stdout.decode().splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isdigit():
            sizes[fields[0]] = int(fields[1])
    return sizes
