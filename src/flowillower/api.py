"""The module-level API: thin functions acting on the current run.

Each function fetches the current run (starting one implicitly when needed) and
delegates. `fw.debug(True)` turns every call into a no-op.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import nullcontext
from typing import Any

from . import args as _args
from .errors import NoActiveRunError
from .run import Run
from .store import continuation as _resume
from .store.layout import ensure_store, find_store_root, new_run_id

_current: Run | None = None
_debug = False
# Keyword arguments for the implicit run; `init` fills them, `record_all_ranks` too.
_defaults: dict[str, Any] = {}
# Threads logging before any run exists must start one run, not one each.
_start_lock = threading.RLock()
# Watchers `fw.watch` made, with their run: `fw.finish` closes them, so a model watched
# in one run has no hooks left when the next run of the same process starts.
_watchers: list[tuple[Run, Any]] = []


class JobScope:
    """Settings for every run started while one job of a sweep is open (`begin_job`).

    A sweep launcher (e.g. Hydra's) running several jobs in one process opens a scope per
    job: each run the job starts (by `fw.init` or implicitly) gets the scope's tags, its
    args (before the job's own config) and, unless the job names them, its project, name
    and store. `close` finishes the runs the job left open and ends the scope.
    """

    def __init__(self, project: str | None = None, name: str | None = None,
                 tags: Iterable[str] = (), args: Mapping[str, Any] | None = None,
                 dir: str | os.PathLike[str] | None = None) -> None:
        self.project, self.name, self.dir = project, name, dir
        self.tags = list(tags)
        self.args = dict(args or {})
        self.runs: list[Run] = []  # started under this scope, oldest first
        self.closed = False

    def close(self, status: str = "success") -> list[Run]:
        """Finish the scope's runs still open with `status` and end the scope; returns
        the runs the job started."""
        global _scope
        with _start_lock:
            if _scope is self:
                _scope = None
            self.closed = True
        for run in self.runs:
            if run.status is None:
                _close_watchers(run)
                run.finish(status)
        return list(self.runs)


_scope: JobScope | None = None


def begin_job(project: str | None = None, name: str | None = None,
              tags: Iterable[str] = (), args: Mapping[str, Any] | None = None,
              dir: str | os.PathLike[str] | None = None) -> JobScope:
    """Open a `JobScope`: runs started until its `close()` get these settings. A scope
    still open is closed first (its runs finished), so jobs never share a run."""
    global _scope
    with _start_lock:
        previous = _scope
    if previous is not None:
        previous.close()
    scope = JobScope(project, name, tags, args, dir)
    with _start_lock:
        _scope = scope
    return scope


def debug(flag: bool = True) -> None:
    """Turn every flowillower call into a no-op (fitlog's debug switch)."""
    global _debug
    _debug = bool(flag)


def _rank_settings(record_all_ranks: bool) -> tuple[int, bool, str | None]:
    from .system import rank

    this_rank = rank()
    run_id = None
    if record_all_ranks:
        # All ranks must agree on one run id without talking to each other.
        run_id = os.environ.get("FLOWILLOWER_RUN_ID")
        elastic = os.environ.get("TORCHELASTIC_RUN_ID")
        if run_id is None and elastic and elastic != "none":
            run_id = f"dist-{elastic}"
    return this_rank, record_all_ranks, run_id


def init(
    project: str | None = None,
    name: str | None = None,
    config: Any = None,
    tags: Iterable[str] | None = None,
    notes: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    *,
    record_all_ranks: bool = False,
    snapshot: bool = True,
    max_buffer: int | str | None = None,
    system_metrics: float | bool | None = None,
    id: str | None = None,  # noqa: A002 - the name users know from other trackers
    resume: str = "never",
    fork_from: tuple[str, int] | None = None,
) -> Run:
    """Start a run and make it current. Nothing is written until the first logged value.

    Under torch.distributed (or RANK / LOCAL_RANK set) only rank 0 records unless
    `record_all_ranks`; then all ranks write into the run named by $FLOWILLOWER_RUN_ID
    (or the torchelastic run id). `max_buffer` (bytes, or a size like "300MB") bounds
    the values held in memory while the disk cannot be written; past it values are
    dropped and counted in summary.json (`dropped_values`). `system_metrics`: sample CPU,
    memory, disk, network and GPUs under `system/` (True: every 10 s, or the seconds
    between logged means; needs psutil, the `[system]` extra).

    `id` names the run; `resume` says what an existing run of that id means: "never"
    (an error), "allow" (continue it, else start it), "must" (continue it, else an
    error) or "auto" (a script restarted after a crash continues its run, found through
    $FLOWILLOWER_RUN_ID, $SLURM_JOB_ID or an id file keyed by the script and its
    arguments). A continued run writes a new segment; values at steps it logs again
    supersede the earlier ones. `fork_from=(run_id, step)` starts a new run holding
    the parent's values up to `step`, its args, and `fork_of` in run.json.
    """
    global _current
    with _start_lock:
        if _current is not None and _current.status is None:
            _close_watchers(_current)
            _current.finish()
        this_rank, all_ranks, run_id = _rank_settings(record_all_ranks)
        _defaults.update(dict(project=project, dir=dir, record_all_ranks=record_all_ranks))
        scope = _scope
        if scope is not None:  # a sweep's job: its settings unless the call names them
            project, name = project or scope.project, name or scope.name
            dir = dir if dir is not None else scope.dir
            own = list(tags or [])
            tags = own + [t for t in scope.tags if t not in own]
        records = (this_rank == 0 or all_ranks) and not _debug
        cont = _continuation(dir, id, resume, fork_from, records)
        run = Run(project, name, None, tags, notes, dir, snapshot=snapshot, rank=this_rank,
                  record_all_ranks=all_ranks, run_id=cont.run_id or run_id,
                  max_buffer=max_buffer,
                  segment=cont.segment, previous=cont.previous, fork_of=cont.fork_of)
        if cont.fork_of:  # its copied values are on disk: so is the run that holds them
            run.args.update(cont.inherited_args)
            run.ensure_on_disk()
        if cont.id_file is not None and this_rank == 0:
            _resume.remember(cont.id_file, run.id)
        if this_rank != 0 and not all_ranks:
            run.status = "skipped"  # non-zero rank: a silent run that records nothing
        _current = run
        if scope is not None and not _debug:  # fw.debug(True): the job records nothing
            scope.runs.append(run)
    # Under fw.debug(True) nothing is recorded, not even the config: a run left open by a
    # debug job is then finished by the next fw.init without leaving a directory.
    if scope is not None and scope.args and run.status is None and not _debug:
        run.config(scope.args)  # first: the job's own config may refine the same keys
    if config is not None and run.status is None and not _debug:
        run.config(config)
    if system_metrics and run.status is None and not _debug:
        from .sysmetrics import start as sample_system

        sample_system(run, 10.0 if system_metrics is True else float(system_metrics))
    return run


def _continuation(dir: str | os.PathLike[str] | None, run_id: str | None, resume: str,
                  fork_from: tuple[str, int] | None, records: bool) -> _resume.Continuation:
    """What `init` starts: a new run, the next segment of one, or a fork (its parent's
    values copied in first). `records`: False for a process that records nothing."""
    if not records or (fork_from is None and resume == "never" and run_id is None):
        return _resume.Continuation(run_id)  # the common case: no store look-up
    if _defaults.get("record_all_ranks") and (resume != "never" or fork_from is not None):
        raise ValueError("resume and fork_from are not supported with record_all_ranks yet "
                         "(every rank would need the same segment)")
    root = find_store_root(dir)
    if fork_from is None:
        return _resume.resolve(root, run_id, resume)
    if resume != "never":
        raise ValueError("fork_from starts a new run: it cannot be combined with resume")
    parent, step = _resume.parse_fork(fork_from)
    cont = _resume.resolve(root, run_id, "never")
    cont.run_id = cont.run_id or new_run_id()
    ensure_store(root)
    inherited = _resume.write_fork(root, parent, step, cont.run_id)
    cont.segment, cont.fork_of = 2, inherited["fork_of"]
    cont.inherited_args = inherited["args"]
    return cont


def current_run(create: bool = True) -> Run:
    """The current run; with `create`, start one implicitly on first use."""
    if _needs_run(_current):
        if not create:
            raise NoActiveRunError("no active run: call fw.init() first")
        with _start_lock:
            if _needs_run(_current):  # another thread may have just started one
                init(**{k: v for k, v in _defaults.items() if k in ("project", "dir",
                                                                      "record_all_ranks")})
    run = _current
    assert run is not None
    return run


def _needs_run(run: Run | None) -> bool:
    return run is None or (run.status is not None and run.status != "skipped")


def active_run() -> Run | None:
    """The run to record into (starting one implicitly when needed), or None when this
    process must not record (`fw.debug(True)`, a non-recording rank)."""
    if _debug:
        return None
    run = current_run()
    return None if run.status == "skipped" else run


def open_run() -> Run | None:
    """The current run while it is open (not finished); never starts one."""
    run = _current
    return run if run is not None and run.status is None else None


def is_debug() -> bool:
    """Whether `fw.debug(True)` turned every call into a no-op."""
    return _debug


def set_defaults(**fields: Any) -> None:
    """Settings (`project`, `dir`, `record_all_ranks`) for runs started implicitly."""
    unknown = set(fields) - {"project", "dir", "record_all_ranks"}
    if unknown:
        raise TypeError(f"not a run default: {', '.join(sorted(unknown))}")
    _defaults.update(fields)


def end_current_run() -> None:
    """Finish the current run if it is open and forget it: the next call starts a new
    run (fitlog's `set_log_dir(new_log=True)`)."""
    global _current
    with _start_lock:
        if _current is not None and _current.status is None:
            _close_watchers(_current)
            _current.finish()
            _current = None


def log(name: str, value: Any, step: int | None = None) -> Any:
    """Log one value and return it (so it can wrap an expression)."""
    if _debug:
        return value
    run = _current
    if run is None or run.status is not None:  # the common case skips two calls
        run = active_run()
        if run is None:
            return value
    run.log_metrics({name: value}, step)
    return value


def log_metrics(metrics: Mapping[str, Any], step: int | None = None) -> None:
    """Log several values at once, optionally at an explicit step."""
    if _debug:
        return
    run = _current
    if run is None or run.status is not None:
        run = active_run()
        if run is None:
            return
    run.log_metrics(metrics, step)


def arg(name: str, default: Any) -> Any:
    """A hyper-parameter: `--kwargs name=value` cast to the default's type, else default."""
    if _debug:
        return _args.resolve(name, default)
    run = active_run()
    return run.arg(name, default) if run is not None else _args.resolve(name, default)


def config(obj: Any) -> Any:
    """Record a whole config object (dict, Namespace, dataclass, OmegaConf); returns it."""
    run = active_run()
    return run.config(obj) if run is not None else obj


def log_image(name: str, image: Any, step: int | None = None, caption: str | None = None
              ) -> None:
    """Store an image (numpy array, torch tensor, PIL image, figure or path) at a step."""
    run = active_run()
    if run is not None:
        run.log_image(name, image, step, caption)


def log_artifact(name: str, path: str | os.PathLike[str], step: int | None = None) -> None:
    """Copy a file or directory into the run."""
    run = active_run()
    if run is not None:
        run.log_artifact(name, path, step)


def loop(name: str, iterable: Iterable[Any], progress: bool | None = None, *,
         start: int = 0) -> Iterator[Any]:
    """Iterate while keying everything logged inside by this loop's index (from `start`)."""
    run = active_run()
    if run is None:
        return iter(iterable)
    return run.loop(name, iterable, progress, start=start)


def iteration(name: str, index: int):
    """`with fw.iteration("epoch", e):` for a loop the caller drives itself."""
    run = active_run()
    return nullcontext() if run is None else run.iteration(name, index)


def log_model(model: Any, example_input: Any = None, **options: Any) -> dict[str, Any] | None:
    """Record a torch model's module tree and, given an example input, its data-flow graph.

    `example_input` is one tensor or a tuple of positional inputs; options (`kwargs`,
    `name`, `export`) are described in docs/model.md. Returns the graph document.
    """
    run = active_run()
    if run is None:
        return None
    from .model.api import log_model as _log_model

    return _log_model(run, model, example_input, **options)


def watch(model: Any, every: int = 1,
          what: Iterable[str] = ("activations", "gradients", "parameters"), **options: Any):
    """Record activation / gradient / parameter statistics every `every` loop steps."""
    run = active_run()
    if run is None:
        return None
    from .model.api import watch as _watch

    def sink(stats: dict[str, Any], step: int) -> None:
        # Their own role keeps per-module statistics out of the runs table's metrics.
        if run.status is None:  # a run finished without fw.finish (Run.finish) ignores them
            run.log_at_step(stats, step, role="watch")

    options.setdefault("sink", sink)
    watcher = _watch(model, every=every, what=what, run=run, **options)
    with _start_lock:
        # Forget watchers closed, or of runs ended without fw.finish (Run.finish).
        _watchers[:] = [(r, w) for r, w in _watchers if not w.closed and r.status is None
                        ] + [(run, watcher)]
    return watcher


def _close_watchers(run: Run) -> None:
    """Close the watchers `fw.watch` made for `run`: pending statistics land in the run
    and their hooks leave the model before the run ends."""
    with _start_lock:
        mine = [w for r, w in _watchers if r is run]
        _watchers[:] = [(r, w) for r, w in _watchers if r is not run]
    for watcher in mine:
        watcher.close()


def unwatch(model: Any) -> bool:
    """Stop watching `model` (removes every hook flowillower added)."""
    from .model.api import unwatch as _unwatch

    return _unwatch(model)


def finish(status: str = "success", notify: str | None = None) -> None:
    """End the current run (`notify`: a Slack / Discord / Feishu webhook URL)."""
    if _debug or _current is None or _current.status is not None:
        return
    _close_watchers(_current)
    _current.finish(status, notify)


def flush() -> None:
    """Persist everything logged so far right now."""
    if _current is not None and not _debug:
        _current.flush()


__all__ = ["init", "log", "log_metrics", "arg", "config", "log_image", "log_artifact",
           "loop", "iteration", "finish", "flush", "debug", "current_run", "log_model",
           "watch", "unwatch", "active_run", "open_run", "is_debug", "set_defaults",
           "end_current_run", "JobScope", "begin_job"]
