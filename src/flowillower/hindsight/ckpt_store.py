"""Reading a run's checkpoints back, only those this machine wrote.

Every file is checked against the store-local ledger (`ledger.py`) before a byte of it
is unpickled: same size, same sha256, read through the handle that was hashed. Torch
files then load with `torch.load(weights_only=True)`, which only rebuilds tensors, plain
containers, numbers and strings (plus `BlobRef` and numpy arrays, allowed by name).
Where that is not enough it is not used, and the digest alone is the guarantee:

* states of registered dicts/lists/objects are pickled bytes (arbitrary Python objects);
  they are unpickled with `pickle.loads` when restored, after the file was verified;
* `state_dict()`s holding other objects (a custom data loader's state) make
  `weights_only=True` refuse the file; a verified file is then loaded in full;
* runs recorded without torch imported are plain pickles (`.pkl`), loaded with
  `pickle.load` after verification.

Model and optimizer states, torch/numpy/python RNG states and LR schedulers' states load
under `weights_only=True`.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path
from typing import Any

from . import ledger
from .ckpt_files import CKPT_DIRNAME, MANIFEST, BlobRef

_SUBDIR = re.compile(r"^seg[1-9][0-9]*$")  # never `..` or a path


def _safe_globals() -> list[Any]:
    """What our checkpoints pickle besides tensors and containers, allowed by name."""
    out: list[Any] = [BlobRef]
    try:
        import numpy as np

        try:
            from numpy._core import multiarray  # numpy >= 2
        except ImportError:  # pragma: no cover - numpy 1.x
            from numpy.core import multiarray  # type: ignore[no-redef]
        out += [np.ndarray, np.dtype, multiarray._reconstruct, multiarray.scalar]
        # dtypes pickle as their class in numpy >= 1.25 (e.g. numpy.dtypes.Float64DType)
        out += [type(np.dtype(c)) for c in "?bBhHiIlLqQefdgFDG"]
    except ImportError:  # pragma: no cover - numpy is a dependency of torch here
        pass
    return out


def load_checkpoint_file(path: Path, expected: ledger.Digest | None) -> tuple[Any, str]:
    """(payload, how it was loaded) of a verified checkpoint file.

    Raises `ledger.UntrustedCheckpoint` (naming the file) unless its bytes are exactly
    what this machine wrote. How: "weights_only", "full" (torch refused weights_only for
    an object in the state; the file is verified) or "pickle" (a run without torch).
    """
    with ledger.open_verified(path, expected) as fh:
        if path.suffix != ".pt":
            return pickle.load(fh), "pickle"
        import torch

        allow = getattr(torch.serialization, "safe_globals", None)  # torch >= 2.5
        if allow is None:
            return torch.load(fh, map_location="cpu", weights_only=False), "full"
        try:
            with allow(_safe_globals()):
                return torch.load(fh, map_location="cpu", weights_only=True), "weights_only"
        except pickle.UnpicklingError:
            fh.seek(0)
            return torch.load(fh, map_location="cpu", weights_only=False), "full"


class CheckpointStore:
    """A run's recorded checkpoints: the manifest and lazy loading of captured states."""

    def __init__(self, run_dir: Path, subdir: str | None = None) -> None:
        """`subdir`: a resumed segment's own folder (`seg<N>`, see `segment_subdir`);
        None: the run's first recording."""
        if subdir is not None and not _SUBDIR.match(subdir):
            raise ValueError(f"not a segment's checkpoint folder: {subdir!r}")
        self.run_dir = Path(run_dir)
        self.subdir = subdir
        self.dir = self.run_dir / CKPT_DIRNAME / (subdir or "")
        self.meta: dict[str, Any] | None = None
        self.entries: dict[tuple[str, int, int], dict[str, Any]] = {}  # (kind, i, m) -> line
        self.iters: dict[int, dict[str, Any]] = {}
        self.ended: int | None = None
        self._cache: dict[int, dict[str, Any]] = {}
        self._files: dict[int, str] = {}
        self._digests: dict[str, ledger.Digest] | None = None
        self.last_used: set[int] = set()  # files the last `load` read
        self.loaded_with: dict[str, str] = {}  # file name -> how it was loaded
        self._read_manifest()

    @property
    def exists(self) -> bool:
        return self.meta is not None

    def _read_manifest(self) -> None:
        try:
            text = (self.dir / MANIFEST).read_text(encoding="utf-8")
        except OSError:
            return
        for line in text.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                break  # a torn last line from a killed process
            kind = entry.get("type")
            if kind == "meta":
                if self.meta is not None:
                    break  # a second recording in the same run: keep the first loop only
                self.meta = entry
            elif kind == "ckpt" and (self.dir / entry["file"]).exists():
                self.entries[(entry["kind"], entry["i"], entry["m"])] = entry
                self._files[entry["seq"]] = entry["file"]
            elif kind == "iter":
                self.iters[entry["i"]] = entry
            elif kind == "end":
                self.ended = entry["n"]

    @property
    def digests(self) -> dict[str, ledger.Digest]:
        """What this machine recorded writing for this folder (file name -> digest): a
        segment's files are recorded as `seg<N>/<file>`, the first recording's bare."""
        if self._digests is None:
            try:
                recorded = ledger.read(ledger.run_ledger(self.run_dir))
            except ValueError:  # not a run folder name: nothing can have been recorded
                recorded = {}
            prefix = f"{self.subdir}/" if self.subdir else ""
            self._digests = {name[len(prefix):]: d for name, d in recorded.items()
                             if name.startswith(prefix) and "/" not in name[len(prefix):]}
        return self._digests

    def keep_recorded(self) -> tuple[list[str], list[str]]:
        """Forget entries whose files this machine has no record of writing, and say
        which files differ in size from their record: (unrecorded, changed) file names.

        For planning (cheap: sizes only); loading checks the full digest regardless.
        """
        unrecorded: list[str] = []
        changed: list[str] = []
        for key, entry in list(self.entries.items()):
            name = entry["file"]
            digest = self.digests.get(name)
            if digest is None:
                unrecorded.append(name)
                del self.entries[key]
                self._files.pop(entry["seq"], None)
                continue
            try:
                size = (self.dir / name).stat().st_size
            except OSError:
                size = -1
            if size != digest.bytes:
                changed.append(name)
        return sorted(set(unrecorded)), sorted(set(changed))

    def start(self, i: int) -> dict[str, Any] | None:
        return self.entries.get(("start", i, 0))

    def final(self) -> dict[str, Any] | None:
        return self.entries.get(("final", self.ended, 0)) if self.ended is not None else None

    def skippable(self, i: int) -> bool:
        """Iteration i completed and every inner loop's end state was captured."""
        info = self.iters.get(i)
        if not info or not info.get("ckpt"):
            return False
        return all(("inner", i, m) in self.entries for m in range(info["n_inner"]))

    def _load_file(self, seq: int) -> dict[str, Any]:
        cached = self._cache.get(seq)
        if cached is None:
            name = self._files[seq]
            cached, how = load_checkpoint_file(self.dir / name, self.digests.get(name))
            self.loaded_with[name] = how
            self._cache[seq] = cached
        return cached

    def load(self, entry: dict[str, Any]) -> dict[str, Any]:
        """The state tree of a manifest entry, shared tensors resolved."""
        self.last_used = {entry["seq"]}
        return self._resolve(self._load_file(entry["seq"])["tree"])

    def _resolve(self, x: Any) -> Any:
        if isinstance(x, BlobRef):
            self.last_used.add(x.seq)
            return self._load_file(x.seq)["blobs"][x.key]
        if isinstance(x, dict):
            return {k: self._resolve(v) for k, v in x.items()}
        if isinstance(x, list):
            return [self._resolve(v) for v in x]
        if isinstance(x, tuple) and not hasattr(x, "_fields"):
            return tuple(self._resolve(v) for v in x)
        return x

    def drop_cache(self, keep: set[int] | None = None) -> None:
        """Forget loaded files (memory) except the sequence numbers in `keep`."""
        keep = keep or set()
        for seq in list(self._cache):
            if seq not in keep:
                del self._cache[seq]
