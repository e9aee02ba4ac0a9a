"""What this machine's checkpointing wrote: the digests replay checks before loading.

A checkpoint file is a pickle (or a torch zip holding one): loading it can run any code
its author chose. Replay therefore only loads files that checkpointing wrote on this
machine. As the background writer saves a file it hashes the bytes it writes and appends
`{"file", "sha256", "bytes"}` to `<store>/local/checkpoints/<run id>.jsonl`. `<store>/local`
sits beside `runs/` and is never pushed, and `pull` never accepts a run's `checkpoints/`,
so a teammate cannot supply a record; a file whose bytes differ from its record (replaced,
truncated, grown) is refused before a single byte is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import IO, Any, NamedTuple

from ..errors import FlowillowerError
from ..store.provenance import local_dir

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_CHUNK = 1 << 20


class UntrustedCheckpoint(FlowillowerError):
    """A checkpoint file this machine did not write, or whose bytes changed since."""


class Digest(NamedTuple):
    """What was written to one checkpoint file."""

    sha256: str
    bytes: int


def ledger_path(store_root: Path, run_id: str) -> Path:
    """`<store>/local/checkpoints/<run id>.jsonl` (never pushed)."""
    if not _RUN_ID.match(run_id) or ".." in run_id:
        raise ValueError(f"not a run id: {run_id!r}")
    return local_dir(store_root) / "checkpoints" / f"{run_id}.jsonl"


def run_ledger(run_dir: Path) -> Path:
    """The ledger of the run folder `<store>/runs/<run id>`."""
    run_dir = Path(run_dir)
    return ledger_path(run_dir.parent.parent, run_dir.name)


class HashingWriter:
    """A binary file wrapper that hashes what passes through `write` (torch.save, pickle)."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._fh = fh
        self._hash = hashlib.sha256()
        self.count = 0

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self._hash.update(view)
        self.count += view.nbytes
        return self._fh.write(view)

    def flush(self) -> None:
        self._fh.flush()

    def digest(self) -> Digest:
        return Digest(self._hash.hexdigest(), self.count)


def record(ledger: Path, file: str, digest: Digest) -> None:
    """Append one file's digest (a torn last line is ignored by `read`)."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"file": file, "sha256": digest.sha256, "bytes": digest.bytes},
                      separators=(",", ":"))
    with open(ledger, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


def read(ledger: Path) -> dict[str, Digest]:
    """File name -> its latest recorded digest (empty when nothing was recorded)."""
    try:
        text = ledger.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return {}
    out: dict[str, Digest] = {}
    for line in text.splitlines():
        try:
            entry = json.loads(line)
            out[str(entry["file"])] = Digest(str(entry["sha256"]), int(entry["bytes"]))
        except (ValueError, KeyError, TypeError):
            continue  # a torn line from a killed writer: that file stays unrecorded
    return out


def open_verified(path: Path, expected: Digest | None) -> IO[bytes]:
    """`path` opened for reading, if its bytes are exactly what this machine wrote.

    The digest is computed through the returned handle, which then goes back to the
    start: the loader reads the very file that was checked (a file renamed over it
    afterwards is not the one read). The caller closes it.
    """
    if expected is None:
        raise UntrustedCheckpoint(
            f"refusing to load checkpoint {path}: this machine has no record of writing it "
            "(it came from elsewhere, or was written before digests were kept)")
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise UntrustedCheckpoint(f"cannot read checkpoint {path}: {exc}") from None
    try:
        size = os.fstat(fh.fileno()).st_size
        if size != expected.bytes:
            raise UntrustedCheckpoint(
                f"refusing to load checkpoint {path}: it has {size:,} bytes, this machine "
                f"wrote {expected.bytes:,} (changed since it was written)")
        h = hashlib.sha256()
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
        if h.hexdigest() != expected.sha256:
            raise UntrustedCheckpoint(
                f"refusing to load checkpoint {path}: its sha256 {h.hexdigest()[:16]}... "
                f"differs from the {expected.sha256[:16]}... this machine wrote (changed "
                "since it was written)")
        fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh
