"""The `Run`: validates values, tracks loop context and queues records for the writer.

Nothing touches the disk until the first value that is not a hyper-parameter (or a
successful finish with recorded args), so a script that dies during set-up leaves no
run behind. Any thread may log: each has its own buffer and loop position
(`threadstate`), and the writer drains them all.
The code snapshot and environment are captured in a thread started with the run
(`runinfo.Setup`). The layers above (`hindsight`, `model`, the package facade) use only
the public surface: the calling thread's loop position, loop and step hooks and a loop
control choosing which iterations a loop yields (`loops.LoopSurface`, a base class of
`Run`), `redirect_output`, `ensure_on_disk` and run-creation hooks (`on_run_created`).
This module knows nothing of them: replay mode plugs in from above. Values past the
all-floats fast path are queued by `rows`; summary.json is written by `lifecycle`.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
import warnings
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from . import args as _args
from . import lifecycle
from .errors import FlowillowerError, UnsupportedValueError
from .loops import LoopSurface
from .rows import queue_known, queue_new
from .runhooks import creation_hooks as _creation_hooks
from .runhooks import on_run_created as on_run_created  # its home before runhooks
from .runinfo import Setup, atomic_write_json, default_name, max_buffer_bytes, meta_document
from .store.buffer import BufferSet
from .store.continuation import continuation_fields, data_file_name, set_aside_summary
from .store.latest import owned
from .store.layout import ensure_store, find_store_root, new_run_id, runs_dir
from .store.writer import FrameWriter
from .threadstate import NO_STEP as _NO_STEP
from .threadstate import Definitions, ThreadState, ThreadStates
from .values import check_name, normalize

_now = time.time
_is_float = float.__instancecheck__  # isinstance(v, float) without a per-call lookup


class Run(LoopSurface):
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
        segment: int = 1, previous: Mapping[str, Any] | None = None,
        fork_of: Mapping[str, Any] | None = None,
    ) -> None:
        self.store_root = find_store_root(dir)
        self.id = run_id or new_run_id()
        prev = self._previous = dict(previous or {})  # run.json continued (segment > 1)
        self.segment, self.fork_of = segment, dict(fork_of or prev.get("fork_of") or {})
        self.project = project or prev.get("project") or self.store_root.parent.name
        self.name = name or prev.get("name") or default_name(self.id)
        self.tags, self.notes = list(tags or prev.get("tags") or []), notes or prev.get("notes", "")
        self.created = prev.get("created") or _now()
        # A forked child (e.g. a DataLoader worker) inherits this object; only the process
        # that created the run may finish it.
        self._owner_pid = os.getpid()
        self.rank = rank
        self.status: str | None = None  # set once finished
        self.dir = runs_dir(self.store_root) / self.id
        self._data_file = data_file_name(rank, segment)
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
        # Whether the set-up thread snapshots the code (a creation hook may turn it off).
        self.capture_code = snapshot and rank == 0
        for hook in list(_creation_hooks):
            hook(self)
        self._meta_warned = False
        self._setup = Setup(self.store_root, self.capture_code, self._setup_finished)
        if config is not None:
            self.config(config)

    # -- run.json --------------------------------------------------------------------
    def _setup_finished(self) -> None:
        with self._lock:  # on disk already: complete its run.json now
            if self._writer is not None and self.rank == 0:
                self._complete_meta()

    def _complete_meta(self) -> None:
        """Rewrite run.json with what set-up found; a full disk keeps the first run.json
        (finish tries again) and says so once, instead of failing a thread or finish."""
        try:
            self._write_meta()
        except OSError as exc:
            if not self._meta_warned:
                self._meta_warned = True
                warnings.warn(f"flowillower: could not complete run.json of {self.id}: "
                              f"{exc.strerror or exc}; the run's values are kept", stacklevel=2)

    def _write_meta(self) -> dict[str, Any]:
        fields = {"id": self.id, "project": self.project, "name": self.name,
                  "tags": self.tags, "notes": self.notes, "created": self.created,
                  "rank": self.rank}
        fields.update(continuation_fields(self.segment, self.fork_of, self._previous))
        meta = meta_document(fields, self._setup.extra)
        atomic_write_json(self.dir / "run.json", meta)
        return meta

    def ensure_on_disk(self) -> None:
        """Create the run's directory and start its writer now (normally the first value
        that is not an arg does this); e.g. before writing files into `run.dir`."""
        self._materialize()

    def _materialize(self) -> None:
        with self._lock:
            if self._writer is not None or self.status is not None:
                return
            ensure_store(self.store_root)
            self.dir.mkdir(parents=True, exist_ok=True)
            set_aside_summary(self.dir, self.rank, self.segment, self.event)  # resumed
            meta = self._write_meta() if self.rank == 0 else None
            # max_pending_bytes only when set: the writer's own default reads the
            # environment (and benchmarks swap in writers that predate the bound).
            bound = {} if self._max_buffer is None else {"max_pending_bytes": self._max_buffer}
            self._writer = FrameWriter(self.dir / self._data_file, self._buffers,
                                       self._flush_interval, **bound)
            if meta is not None:  # readers list the run from now on without decoding it
                lifecycle.record_index_row(self, False, meta)
            lifecycle.install(self)

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
        try:  # this thread's buffer and loop position (inline: the hot path)
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
            queue_known(st, kids, metrics, step, t)
        else:
            queue_new(self._defs, self._signatures[role], st, metrics, step, t, role)
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

    def log_at_step(self, values: Mapping[str, Any], step: int, *, role: str = "metric"
                    ) -> None:
        """Log values that belong to an earlier step of the innermost loop (a step hook
        reporting after the fact), keyed by that step's loop coordinates."""
        st = self.thread_state()
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
        st = self.thread_state()
        saved = (st.coords, st.ctx, st.step)
        st.coords, st.ctx, st.step = (), 0, 0
        try:
            self.log_metrics(values, role="arg")
        finally:
            st.coords, st.ctx, st.step = saved
        self.args.update({name: owned(value) for name, value in values.items()})  # copies

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
        st = self.thread_state()
        step = st.step if step is None else int(step)
        kid = self._defs.key(check_name(name), "metric")
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
        st = self.thread_state()
        step = st.step if step is None else int(step)
        kid = self._defs.key(check_name(name), "metric")
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

    # -- the surface `loops`, `hindsight` and `model` use (and `loops.LoopSurface`) --
    def thread_state(self) -> ThreadState:
        """The calling thread's buffer and loop position (made on its first call)."""
        try:
            return self._local.state
        except AttributeError:
            return self._threads.create()

    def context_id(self, coords: tuple) -> int:
        """The id of loop coordinates `((loop, index), ...)` (defined on first use)."""
        return self._defs.context(coords)

    def redirect_output(self, store_root: str | os.PathLike[str]) -> None:
        """Write this run into the store at `store_root` instead (a replay worker's
        scratch store). Only before anything is on disk."""
        with self._lock:
            if self._writer is not None:
                raise FlowillowerError(f"run {self.id} is already on disk in {self.dir}")
            self.store_root = Path(store_root)
            self.dir = runs_dir(self.store_root) / self.id

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
                self._complete_meta()  # complete meta even if setup finished late
            summary = lifecycle.write_summary(self, writer, status, end, error,
                                              self._defs.names(), self._defs.roles)
            if self.rank == 0:  # after the summary: the row is checked against it
                lifecycle.record_index_row(self, True, writer=writer, summary=summary)
        lifecycle.finish_waits()  # e.g. the alerts raised so far go out (at most 5 s)
        if summary["unused_kwargs"]:
            warnings.warn("flowillower: --kwargs given but never read by fw.arg(): "
                          + ", ".join(summary["unused_kwargs"]), stacklevel=2)
        if notify:
            lifecycle.post_webhook(notify, self, summary)

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

