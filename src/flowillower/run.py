"""The `Run`: validates values, tracks loop context and queues records for the writer.

Nothing touches the disk until the first value that is not a hyper-parameter (or a
successful finish with recorded args), so a script that dies during set-up leaves no
run behind. Any thread may log: each has its own buffer and loop position
(`threadstate`), and the writer drains them all.
The code snapshot and environment are captured in a thread started with the run
(`runinfo.Setup`).
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import warnings
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import args as _args
from . import lifecycle
from .errors import FlowillowerError, UnsupportedValueError
from .runinfo import Setup, atomic_write_json, default_name, max_buffer_bytes, meta_document
from .store.buffer import BufferSet
from .store.layout import (
    ensure_store,
    find_store_root,
    new_run_id,
    runs_dir,
)
from .store.writer import FrameWriter
from .threadstate import NO_STEP as _NO_STEP
from .threadstate import Definitions, LoopControl, ThreadState, ThreadStates
from .values import FLOAT, INT, check_name, normalize

_now = time.time
_is_float = float.__instancecheck__  # isinstance(v, float) without a per-call lookup
REPLAY_ENV = "FLOWILLOWER_REPLAY"  # path of a replay worker's plan (set by `fw.replay`)


def _append_call(buf: Any, ctx: int, step: int, t: float, count: int) -> None:
    buf.c_ctx.append(ctx)
    buf.c_step.append(step)
    buf.c_time.append(t)
    buf.c_count.append(count)  # last: marks the call complete for the writer


class StepHook:
    """Handle returned by `Run.on_step`; `.remove()` unregisters the callback."""

    def __init__(self, hooks: list, callback: Callable[[int], None]) -> None:
        self._hooks, self.callback = hooks, callback

    def remove(self) -> None:
        if self.callback in self._hooks:
            self._hooks.remove(self.callback)


class Run:
    """One tracked execution of a script. Usually reached through `fw.*` functions."""

    def __init__(
        self,
        project: str | None = None,
        name: str | None = None,
        config: Any = None,
        tags: Iterable[str] | None = None,
        notes: str | None = None,
        dir: str | os.PathLike[str] | None = None,
        *,
        snapshot: bool = True,
        rank: int = 0,
        record_all_ranks: bool = False,
        run_id: str | None = None,
        flush_interval: float = 0.5,
        max_buffer: int | str | None = None,
    ) -> None:
        # Inside a hindsight replay worker (see flowillower.hindsight.session) the run
        # writes to the worker's scratch store and fw.loop follows the replay plan.
        replay_plan = os.environ.get(REPLAY_ENV) if rank == 0 else None
        if replay_plan:
            snapshot = False  # the code is an old snapshot already: nothing to capture
        self.store_root = find_store_root(dir)
        self.id = run_id or new_run_id()
        self.project = project or self.store_root.parent.name
        self.name = name or default_name(self.id)
        self.tags = list(tags or [])
        self.notes = notes or ""
        self.created = _now()
        # A forked child (e.g. a DataLoader worker) inherits this object; only the process
        # that created the run may finish it.
        self._owner_pid = os.getpid()
        self.rank = rank
        self.status: str | None = None  # set once finished
        self.dir = runs_dir(self.store_root) / self.id
        self._data_file = "data.fwl" if rank == 0 else f"data.rank{rank}.fwl"
        self._record_all_ranks = record_all_ranks
        self._flush_interval = flush_interval
        # Bytes of values the writer may hold while it cannot write (None: its default).
        self._max_buffer = max_buffer_bytes(max_buffer)
        # Any thread may log: each has its own buffer and loop position (ThreadState,
        # found through a threading.local on the hot path); the writer drains them all.
        self._buffers = BufferSet()
        self._threads = ThreadStates(self._buffers)
        self._local = self._threads.local
        self._writer: FrameWriter | None = None
        self._lock = threading.RLock()  # materialize / finish
        # Shared by all threads (key and context ids, counters), new ones under a lock.
        self._defs = Definitions(self._buffers)
        # Hot path: tuple of names of a log call -> array of key ids, per role.
        self._signatures: dict[str, dict[tuple, array]] = {
            "metric": {}, "arg": {}, "sys": {}, "watch": {}}
        self._recorded_user_values = False  # before the run is on disk: args were recorded
        self.args: dict[str, Any] = {}
        self._setup = Setup(self.store_root, snapshot and rank == 0, self._setup_finished)
        if replay_plan:
            from .hindsight.session import attach

            attach(self, replay_plan)
        if config is not None:
            self.config(config)

    # -- run.json --------------------------------------------------------------------
    def _setup_finished(self) -> None:
        with self._lock:  # on disk already: complete its run.json now
            if self._writer is not None and self.rank == 0:
                self._write_meta()

    def _write_meta(self) -> None:
        fields = {"id": self.id, "project": self.project, "name": self.name,
                  "tags": self.tags, "notes": self.notes, "created": self.created,
                  "rank": self.rank}
        atomic_write_json(self.dir / "run.json", meta_document(fields, self._setup.extra))

    def _materialize(self) -> None:
        with self._lock:
            if self._writer is not None or self.status is not None:
                return
            ensure_store(self.store_root)
            self.dir.mkdir(parents=True, exist_ok=True)
            if self.rank == 0:
                self._write_meta()
            # max_pending_bytes only when set: the writer's own default reads the
            # environment (and benchmarks swap in writers that predate the bound).
            bound = {} if self._max_buffer is None else {"max_pending_bytes": self._max_buffer}
            self._writer = FrameWriter(self.dir / self._data_file, self._buffers,
                                       self._flush_interval, **bound)
            lifecycle.install(self)

    # -- keys and contexts -----------------------------------------------------------
    def _key(self, name: str, role: str) -> int:
        return self._defs.key(name, role)

    def _enter_ctx(self, st: ThreadState, coords: tuple) -> int:
        """Make `coords` the calling thread's loop context; returns its id."""
        st.coords, st.ctx = coords, self._defs.context(coords)
        return st.ctx

    def _state(self) -> ThreadState:
        """The calling thread's logging state (made on its first call)."""
        try:
            return self._local.state
        except AttributeError:
            return self._threads.create()

    # The calling thread's loop position, for hindsight checkpoints (save / restore).
    @property
    def _step(self) -> int:
        return self._state().step

    @_step.setter
    def _step(self, value: int) -> None:
        self._state().step = value

    @property
    def _depth(self) -> int:
        return self._state().depth

    @property
    def _loop_totals(self) -> dict[tuple[str, ...], int]:
        return self._state().loop_totals

    @_loop_totals.setter
    def _loop_totals(self, value: dict[tuple[str, ...], int]) -> None:
        self._state().loop_totals = value

    @property
    def _loop_control(self) -> LoopControl | None:
        return self._state().loop_control

    @_loop_control.setter
    def _loop_control(self, control: LoopControl | None) -> None:
        self._state().loop_control = control

    # -- logging ---------------------------------------------------------------------
    def _check_open(self) -> None:
        if self.status is not None:
            raise FlowillowerError(
                f"run {self.id} is already finished ({self.status}); start a new one with "
                "fw.init()")

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None,
                    *, role: str = "metric") -> None:
        """Log several values at once, optionally at an explicit `step`."""
        if self.status is not None:
            self._check_open()
        t = _now()
        try:  # this thread's buffer and loop position
            st = self._local.state
        except AttributeError:
            st = self._threads.create()
        if step is None:
            step = st.step
        elif type(step) is not int:
            step = int(step)
        kids = self._signatures[role].get(tuple(metrics))
        values = metrics.values()
        # Hot path: known names, all floats, a step: two extends and a call row (its
        # count last: see RecordBuffer) in this thread's own buffer.
        if kids is not None and step != _NO_STEP and all(map(_is_float, values)):
            buf = st.buf
            buf.f_key.extend(kids)
            buf.f_val.extend(values)
            buf.c_ctx.append(st.ctx)
            buf.c_step.append(step)
            buf.c_time.append(t)
            buf.c_count.append(len(kids))
        elif kids is not None and step != _NO_STEP:
            self._log_known(st, kids, metrics, step, t)
        else:
            self._log_slow(st, metrics, step, t, role)
        if self._writer is None:  # until the run is on disk
            self._first_values(role)

    def _first_values(self, role: str) -> None:
        """Any value but an arg puts the run on disk (timings and `fw.watch` statistics
        too: a kill -9 then loses ~1 s at most); args alone wait for a successful finish,
        so a script dying in set-up leaves nothing behind."""
        if role != "sys":
            self._recorded_user_values = True
        if role != "arg":
            self._materialize()

    def _log_known(self, st: ThreadState, kids: array, metrics: Mapping[str, Any], step: int,
                   t: float) -> None:
        """Known names at a step, not all floats (e.g. `fw.watch` statistics with their
        histograms): floats go straight in, only the others are normalized, all of them
        before anything is queued (all or nothing, as in `_log_slow`)."""
        f_keys: list[int] = []
        f_vals: list[float] = []
        others = []
        for kid, (name, value) in zip(kids, metrics.items()):
            if _is_float(value):
                f_keys.append(kid)
                f_vals.append(value)
                continue
            kind, norm = normalize(name, value)  # raises before anything is queued
            if kind == FLOAT:
                f_keys.append(kid)
                f_vals.append(norm)
            else:
                others.append((kid, kind, norm))
        buf, ctx = st.buf, st.ctx
        for kid, kind, norm in others:
            (buf.ints if kind == INT else buf.objects).append((kid, ctx, step, t, norm))
        if f_keys:
            buf.f_key.extend(f_keys)
            buf.f_val.extend(f_vals)
            _append_call(buf, ctx, step, t, len(f_keys))

    def _log_slow(self, st: ThreadState, metrics: Mapping[str, Any], step: int, t: float,
                  role: str) -> None:
        """Validate every value first, then queue them: all or nothing for the call."""
        ctx = st.ctx
        rows = []
        for name, value in metrics.items():
            kind, norm = normalize(name, value)  # raises before anything is queued
            rows.append((name, kind, norm))
        kids = []
        buf = st.buf
        shared_floats = 0
        for name, kind, norm in rows:
            kid = self._key(name, role)
            kids.append(kid)
            s = step if step != _NO_STEP else self._defs.next_count(kid)
            if kind == FLOAT:
                buf.f_key.append(kid)
                buf.f_val.append(norm)
                if step == _NO_STEP:  # each value has its own step: its own call row
                    _append_call(buf, ctx, s, t, 1)
                else:
                    shared_floats += 1
            elif kind == INT:
                buf.ints.append((kid, ctx, s, t, norm))
            else:
                buf.objects.append((kid, ctx, s, t, norm))
        if shared_floats:  # their (key, value) rows are contiguous: one call row
            _append_call(buf, ctx, step, t, shared_floats)
        signatures = self._signatures[role]
        if len(signatures) > 4096:  # a script that logs ever-new name sets
            signatures.clear()
        signatures[tuple(metrics)] = array("I", kids)

    def log_at_step(self, values: Mapping[str, Any], step: int, *, role: str = "metric"
                    ) -> None:
        """Log values that belong to an earlier step of the innermost loop (a step hook
        reporting after the fact), keyed by that step's loop coordinates."""
        st = self._state()
        ctx = st.step_contexts.get(step)
        if ctx is None:
            self.log_metrics(values, step, role=role)
            return
        saved, st.ctx = st.ctx, ctx
        try:
            self.log_metrics(values, step, role=role)
        finally:
            st.ctx = saved

    def log(self, name: str, value: Any, step: int | None = None) -> Any:
        """Log one value and return it unchanged."""
        self.log_metrics({name: value}, step)
        return value

    def arg(self, name: str, default: Any) -> Any:
        """A hyper-parameter: the command-line value (cast to the default's type) or default."""
        value = _args.resolve(name, default)
        self.record_args({name: value})
        return value

    def record_args(self, values: Mapping[str, Any]) -> None:
        """Record hyper-parameters (run level, outside any loop context)."""
        for name, value in values.items():
            normalize(name, value)  # fail before anything is recorded
        st = self._state()
        saved = (st.coords, st.ctx, st.step)
        st.coords, st.ctx, st.step = (), 0, 0
        try:
            self.log_metrics(values, role="arg")
        finally:
            st.coords, st.ctx, st.step = saved
        self.args.update(values)

    def config(self, obj: Any) -> Any:
        """Record a whole config (dict, Namespace, dataclass, OmegaConf); returns it."""
        flat = _args.flatten_config(obj)
        bad = {}
        for key, value in flat.items():
            try:
                normalize(key, value)
            except UnsupportedValueError:
                bad[key] = repr(value)  # keep a readable trace instead of failing the run
        self.record_args({k: (bad[k] if k in bad else v) for k, v in flat.items()})
        return obj

    def log_image(self, name: str, image: Any, step: int | None = None,
                  caption: str | None = None) -> None:
        """Store an image (array, PIL image, matplotlib figure, encoded bytes or file path)."""
        from .store.media import save_image

        self._check_open()
        self._materialize()
        st = self._state()
        step = st.step if step is None else int(step)
        kid = self._key(check_name(name), "metric")
        step = self._defs.media_step(kid, step)
        ref = save_image(self.dir, name, image, step)
        if caption:
            ref["caption"] = caption
        st.buf.objects.append((kid, st.ctx, step, _now(), ref))
        self._recorded_user_values = True

    def log_artifact(self, name: str, path: str | os.PathLike[str],
                     step: int | None = None) -> None:
        """Copy a file or directory into the run, addressed by name and step."""
        from .store.media import save_artifact

        self._check_open()
        self._materialize()
        st = self._state()
        step = st.step if step is None else int(step)
        kid = self._key(check_name(name), "metric")
        step = self._defs.media_step(kid, step)
        ref = save_artifact(self.dir, name, Path(path), step)
        st.buf.objects.append((kid, st.ctx, step, _now(), ref))
        self._recorded_user_values = True

    def write_json(self, relpath: str, obj: Any) -> Path:
        """Store a JSON document inside the run directory (e.g. a model graph)."""
        self._materialize()
        path = self.dir / relpath
        if self.dir.resolve() not in path.resolve().parents:
            raise FlowillowerError(f"{relpath!r} points outside the run directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, obj)
        return path

    def event(self, kind: str, **fields: Any) -> None:
        """Record a lifecycle event (loop start/end, notes for the planner, ...)."""
        self._buffers.events.append({"event": kind, "time": _now(), **fields})

    # -- loops -----------------------------------------------------------------------
    def on_step(self, callback: Callable[[int], None]) -> StepHook:
        """Call `callback(global_step)` at the start of each innermost loop iteration of
        the calling thread's loops."""
        hooks = self._state().step_hooks
        hooks.append(callback)
        return StepHook(hooks, callback)

    def on_loop(self, callback: Callable[[str, str, int, int], None]) -> StepHook:
        """Call `callback(event, loop_name, depth, index)` as loops progress.

        `event` is "loop_start" (index 0), "iteration" (index of the iteration starting),
        "loop_end" (the loop ran out; index = iterations run) or "loop_break" (left by
        `break` or an exception). Depth 1 is the outermost loop. Only the calling
        thread's loops are reported.
        """
        hooks = self._state().loop_hooks
        hooks.append(callback)
        return StepHook(hooks, callback)

    def loop(self, name: str, iterable: Iterable[Any], progress: bool | None = None
             ) -> Iterator[Any]:
        """Iterate `iterable`, keying everything logged inside by this loop's index."""
        from .loops import run_loop

        return run_loop(self, name, iterable, progress)

    @contextmanager
    def iteration(self, name: str, index: int):
        """Context manager for one iteration of a loop the caller drives itself."""
        from .loops import iteration_scope

        with iteration_scope(self, name, index):
            yield

    # -- ending ----------------------------------------------------------------------
    def flush(self) -> None:
        """Persist everything queued so far (normally the writer does this every 0.5 s)."""
        if self._writer is not None:
            self._writer.flush(sync=True)

    def finish(self, status: str = "success", notify: str | None = None,
               *, error: str | None = None) -> None:
        """End the run: flush, fsync, write summary.json; optionally post to a webhook."""
        if status not in ("success", "failed", "killed"):
            raise ValueError(f"status must be 'success', 'failed' or 'killed', not {status!r}")
        if os.getpid() != self._owner_pid:
            return  # a forked child dying must not end its parent's run
        with self._lock:
            if self.status is not None:
                return
            if self._writer is None:
                if status != "success" or not self._recorded_user_values:
                    self.status = status  # nothing worth keeping: leave no directory
                    return
                self._materialize()
            self.status = status
            end = _now()
            self.event("finish", status=status, error=error)
            writer = self._writer
            assert writer is not None
            writer.close()
            lifecycle.forget(self)
            # run.json is complete when finish returns (code snapshot included): this
            # waits only when the run was shorter than its set-up.
            self._setup.done.wait(timeout=10)
            if self.rank == 0:
                self._write_meta()  # complete meta even if setup finished late
            names = self._defs.names()
            roles = self._defs.roles
            summary = {
                "id": self.id, "status": status, "created": self.created, "ended": end,
                "duration": end - self.created, "error": error,
                "last": {names[k]: v for k, v in writer.last.items()
                         if k in names and roles.get(k) == "metric"},
                "args": dict(self.args),
                "unused_kwargs": sorted(set(_args.cli_kwargs) - set(self.args)),
            }
            dropped = getattr(writer, "dropped", 0)
            if dropped:  # values past the writer's memory bound (max_buffer)
                summary["dropped_values"] = dropped
            summary_name = "summary.json" if self.rank == 0 else f"summary.rank{self.rank}.json"
            atomic_write_json(self.dir / summary_name, summary)
            if writer.error is not None:
                warnings.warn(f"flowillower: the writer hit an error: {writer.error!r}",
                              stacklevel=2)
        if summary["unused_kwargs"]:
            warnings.warn("flowillower: --kwargs given but never read by fw.arg(): "
                          + ", ".join(summary["unused_kwargs"]), stacklevel=2)
        if notify:
            from .lifecycle import post_webhook

            post_webhook(notify, self, summary)

    def fail(self, exc: BaseException) -> None:
        """Finish as `failed` (or `killed` for KeyboardInterrupt) with the traceback."""
        status = "killed" if isinstance(exc, KeyboardInterrupt) else "failed"
        text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        self.finish(status, error=text)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None:
            self.fail(exc)
        else:
            self.finish()

