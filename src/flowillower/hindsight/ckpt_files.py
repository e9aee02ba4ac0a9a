"""Checkpoint files: the background writer, and what the reader and recorder share.

The writer serialises captures off the training thread, de-duplicates tensors that did not
change since the previous capture (a `BlobRef` points at the file holding them), writes
whole files only (tmp + rename), hashes the bytes as they are written and records the
digest in the store-local ledger (`ledger.py`) that replay checks before loading. Each
capture's manifest line lists the earlier files its tensors point into (`refs`), so a
replay task can ship only the files it needs (`task.py`) and the recorder can thin old
entry points (`entry_points.py`) without deleting a file a kept capture still uses.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import FlowillowerError
from . import ledger

CKPT_DIRNAME = "checkpoints"
MANIFEST = "manifest.jsonl"
FORMAT_VERSION = 1


def segment_subdir(segment: int) -> str:
    """The folder under `checkpoints/` where segment `segment` (> 1) of a resumed run
    records its own checkpoints when an earlier segment already recorded the run's."""
    if not isinstance(segment, int) or segment < 2:
        raise ValueError(f"not a later segment: {segment!r}")
    return f"seg{segment}"
_now = time.perf_counter


class CheckpointError(FlowillowerError):
    """State could not be registered, captured or restored."""


def torch_module() -> Any:
    """torch if the program imported it (never imported here: `import flowillower` stays
    light and a numpy-only script writes plain pickles)."""
    return sys.modules.get("torch")


def is_tensor(x: Any) -> bool:
    torch = torch_module()
    return torch is not None and isinstance(x, torch.Tensor)


class BlobRef(NamedTuple):
    """A tensor stored in checkpoint file `seq` under `key` (shared by later captures)."""

    seq: int
    key: str


def file_name(seq: int, use_torch: bool) -> str:
    return f"c{seq:06d}.{'pt' if use_torch else 'pkl'}"


def bit_equal(a: Any, b: Any) -> bool:
    """Same dtype, shape and bytes (so -0.0 and 0.0 differ, NaNs with equal bits match)."""
    if a.dtype != b.dtype or a.shape != b.shape or a.device != b.device:
        return False
    if not (a.is_contiguous() and b.is_contiguous()) or a.is_sparse or b.is_sparse:
        return False
    torch = torch_module()
    try:
        a8, b8 = a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)
        if a8.device.type == "cpu":
            # numpy, not torch.equal: this runs on the writer thread, and a torch op there
            # that goes parallel starts a second OpenMP team; libgomp then has more threads
            # than cores and stops spinning between parallel regions, which made a small
            # CPU training loop twice as slow (benchmarks/bench_demo.py).
            import numpy as np

            a_np, b_np = a8.numpy(), b8.numpy()
            # Training state almost always differs in its first bytes: look there first
            # instead of comparing (and allocating a mask for) the whole tensor.
            head = min(len(a_np), 4096)
            return bool(np.array_equal(a_np[:head], b_np[:head])
                        and np.array_equal(a_np[head:], b_np[head:]))
        return bool(torch.equal(a8, b8))
    except (RuntimeError, TypeError):
        return False


class WriteJob(NamedTuple):
    """A capture (or a manifest-only line when `tree` is None) for the writer."""

    seq: int
    entry: dict[str, Any]  # manifest fields
    tree: Any  # captured state (None for manifest-only lines)
    copy_s: float
    size: int = 0  # bytes of the tree: the most it adds on disk, and what it holds in memory
    ready: Any = None  # device copies in flight: `.synchronize()` before reading the tree


class BackgroundWriter:
    """Serialises captures off the training thread, de-duplicating unchanged tensors.

    `held()` / `held_bytes` tell how many captures (and how many bytes of them) are still
    in memory, queued or being written: the recorder's back-pressure reads them.
    """

    def __init__(self, directory: Path, ledger_file: Path | None = None,
                 ledger_prefix: str = "") -> None:
        self.dir = directory
        self.ledger = ledger_file
        # A later segment's folder (`seg<N>/`): its files are recorded under that prefix,
        # so they never shadow the first recording's names in the run's one ledger.
        self.ledger_prefix = ledger_prefix
        self._jobs: list[WriteJob | None] = []
        self._cond = threading.Condition()
        self._busy = False
        self._held = 0
        self.held_bytes = 0
        self.error: BaseException | None = None
        self.write_s = 0.0  # total time spent serialising and writing
        self.write_cpu_s = 0.0  # of which the writer thread was on a CPU
        self.bytes = 0
        self.sizes_done = 0  # `WriteJob.size` of the captures handled so far (written or not)
        self._written_now = 0  # bytes of the file the current job wrote
        self.last_bytes = 0  # bytes of the latest file written
        self.thinned: list[str] = []  # files deleted by `thin` jobs
        self._files: dict[int, tuple[str, int, frozenset[int]]] = {}  # seq -> name, bytes, refs
        self._last: dict[str, tuple[Any, BlobRef]] = {}  # tensor path -> (tensor, ref)
        self._manifest = None
        self._thread = threading.Thread(target=self._loop, name="flowillower-checkpoints",
                                        daemon=True)
        self._thread.start()

    def pending(self) -> int:
        """Jobs (captures and manifest lines) not written yet."""
        with self._cond:
            return len(self._jobs) + (1 if self._busy else 0)

    def accounted(self) -> tuple[int, int, int]:
        """(bytes of the files on disk, sizes of the captures handled, sizes of those still
        held in memory), read together: read one by one while a job ends, a capture
        could be counted both as written and as still queued."""
        with self._cond:
            return self.bytes, self.sizes_done, self.held_bytes

    def held(self) -> int:
        """Captures in memory: queued or being written."""
        with self._cond:
            return self._held

    def submit(self, job: WriteJob | None) -> None:
        with self._cond:
            self._jobs.append(job)
            if job is not None and job.tree is not None:
                self._held += 1
                self.held_bytes += job.size
            self._cond.notify_all()

    def wait_until(self, predicate: Any, timeout: float | None = None) -> bool:
        """Block until `predicate()` holds (re-checked whenever a job finishes), the
        writer failed, or `timeout` passed; returns whether `predicate()` holds."""
        with self._cond:
            self._cond.wait_for(lambda: self.error is not None or predicate(), timeout)
        return predicate()

    def close(self, timeout: float | None = None) -> None:
        self.submit(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._jobs:
                    self._cond.wait()
                job = self._jobs.pop(0)
                self._busy = job is not None
            if job is None:
                break
            self._written_now = 0
            try:
                if self.error is None:  # after a failure only drain: training goes on
                    self._write(job)
            except BaseException as exc:  # disk full, unpicklable state...
                self.error = exc
            finally:
                with self._cond:  # one step for readers of `accounted`
                    self.bytes += self._written_now
                    self.sizes_done += job.size
                    self._busy = False
                    if job.tree is not None:
                        self._held -= 1
                        self.held_bytes -= job.size
                    self._cond.notify_all()
        if self._manifest is not None:
            self._manifest.close()

    def _line(self, entry: dict[str, Any]) -> None:
        if self._manifest is None:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._manifest = open(self.dir / MANIFEST, "a", encoding="utf-8")
        self._manifest.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._manifest.flush()

    def _write(self, job: WriteJob) -> None:
        if job.tree is None:
            if job.entry.get("type") == "thin":
                self._thin(job.entry["seqs"])
                return
            self._line(job.entry)
            return
        if job.ready is not None:
            job.ready.synchronize()  # the device-to-host copies have landed
        t0, cpu0 = _now(), time.thread_time()
        blobs: dict[str, Any] = {}
        torch = torch_module()
        refs: set[int] = set()
        tree = (self._dedupe(job.tree, "", job.seq, blobs, refs) if torch is not None
                else job.tree)
        name = file_name(job.seq, torch is not None)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{name}.tmp"
        payload = {"version": FORMAT_VERSION, "blobs": blobs, "tree": tree}
        with open(tmp, "wb") as fh:
            out = ledger.HashingWriter(fh)  # the digest of exactly the bytes written
            if torch is not None:
                torch.save(payload, out)
            else:
                pickle.dump(payload, out, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.dir / name)  # whole files only: a kill leaves no torn checkpoint
        digest = out.digest()
        if self.ledger is not None:
            ledger.record(self.ledger, self.ledger_prefix + name, digest)
        took = _now() - t0
        self.write_s += took
        self.write_cpu_s += time.thread_time() - cpu0
        self._written_now = digest.bytes  # counted with the job's end (`accounted`)
        self.last_bytes = digest.bytes
        self._files[job.seq] = (name, digest.bytes, frozenset(refs))
        self._line({**job.entry, "file": name, "bytes": digest.bytes, "refs": sorted(refs),
                    "copy_s": round(job.copy_s, 6), "write_s": round(took, 6)})

    def _thin(self, seqs: list[int]) -> None:
        """Delete the files of captures `seqs`, except those a kept capture's tensors
        still point into (they stay, whole); later captures never point into a deleted
        one. A manifest line names what went."""
        gone = {s for s in seqs if s in self._files}
        used = set().union(*(refs for s, (_, _, refs) in self._files.items() if s not in gone))
        deleted, kept = [], []
        for seq in sorted(gone):
            name, size, _ = self._files[seq]
            if seq in used:
                kept.append(name)
                continue
            # A reader skips a capture whose file is missing (`CheckpointStore`).
            (self.dir / name).unlink(missing_ok=True)
            del self._files[seq]
            with self._cond:
                self.bytes -= size
            deleted.append(name)
            for path, (_, ref) in list(self._last.items()):
                if ref.seq == seq:
                    del self._last[path]
        self.thinned += deleted
        self._line({"type": "thinned", "files": deleted, "kept": kept})

    def _dedupe(self, x: Any, path: str, seq: int, blobs: dict[str, Any],
                refs: set[int]) -> Any:
        if is_tensor(x):
            last = self._last.get(path)
            if last is not None and bit_equal(last[0], x):
                refs.add(last[1].seq)
                return last[1]
            ref = BlobRef(seq, path)
            blobs[path] = x
            self._last[path] = (x, ref)
            return ref
        if isinstance(x, dict):
            return {k: self._dedupe(v, f"{path}/{k}", seq, blobs, refs) for k, v in x.items()}
        if isinstance(x, list):
            return [self._dedupe(v, f"{path}/{i}", seq, blobs, refs) for i, v in enumerate(x)]
        if isinstance(x, tuple) and not hasattr(x, "_fields"):
            return tuple(self._dedupe(v, f"{path}/{i}", seq, blobs, refs)
                         for i, v in enumerate(x))
        return x
