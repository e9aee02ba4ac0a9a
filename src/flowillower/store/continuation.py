"""The store's side of resume and fork: which run `fw.init(id=, resume=)` continues,
and what a fork inherits.

Continuing a run writes a new segment file (`store.segments`): nothing already on disk
is rewritten. `resume="auto"` finds the run of a script restarted after a crash or a
pre-emption through `$FLOWILLOWER_RUN_ID`, `$SLURM_JOB_ID` or an id file in the store
keyed by the script's path and arguments. A fork (`fork_from=(run, step)`) copies the
parent's values up to the step into its own first segment, so it reads, travels (push
and pull) and charts on its own, without its parent.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError, RunNotFoundError
from .documents import read_meta, read_summary
from .layout import runs_dir
from .resolve import check_ref, run_path
from .segments import data_file_name, next_segment

__all__ = ["RESUME_MODES", "Continuation", "resolve", "remember", "id_file", "in_replay_worker",
           "environment_id", "parse_fork", "write_fork", "continuation_fields",
           "set_aside_summary", "data_file_name"]

RESUME_MODES = ("never", "allow", "must", "auto")
ID_FILES = "resume"  # folder of the store holding `auto`'s id files


@dataclass
class Continuation:
    """What `fw.init` starts: a new run or the next segment of an existing one."""

    run_id: str | None  # None: a fresh id
    segment: int = 1  # 1: a new run; N > 1: writes data.seg<N>.fwl
    previous: dict[str, Any] = field(default_factory=dict)  # run.json continued
    id_file: Path | None = None  # `auto`: remember the run's id here
    fork_of: dict[str, Any] | None = None  # a fork: its parent and step (run.json)
    inherited_args: dict[str, Any] = field(default_factory=dict)  # a fork's args


def id_file(store_root: Path, argv: list[str] | None = None) -> Path:
    """The id file of this script with these arguments (`resume="auto"`)."""
    argv = list(sys.argv if argv is None else argv)
    script = os.path.abspath(argv[0]) if argv and argv[0] not in ("", "-c") else ""
    key = json.dumps([script, argv[1:]])
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return Path(store_root) / ID_FILES / f"{digest}.json"


def environment_id() -> str | None:
    """The run id a scheduler gives a job and its restarts: `$FLOWILLOWER_RUN_ID`, else
    `$SLURM_JOB_ID` (with the array task) as `slurm-<job>[-<task>]`."""
    own = os.environ.get("FLOWILLOWER_RUN_ID")
    if own:
        return own
    job = os.environ.get("SLURM_JOB_ID")
    if not job:
        return None
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"slurm-{job}-{task}" if task else f"slurm-{job}"


def _remembered(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    run_id = doc.get("id") if isinstance(doc, dict) else None
    return run_id if isinstance(run_id, str) else None


def remember(path: Path, run_id: str) -> None:
    """Write `auto`'s id file, whole or not at all (a failure only costs the next
    restart its run)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"id": run_id, "argv": sys.argv, "time": time.time()}),
                       encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def _exists(store_root: Path, run_id: str) -> bool:
    try:
        run_path(runs_dir(store_root), run_id)
    except RunNotFoundError:
        return False
    return True


def _status(run_dir: Path) -> str:
    from .index_rows import run_status  # no numpy: readers' status rule

    return run_status(run_dir)


def in_replay_worker() -> bool:
    """Whether this process is a hindsight replay worker (`$FLOWILLOWER_REPLAY`, the name
    `hindsight.session.REPLAY_ENV`, read without importing hindsight): its run records
    into a scratch store, so resuming or forking must not touch the real one."""
    return bool(os.environ.get("FLOWILLOWER_REPLAY"))


def resolve(store_root: Path, run_id: str | None, resume: str) -> Continuation:
    """The continuation `fw.init(id=run_id, resume=resume)` asks for; raises
    FlowillowerError with what to do when the request cannot be met. A replay worker
    always starts a fresh run: the replay feeds it the recorded segment's args and
    state, and nothing of the store (an id file, a segment claimed in a real run found
    through `$SLURM_JOB_ID`) may change."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {', '.join(RESUME_MODES)}, not {resume!r}")
    if run_id is not None:
        check_ref(run_id)
    if in_replay_worker():
        return Continuation(run_id)
    remember_at = None
    from_file = False
    if resume == "auto" and run_id is None:
        run_id = environment_id()
        if run_id is None:
            remember_at = id_file(store_root)
            run_id = _remembered(remember_at)
            from_file = run_id is not None
    exists = run_id is not None and _exists(store_root, run_id)
    where = runs_dir(store_root)
    if resume == "never":
        if exists:
            raise FlowillowerError(
                f"run {run_id!r} already exists in {where}; pass resume='allow' (or "
                "'must') to continue it, or choose another id")
        return Continuation(run_id)
    if resume == "must":
        if run_id is None:
            raise FlowillowerError("resume='must' continues an existing run: give its id "
                                   "(fw.init(id=..., resume='must'))")
        if not exists:
            raise FlowillowerError(
                f"cannot resume run {run_id!r}: no such run in {where} (resume='must'); "
                "`flowillower ls` lists the runs, resume='allow' starts it when missing")
    if not exists:
        return Continuation(None if from_file else run_id, id_file=remember_at)
    assert run_id is not None
    run_dir = where / run_id
    status = _status(run_dir)
    if from_file and status == "success":  # the same command run again: a new run
        return Continuation(None, id_file=remember_at)
    if status == "running":
        meta = read_meta(run_dir) or {}
        raise FlowillowerError(
            f"run {run_id!r} is still running (pid {meta.get('pid')} on "
            f"{meta.get('host')}); only a run that ended can be continued")
    return Continuation(run_id, claim_segment(run_dir), _previous(run_dir), remember_at)


def claim_segment(run_dir: Path) -> int:
    """The next segment number, claimed by creating its (empty) frame file exclusively:
    two restarts of one run racing each get a segment of their own, never one file."""
    segment = next_segment(run_dir)
    while True:
        try:
            fd = os.open(run_dir / data_file_name(0, segment),
                         os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            segment += 1
            continue
        os.close(fd)
        return segment


def _previous(run_dir: Path) -> dict[str, Any]:
    """run.json of the run continued, with the fields a continuation copies well-typed
    (a damaged or hostile run.json must not break the restarted script)."""
    meta = read_meta(run_dir) or {}
    if not isinstance(meta.get("fork_of"), dict):
        meta.pop("fork_of", None)
    if not isinstance(meta.get("segments_git"), list):
        meta.pop("segments_git", None)
    envs = meta.get("segments_env")
    if not isinstance(envs, list) or not all(isinstance(e, dict) for e in envs):
        meta.pop("segments_env", None)
    return meta


# What a replay needs to re-run an earlier segment's process (its code: segments_git).
SEGMENT_ENV = ("argv", "cwd", "script", "host", "user", "pid", "executable")


def _segment_env(meta: dict[str, Any]) -> dict[str, Any]:
    return {key: meta[key] for key in SEGMENT_ENV if key in meta}


def continuation_fields(segment: int, fork_of: dict[str, Any] | None,
                        previous: dict[str, Any]) -> dict[str, Any]:
    """run.json's fields of a continued or forked run: its segment count, the code
    snapshot of each earlier segment (`segments_git`; `git` is the latest one's), how
    each earlier segment's process was started (`segments_env`: argv, cwd, script, host,
    ...; the top-level fields are the latest one's) and the parent it was forked from.
    `previous`: run.json of the run continued."""
    fields: dict[str, Any] = {}
    if segment > 1:  # a fork's copied values are its segment 1
        fields["segments"] = segment
    if previous:
        earlier = previous.get("segments_git", [])
        fields["segments_git"] = [*earlier, previous.get("git")]
        # How each earlier segment's process was started (its argv may differ from the
        # latest one's: a restart from a chosen checkpoint); {} where not recorded.
        envs = list(previous.get("segments_env") or [])[:len(earlier)]
        envs += [{}] * (len(earlier) - len(envs))
        fields["segments_env"] = [*envs, _segment_env(previous)]
    if fork_of:
        fields["fork_of"] = fork_of
    return fields


def set_aside_summary(run_dir: Path, rank: int, segment: int,
                      event: Callable[..., None]) -> None:
    """A continued run (`segment` > 1) is running again: its summary becomes
    `summary.seg<N>.json` (N: the segment it ended), so readers take the status from
    the live process and the next finish writes summary.json afresh. Nothing is
    deleted. `event` records the segment's start in the run's events."""
    if segment <= 1:
        return
    event("resume", segment=segment)
    name = "summary.json" if rank == 0 else f"summary.rank{rank}.json"
    path = run_dir / name
    if path.exists():
        os.replace(path, run_dir / name.replace(".json", f".seg{segment - 1}.json"))


def parse_fork(fork_from: Any) -> tuple[str, int]:
    """`fork_from=(run_id, step)` checked."""
    try:
        parent, step = fork_from
    except (TypeError, ValueError):
        raise ValueError(f"fork_from must be (run_id, step), not {fork_from!r}") from None
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"fork_from's step must be an int >= 0, not {step!r}")
    return check_ref(parent), step


def write_fork(store_root: Path, parent_id: str, step: int, child_id: str
               ) -> dict[str, Any]:
    """Copy the parent's values up to `step` (its own rewinds applied) into the child's
    first segment; returns run.json's `fork_of` and the parent's args. Media and
    artifacts stay with the parent (their values would point at its files)."""
    from .format import encode_rows
    from .reader import RunReader

    if in_replay_worker():  # the replay merges what the fork inherited: copy nothing
        return {"fork_of": {"run": parent_id, "step": step}, "args": {}}
    parent_dir = run_path(runs_dir(store_root), parent_id)
    reader = RunReader(parent_dir)
    data = reader.load()
    loops = data.loop_names
    rows, args, last_time = [], {}, None
    for series in data.series.values():
        stepped = series.role in ("metric", "watch")
        for i in range(len(series.values)):
            s = int(series.step[i])
            value = series.values[i]
            if stepped and s > step:
                continue
            if isinstance(value, dict) and "$media" in value:
                continue
            value = value.item() if hasattr(value, "item") else value
            kind = series.kind if series.kind != "object" else (
                "float" if type(value) is float else "int" if type(value) is int else "object")
            coords = {loop: int(idx) for loop, idx in zip(loops, data.ctx_coords[series.ctx[i]])
                      if idx >= 0}
            rows.append((series.name, series.role, kind, coords, s, float(series.time[i]),
                         value))
            if series.role == "arg":
                args[series.name] = value
            elif stepped:
                t = float(series.time[i])
                last_time = t if last_time is None else max(last_time, t)
    if last_time is not None:  # system values: those sampled before the fork point
        rows = [r for r in rows if r[1] != "sys" or r[5] <= last_time]
    rows.sort(key=lambda r: r[5])
    parent = reader.meta
    fork_of = {"run": parent_id, "step": step, "name": parent.get("name"),
               "git": parent.get("git")}
    event = {"event": "fork", "time": time.time(), "parent": parent_id, "step": step}
    child = runs_dir(store_root) / child_id
    child.mkdir(parents=True, exist_ok=True)
    blob = encode_rows(rows, [event])
    tmp = child / ".data.fwl.fork.tmp"
    with open(tmp, "wb") as out:
        out.write(blob)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, child / data_file_name(0, 1))
    summary = read_summary(parent_dir) or {}
    for name, value in (summary.get("args") or {}).items():
        args.setdefault(name, value)
    return {"fork_of": fork_of, "args": args}
