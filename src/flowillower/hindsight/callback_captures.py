"""Entry points a callback-driven recorder wrote into a run, read without its framework.

A recorder that captures a training framework's state from inside the framework's own
callbacks (the Lightning integration's `FlowillowerCheckpoint`) keeps its captures in
`<run>/checkpoints/<name>/`, next to `fw.checkpointing`'s, with a `manifest.jsonl`:

* a first `meta` line whose `replay` entry says in plain words what a replay worker does
  with them: `{"by": "FlowillowerCheckpoint", "loop": "epoch", "inner": "step",
  "skips": "training batches", "per": "training batch", "unless": "...", "hooks":
  [...]}` (`loop`: the loop
  coordinate a capture ends, `inner`: the one whose `time/<inner>` values time what is
  skipped, `hooks`: the functions a replayed statement may sit in for the worker to
  skip; one in any other function may run per skipped unit);
* one `ckpt` line per capture (`i`: the `loop` index whose `skips` it replaces);
* `mid_validation` lines for indices that cannot be skipped as one block.

The digests of its files are in `<store>/local/checkpoints/<run id>.<name>.jsonl`: a
file this machine has no record of writing is never counted (nor loaded by the worker).

This module only reads manifests (no capture is loaded, neither torch nor any framework
imported), so the replay planner can say what a worker will skip and the recorder's
integration can share the same reading: both layers import it, it imports neither.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import ledger
from .ckpt_files import CKPT_DIRNAME, MANIFEST
from .syntax import COMPOUND, Loc, walk_statements

__all__ = ["CapturedIterations", "Skips", "innermost_function", "ranges", "skip_summary"]


class CapturedIterations:
    """One callback recorder's captures of a run: its manifest, checked against the
    ledger of what this machine wrote (`name`: its folder under `checkpoints/`)."""

    def __init__(self, run_dir: Path, name: str) -> None:
        run_dir = Path(run_dir)
        self.dir = run_dir / CKPT_DIRNAME / name
        self.ledger = ledger.ledger_path(run_dir.parent.parent, f"{run_dir.name}.{name}")
        self.meta: dict[str, Any] | None = None
        self.entries: dict[int, dict[str, Any]] = {}  # loop index -> its capture's line
        self.unskippable: set[int] = set()  # e.g. epochs validated before their end
        self.unrecorded: list[str] = []  # files this machine has no record of writing
        self.files: dict[int, str] = {}  # capture sequence number -> file name
        self.digests: dict[str, ledger.Digest] = {}
        self._read()

    @property
    def exists(self) -> bool:
        return self.meta is not None

    @property
    def replay(self) -> dict[str, Any]:
        """The recorder's description of what a replay worker does (empty: none)."""
        desc = (self.meta or {}).get("replay")
        return desc if isinstance(desc, dict) else {}

    def _read(self) -> None:
        try:
            text = (self.dir / MANIFEST).read_text(encoding="utf-8")
        except (OSError, ValueError):
            return
        self.digests = ledger.read(self.ledger)
        for line in text.splitlines():
            try:
                entry = json.loads(line)
                kind = entry.get("type")
                if kind == "meta" and self.meta is None:
                    self.meta = entry
                elif kind == "ckpt" and (self.dir / str(entry["file"])).exists():
                    if entry["file"] not in self.digests:
                        self.unrecorded.append(entry["file"])
                        continue
                    self.entries[int(entry["i"])] = entry
                    self.files[int(entry["seq"])] = entry["file"]
                elif kind == "mid_validation":
                    self.unskippable.add(int(entry["i"]))
            except (ValueError, KeyError, TypeError, AttributeError):
                break  # a torn last line from a killed process, or not ours

    def needed_files(self, index: int) -> list[str]:
        """The files restoring the capture of loop index `index` reads (its own, then
        the earlier ones its tensors point into): what a worker starting right after
        `index` must be handed when it shares no disk with this machine."""
        entry = self.entries[index]
        refs = entry.get("refs") if isinstance(entry.get("refs"), list) else []
        return [entry["file"], *(self.files[r] for r in refs if r in self.files)]

    def skippable(self) -> set[int]:
        """Loop indices whose work a replay worker may skip (captured, recorded here)."""
        return set(self.entries) - self.unskippable


@dataclass
class Skips:
    """What a replay worker of a run skips through a callback recorder's captures."""

    by: str  # the recorder ("FlowillowerCheckpoint")
    loop: str  # "epoch"
    what: str  # "training batches"
    unless: str  # when the worker runs them all instead
    indices: list[int]  # the loop indices skipped
    total: int  # loop indices the run ran
    saved_s: float  # recorded seconds of the skipped work
    load_bytes: int  # capture bytes a worker reads to restore them
    unrecorded: int = 0  # capture files this machine has no record of writing
    hooks: list[str] = field(default_factory=list)  # functions it skips around
    per: str = "skipped unit"  # what one skipped piece of work is ("training batch")
    setup_s: float | None = None  # the recording process's seconds before training
    started: float | None = None  # when training started (Unix time)
    blocked: str = ""  # why the worker skips nothing for the replayed statements
    times: dict[int, float] = field(default_factory=dict)  # index -> recorded wall seconds
    threads: int | None = None  # the recording's torch threads (float sums depend on them)

    def checked(self, source: str, lines: Iterable[int]) -> Skips:
        """These skips for the replayed code `source` whose statements at `lines` are
        being replayed: none when one sits in a function outside `hooks` (it may run
        inside the work skipped), as the worker will decide."""
        if not self.hooks:
            return self
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return self
        wanted, found = set(lines), []
        for stmt, loc in walk_statements(tree.body):
            func = innermost_function(loc)
            if stmt.lineno in wanted and not isinstance(stmt, COMPOUND) \
                    and func is not None and func not in self.hooks:
                found.append(f"line {stmt.lineno} in {func}()")
        if not found:
            return self
        return replace(self, indices=[], saved_s=0.0, load_bytes=0,
                       blocked=f"the statement(s) at {', '.join(found)} may run per "
                               f"{self.per}")

    def strategy(self) -> str:
        """The strategy's words: how much the worker skips."""
        if self.blocked:
            return f"every {self.loop} re-executed: {self.blocked} ({self.by})"
        if not self.indices:
            return (f"every {self.loop} re-executed ({self.by} recorded no {self.loop} "
                    "that can be skipped)")
        return (f"the {self.what} of {len(self.indices)} of {self.total} {self.loop}s "
                f"skipped ({self.by})")

    def note(self) -> str:
        """The schedule's note: which indices, and when the worker skips none."""
        if self.blocked:
            return (f"{self.by}: {self.blocked}, so the worker re-executes every "
                    f"{self.loop} in full (it skips the {self.what} only for statements in "
                    f"{self.loop}-level hooks, outside any function or after training)")
        if not self.indices:
            why = (f"{self.unrecorded} capture file(s) were not written on this machine"
                   if self.unrecorded else "no capture was written, or none can stand for a "
                   f"whole {self.loop}'s {self.what}")
            return f"{self.by}: {why}; every {self.loop} is re-executed"
        return (f"{self.by}: the worker skips the {self.what} of {self.loop}s "
                f"{ranges(self.indices)} and restores each one's end state from the run's "
                f"captures; it re-executes every {self.loop} instead if {self.unless}")


def innermost_function(loc: Loc) -> str | None:
    """The name of the innermost function around a statement (None: module level)."""
    funcs = [c.name for c, _f, _k in loc.chain
             if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return funcs[-1] if funcs else None


def ranges(indices: list[int]) -> str:
    """`0-3, 5` for [0, 1, 2, 3, 5]."""
    parts: list[str] = []
    start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ", ".join(parts)


def _text(value: Any, default: str, limit: int = 400) -> str:
    """A manifest's words as the schedule prints them: printable characters only (a
    copied-in manifest must not drive the terminal), cut at `limit`."""
    if not isinstance(value, str):
        return default
    return "".join(c for c in value if c.isprintable())[:limit] or default


def _count(value: Any) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def _number(meta: dict[str, Any] | None, key: str) -> float | None:
    value = (meta or {}).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _per_index(data: Any, name: str, loop: str) -> dict[int, float]:
    """`loop` index -> the sum of the `name` values logged inside it (`data`: RunData)."""
    series = data.series.get(name)
    if series is None or loop not in data.loop_names:
        return {}
    col = data.loop_names.index(loop)
    out: dict[int, float] = {}
    for coords, value in zip(data.ctx_coords[series.ctx], series.values):
        if coords[col] >= 0:
            out[int(coords[col])] = out.get(int(coords[col]), 0.0) + float(value)
    return out


def recorders(run_dir: Path) -> Iterator[CapturedIterations]:
    """Each callback recorder's captures of the run at `run_dir` (a folder under its
    checkpoints with a manifest), in name order."""
    base = Path(run_dir) / CKPT_DIRNAME
    try:
        folders = sorted(p.name for p in base.iterdir() if (p / MANIFEST).is_file())
    except OSError:
        return
    for name in folders:
        try:
            yield CapturedIterations(Path(run_dir), name)
        except ValueError:  # a folder name that cannot name a ledger
            continue


def skip_summary(run_dir: Path, data: Any) -> Skips | None:
    """What a replay worker of the run at `run_dir` skips (`data`: its RunData, for the
    recorded timings), from the first callback recorder that describes itself; None when
    no recorder captured anything for it."""
    for captures in recorders(run_dir):
        desc = captures.replay
        loop = _text(desc.get("loop"), "")
        if not loop:
            continue
        indices = sorted(captures.skippable())
        inner = _per_index(data, f"time/{_text(desc.get('inner'), '')}", loop)
        walls = _per_index(data, f"time/{loop}", loop)
        ran = set(walls) | set(inner) | set(captures.entries)
        hooks = desc.get("hooks") if isinstance(desc.get("hooks"), list) else []
        return Skips(_text(desc.get("by"), captures.dir.name), loop, _text(desc.get("skips"), "work"),
                     _text(desc.get("unless"), "the replayed code needs it"), indices,
                     max(ran, default=-1) + 1, sum(inner.get(i, 0.0) for i in indices),
                     sum(_count(captures.entries[i].get("bytes")) for i in indices),
                     len(captures.unrecorded), [_text(h, "") for h in hooks],
                     _text(desc.get("per"), "skipped unit"),
                     _number(captures.meta, "setup_s"), _number(captures.meta, "time"),
                     times=walls or inner, threads=_threads(captures.meta))
    return None


def _threads(meta: dict[str, Any] | None) -> int | None:
    """The recorded thread count, when it is a sane one (the manifest is data)."""
    value = (meta or {}).get("torch_threads")
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 \
        else None
