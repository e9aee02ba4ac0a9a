"""Git LFS for a deployed site: which files must go through it, the `.gitattributes`
that routes them there, and a check, before anything is pushed, that each one is stored
as an LFS pointer.

Hugging Face refuses a push whose commits hold binary files or files over 10 MB outside
LFS (Xet-backed repositories accept the same LFS protocol); ModelScope studios follow the
same rule. A file is sent through LFS when its extension is a binary kind (images,
archives, tensors), when its first 8,000 bytes hold a NUL byte (git's own test for
binary) or when it is larger than `LARGE_FILE` bytes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import GitError

LARGE_FILE = 10_000_000  # the Hub's limit is 10 MB; stay under it in both units
BINARY_EXTENSIONS = frozenset({
    "png", "jpg", "jpeg", "gif", "webp", "bmp", "ico", "tif", "tiff", "avif",
    "mp4", "webm", "mov", "avi", "mkv", "wav", "mp3", "ogg", "flac", "opus",
    "pt", "pth", "bin", "ckpt", "safetensors", "onnx", "pb", "h5", "hdf5", "tflite",
    "npy", "npz", "pkl", "pickle", "joblib", "msgpack", "parquet", "arrow", "feather",
    "zip", "gz", "tgz", "bz2", "xz", "zst", "7z", "rar", "tar",
    "pdf", "woff", "woff2", "ttf", "otf", "eot", "sqlite", "db", "fwl",
})
BEGIN = "# flowillower: files stored with Git LFS (this block is rewritten on each deploy)"
END = "# flowillower: end of LFS block"
_POINTER = b"version https://git-lfs.github.com/spec/v1\n"
_SNIFF = 8000
# Files of the clone's own bookkeeping, never sent through LFS.
_OWN = frozenset({".gitattributes", "README.md"})

# run(git args, stdin bytes or None, check) -> the finished git command
GitRunner = Callable[..., "subprocess.CompletedProcess[bytes]"]


class LfsMissingError(GitError):
    """The site needs Git LFS and `git lfs` is not installed."""


def _is_binary(path: Path, size: int) -> bool:
    if size > LARGE_FILE:
        return True
    if path.suffix[1:].lower() in BINARY_EXTENSIONS:
        return True
    with open(path, "rb") as fh:
        return b"\0" in fh.read(_SNIFF)


def lfs_files(folder: Path) -> list[str]:
    """Paths (relative, '/'-separated, sorted) of the files under `folder` that must go
    through LFS; `.git` and links are skipped (a deploy never copies links)."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        if rel.parts[0] == ".git" or path.is_symlink() or not path.is_file():
            continue
        if rel.as_posix() in _OWN:
            continue
        if _is_binary(path, path.stat().st_size):
            found.append(rel.as_posix())
    return found


def _pattern(rel: str) -> str:
    """A `.gitattributes` pattern matching exactly the file `rel`: anchored at the root,
    glob characters escaped, then C-quoted so spaces, '#', quotes and newlines in a name
    (a teammate's artifact may have any name) cannot change its meaning."""
    glob = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in "/" + rel)
    quoted = []
    for ch in glob:
        if ch in '"\\':
            quoted.append("\\" + ch)
        elif ord(ch) < 0x20 or ch == "\x7f":
            quoted.append(f"\\{ord(ch):03o}")
        else:
            quoted.append(ch)
    return '"' + "".join(quoted) + '"'


def attributes(paths: Sequence[str], existing: str = "") -> str:
    """The `.gitattributes` text: the remote's own lines kept (a new Space comes with
    the Hub's defaults), our block replaced by patterns for `paths`: one per binary
    extension present, one exact pattern per other file."""
    kept, inside = [], False
    for line in existing.splitlines():
        if line == BEGIN:
            inside = True
        elif line == END:
            inside = False
        elif not inside:
            kept.append(line)
    while kept and not kept[-1].strip():
        kept.pop()
    extensions, exact = set(), []
    for rel in paths:
        ext = rel.rsplit("/", 1)[-1].rpartition(".")[2]
        if "." in rel.rsplit("/", 1)[-1] and ext.lower() in BINARY_EXTENSIONS \
                and ext.isalnum():
            extensions.add(ext)
        else:
            exact.append(rel)
    rule = " filter=lfs diff=lfs merge=lfs -text"
    block = [BEGIN, *(f"*.{ext}{rule}" for ext in sorted(extensions)),
             *(_pattern(rel) + rule for rel in exact), END]
    return "\n".join([*kept, *([""] if kept else []), *block]) + "\n"


def ensure_lfs(run: GitRunner) -> str:
    """The `git lfs version` line, or `LfsMissingError` saying what to install."""
    proc = run(["lfs", "version"], None, False)
    if proc.returncode != 0:
        raise LfsMissingError(
            "this site has images or large files, which Hugging Face and ModelScope only "
            "accept through Git LFS, and git-lfs is not installed: install the git-lfs "
            "package (apt-get install git-lfs, brew install git-lfs) and deploy again; "
            "nothing was pushed")
    return proc.stdout.decode("utf-8", "replace").strip()


def not_pointers(run: GitRunner, paths: Sequence[str]) -> list[str]:
    """Those of `paths` whose committed blob in HEAD is *not* an LFS pointer (a filter
    that did not run): pushing them would put the raw bytes into git history."""
    if not paths:
        return []
    listing = run(["ls-tree", "-r", "-z", "HEAD"])
    blobs: dict[str, str] = {}
    for entry in listing.stdout.split(b"\0"):
        if b"\t" not in entry:
            continue
        meta, name = entry.split(b"\t", 1)
        blobs[name.decode("utf-8", "surrogateescape")] = meta.split()[2].decode()
    wanted = [p for p in paths if p in blobs]
    missing = [p for p in paths if p not in blobs]
    if wanted:
        proc = run(["cat-file", "--batch"], "\n".join(blobs[p] for p in wanted).encode()
                   + b"\n")
        data, pos = proc.stdout, 0
        for rel in wanted:
            header_end = data.index(b"\n", pos)
            size = int(data[pos:header_end].split()[2])
            body = data[header_end + 1: header_end + 1 + size]
            pos = header_end + 1 + size + 1
            if not body.startswith(_POINTER):
                missing.append(rel)
    return sorted(missing)
