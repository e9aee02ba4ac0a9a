"""Planning a replay: where the statements sit, what each run must re-execute, how long.

`analyze` reads the (transplanted) old script and classifies every statement logging a
wanted name:

* `pre`   -- before the outer loop: only the set-up has to run;
* `outer` -- in the outer loop body, outside inner loops: inner loops can be skipped by
  restoring checkpoints, unless the statement reads a value computed inside an inner loop
  (then the inner loops run) or carried over from earlier iterations (then the replay
  runs the iterations in order from the first one);
* `inner` -- inside an inner loop: the iterations are re-executed from checkpoints;
* `post`  -- after the loops: the state recorded when the loop ended is restored.

The value-flow check is a conservative taint analysis over the outer loop body: names
assigned or mutated inside inner loops are "inner", names read before being assigned in
the body (or mutated in it) are "carried"; registered checkpoint objects are restored and
never tainted.

`plan_run` turns that and the run's recorded timings and checkpoints into worker tasks;
`schedule` splits outer iterations among workers (longest first) and estimates the time.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ckpt_store import CheckpointStore
from .transplant import (
    _COMPOUND,
    _containers,
    fw_aliases,
    logged_names,
    loop_name,
    names_bound,
    names_read,
    scope_bindings,
    walk_statements,
)

_RANK = {"pre": 0, "post": 1, "outer": 2, "inner": 3, "unknown": 4}
# Cost model constants (seconds), calibrated on a 2-core CPU box.
PROCESS_EXIT_S = 0.15  # finishing the run and leaving the interpreter
RESTORE_FIXED_S = 0.002
LOAD_BYTES_PER_S = 400e6
SPLIT_GAIN = 0.85  # split a task among workers only if that cuts the estimate by 15%


@dataclass
class StatementInfo:
    """One statement logging wanted names, as seen in the code that will run."""

    names: list[str]
    line: int
    place: str  # pre | outer | inner | post | unknown
    needs: set[str] = field(default_factory=set)  # inner | carried | loop
    why: str = ""


# -- static analysis -----------------------------------------------------------------------------


def _registered_names(tree: ast.AST) -> set[str]:
    """Variables handed to `fw.checkpointing(...)`: the replay restores them in place."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname == "checkpointing":
                for kw in node.keywords:
                    if kw.arg and isinstance(kw.value, ast.Name):
                        found.add(kw.value.id)
    return found


def _functions_with_loops(tree: ast.AST) -> set[str]:
    """Names of functions that (directly or through calls) run an fw.loop."""
    defs = {n.name: n for n in ast.walk(tree)
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    direct = {name for name, node in defs.items()
              if any(loop_name(s) for s in ast.walk(node))}
    changed = True
    while changed:
        changed = False
        for name, node in defs.items():
            if name in direct:
                continue
            if _called_names(node) & direct:
                direct.add(name)
                changed = True
    return direct


def _called_names(node: ast.AST) -> set[str]:
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name):
                out.add(sub.func.id)
            elif isinstance(sub.func, ast.Attribute):
                out.add(sub.func.attr)
    return out


def _mutated(node: ast.AST) -> set[str]:
    """Names whose objects a statement may change in place (method calls, item stores)."""
    out = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            base = sub.func.value
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                out.add(base.id)
        elif isinstance(sub, (ast.Subscript, ast.Attribute)) and isinstance(
                sub.ctx, (ast.Store, ast.Del)):
            base = sub.value
            while isinstance(base, (ast.Attribute, ast.Subscript)):
                base = base.value
            if isinstance(base, ast.Name):
                out.add(base.id)
    return out


@dataclass
class _Event:
    kind: str  # plain | inner
    node: ast.AST
    reads: set[str]
    stores: set[str]
    mutates: set[str]
    aug: bool = False


def _header_reads(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return names_read(stmt.iter)
    if isinstance(stmt, (ast.While, ast.If)):
        return names_read(stmt.test)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return set().union(*(names_read(i.context_expr) for i in stmt.items))
    return set()


def _header_stores(stmt: ast.stmt) -> set[str]:
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return names_bound(stmt.target)
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return set().union(*(names_bound(i.optional_vars) for i in stmt.items
                             if i.optional_vars is not None))
    return set()


def _linearize(stmts: list[ast.stmt], loop_funcs: set[str], keep_open: ast.AST | None
               ) -> list[_Event]:
    """Statements in execution order; inner fw.loops (and calls running one) as one event,
    except the one holding `keep_open` (the statement analysed), which stays open."""
    events: list[_Event] = []
    for stmt in stmts:
        contains_target = keep_open is not None and any(n is keep_open for n in ast.walk(stmt))
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if loop_name(stmt) is not None and not contains_target:
            inside = scope_bindings(stmt)  # names the loop defines for itself
            events.append(_Event("inner", stmt, names_read(stmt) - inside, inside,
                                 _mutated(stmt) - inside))
            continue
        if not isinstance(stmt, _COMPOUND):
            calls_loop = bool(_called_names(stmt) & loop_funcs)
            args = {a.id for c in ast.walk(stmt) if isinstance(c, ast.Call)
                    for a in c.args if isinstance(a, ast.Name)} if calls_loop else set()
            events.append(_Event("inner" if calls_loop else "plain", stmt, names_read(stmt),
                                 scope_bindings(stmt), _mutated(stmt) | args,
                                 isinstance(stmt, ast.AugAssign)))
            continue
        events.append(_Event("plain", stmt, _header_reads(stmt), _header_stores(stmt), set()))
        for block in ("body", "orelse", "finalbody"):
            events += _linearize(getattr(stmt, block, []) or [], loop_funcs, keep_open)
        for handler in getattr(stmt, "handlers", []) or []:
            events += _linearize(handler.body, loop_funcs, keep_open)
    return events


def _taint(events: list[_Event], target: ast.AST, initial: dict[str, set[str]],
           excluded: set[str]) -> set[str]:
    """Sources ('inner', 'carried', 'loop') of the values `target` reads."""
    tainted = {k: set(v) for k, v in initial.items()}
    for ev in events:
        if ev.node is target:
            reads = names_read(target)
            return set().union(*(tainted.get(n, set()) for n in reads))
        src = set().union(*(tainted.get(n, set()) for n in ev.reads))
        if ev.kind == "inner":
            src = src | {"inner"}
        for name in ev.stores - excluded:
            if src:
                tainted[name] = src | (tainted.get(name, set()) if ev.aug else set())
            elif not ev.aug:
                tainted.pop(name, None)
        for name in ev.mutates - excluded:
            if src:
                tainted[name] = tainted.get(name, set()) | src
    return set()


def _carried(events: list[_Event], excluded: set[str], targets: set[str]) -> set[str]:
    """Names whose value at an iteration's start depends on earlier iterations."""
    assigned_anywhere = set().union(*(e.stores for e in events)) if events else set()
    seen: set[str] = set(targets)
    carried = set()
    for ev in events:
        carried |= (ev.reads - seen) & assigned_anywhere
        if ev.kind == "inner":
            carried |= ev.mutates  # objects changed by inner loops
        seen |= ev.stores
        carried |= ev.mutates
    return carried - excluded


def analyze(source: str, names: list[str], outer: str | None) -> list[StatementInfo]:
    """Classify each statement of `source` that logs one of `names` (see module doc)."""
    tree = ast.parse(source)
    aliases = fw_aliases(tree)
    registered = _registered_names(tree)
    loop_funcs = _functions_with_loops(tree)
    module_names = set(aliases[0]) | aliases[1]
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef,
                             ast.ClassDef)):
            module_names |= names_bound(stmt, descend=False)
    excluded = registered | module_names
    located = list(walk_statements(tree.body))
    outer_for = None
    outer_loc = None
    for stmt, loc in located:
        if outer is not None and loop_name(stmt) == outer:
            outer_for, outer_loc = stmt, loc
            break
    infos = []
    for stmt, loc in located:
        if isinstance(stmt, _COMPOUND):
            continue
        logged = [n for n in logged_names(stmt, aliases) if n in names]
        if not logged:
            continue
        info = StatementInfo(logged, stmt.lineno, _place(stmt, loc, located, outer, outer_for,
                                                         outer_loc, tree))
        if outer_for is not None and info.place in ("outer", "inner") and any(
                c is outer_for for c, _f, _k in loc.chain):
            events = _linearize(outer_for.body, loop_funcs, stmt)
            targets = names_bound(outer_for.target)
            carried = _carried(events, excluded, targets)
            info.needs = _taint(events, stmt, {n: {"carried"} for n in carried}, excluded)
        elif outer_for is not None and info.place == "post" and outer_loc is not None:
            after = _after(outer_for, outer_loc, tree)
            events = _linearize(after, loop_funcs, stmt)
            in_loop = (scope_bindings(outer_for) | _mutated(outer_for)) - excluded
            if _taint(events, stmt, {n: {"loop"} for n in in_loop}, excluded):
                info.needs = {"loop"}
        if info.place == "inner":
            info.needs.add("inner")
        if info.place == "unknown":
            info.needs.add("loop")
        info.why = _why(info)
        infos.append(info)
    return infos


def _after(outer_for: ast.stmt, outer_loc: Any, tree: ast.Module) -> list[ast.stmt]:
    """Statements that run after the outer loop in its scope, in order (the rest of its
    block, then the rest of each enclosing block up to the function or module)."""
    out = list(outer_loc.block[outer_loc.index + 1:])
    for container, compound in reversed(_containers(tree, outer_loc.chain)):
        if isinstance(compound, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            break
        index = next(k for k, s in enumerate(container) if s is compound)
        out += container[index + 1:]
    return out


def _why(info: StatementInfo) -> str:
    if "loop" in info.needs:
        return "reads values computed in the loop: the loop is re-executed"
    if info.place == "inner":
        return "inside an inner loop: iterations re-executed"
    if "inner" in info.needs and "carried" in info.needs:
        return "reads values built up by inner loops: re-executed in order"
    if "inner" in info.needs:
        return "reads values computed in the inner loop: inner loops re-executed"
    if "carried" in info.needs:
        return "reads values carried across iterations: iterations replayed in order"
    return ""


def _function_of(chain: list) -> ast.AST | None:
    return next((c for c, _f, _k in reversed(chain)
                 if isinstance(c, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def _header_nodes(stmt: ast.stmt) -> list[ast.AST]:
    if not isinstance(stmt, _COMPOUND):
        return [stmt]
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        return [stmt.iter]
    if isinstance(stmt, (ast.While, ast.If)):
        return [stmt.test]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [i.context_expr for i in stmt.items]
    return []


def _call_sites(name: str, located: list) -> list:
    return [(s, loc) for s, loc in located
            if any(name in _called_names(n) for n in _header_nodes(s))]


def _place(stmt: ast.stmt, loc: Any, located: list, outer: str | None, outer_for: Any,
           outer_loc: Any, tree: ast.Module, depth: int = 0) -> str:
    """pre / outer / inner / post / unknown for a statement (following helper calls)."""
    if outer is None or outer_for is None:
        return "pre"  # no recorded loop: a plain re-run covers it
    loops = [loop_name(c) for c, _f, _k in loc.chain if loop_name(c) is not None]
    if outer in loops:
        return "inner" if len(loops) > loops.index(outer) + 1 else "outer"
    func = _function_of(loc.chain)
    outer_func = _function_of(outer_loc.chain)
    if func is outer_func:  # same scope: before or after the loop
        return "pre" if stmt.lineno < outer_for.lineno else "post"
    if depth > 4:
        return "unknown"
    if func is None:
        # Module level, the loop inside a function: before or after its first call.
        calls = [s.lineno for s, sloc in _call_sites(outer_func.name, located)
                 if _function_of(sloc.chain) is None] if outer_func is not None else []
        if not calls:
            return "unknown"
        return "pre" if stmt.lineno < min(calls) else "post"
    # Inside a helper function: where is it called from?
    places = []
    for site, site_loc in _call_sites(func.name, located):
        place = _place(site, site_loc, located, outer, outer_for, outer_loc, tree, depth + 1)
        if place == "outer" and loops:
            place = "inner"
        places.append(place)
    if not places:
        return "unknown"
    return max(places, key=lambda p: _RANK[p])


# -- runs ------------------------------------------------------------------------------------------


@dataclass
class RunInfo:
    """What the planner needs to know about a past run."""

    run_id: str
    run_dir: Path
    meta: dict[str, Any]
    summary: dict[str, Any] | None
    status: str
    args: dict[str, Any]
    outer: str | None
    completed: int  # outer iterations that finished
    loop_ended: bool
    iter_times: list[float]
    inner_times: list[float]
    setup_s: float
    teardown_s: float
    store: CheckpointStore
    present: set[str]  # value names the run already has
    # Checkpoint files this machine has no record of writing (never loaded), and files
    # whose size differs from what it wrote (replay refuses the run).
    unrecorded: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)


def _outer_from_events(events: list[dict[str, Any]]) -> str | None:
    for ev in events:
        if ev.get("event") == "loop_start" and ev.get("depth") == 1:
            return ev.get("loop")
    return None


def load_run_info(run_dir: Path) -> RunInfo:
    """Read a run's metadata, args, loop timings and checkpoint manifest."""
    from ..store.reader import RunReader

    reader = RunReader(run_dir)
    data = reader.load()
    meta = reader.meta
    summary = reader.summary
    store = CheckpointStore(run_dir)
    unrecorded, changed = store.keep_recorded()
    outer = store.meta["outer"] if store.exists else _outer_from_events(data.events)
    args = {name: s.last() for name, s in data.series.items() if s.role == "arg"}
    present = {name for name, s in data.series.items() if s.role == "metric"}
    iter_times: list[float] = []
    inner_times: list[float] = []
    if store.exists and store.iters:
        count = 0
        while count in store.iters:
            count += 1
        iter_times = [store.iters[i]["t"] for i in range(count)]
        inner_times = [store.iters[i]["inner"] for i in range(count)]
    elif outer is not None and f"time/{outer}" in data.series:
        series = data.series[f"time/{outer}"]
        col = data.loop_names.index(outer)
        coords = data.ctx_coords[series.ctx]
        by_index = {int(c[col]): float(v) for c, v in zip(coords, series.values)
                    if c[col] >= 0 and (c >= 0).sum() == 1}
        count = 0
        while count in by_index:
            count += 1
        iter_times = [by_index[i] for i in range(count)]
        inner_times = [0.0] * count
    loop_start = loop_end = None
    for ev in data.events:
        if ev.get("loop") == outer and ev.get("depth") == 1:
            if ev.get("event") == "loop_start" and loop_start is None:
                loop_start = ev.get("time")
            elif ev.get("event") == "loop_end" and loop_end is None:
                loop_end = ev.get("time")
    setup = store.meta.get("setup_s") if store.exists else None
    if setup is None:
        created = meta.get("created") or (loop_start or 0.0)
        startup = 1.5 if "torch" in (meta.get("packages") or {}) else 0.3
        setup = max(0.0, (loop_start or created) - created) + startup
    ended = (summary or {}).get("ended")
    teardown = max(0.0, ended - loop_end) if ended and loop_end else 0.0
    loop_ended = (store.ended is not None) if store.exists else (
        loop_end is not None and bool(summary and summary.get("status") == "success"))
    if store.exists and store.ended is not None:
        iter_times = iter_times[:store.ended]
    return RunInfo(reader.id, Path(run_dir), meta, summary, reader.status, args, outer,
                   len(iter_times), loop_ended, iter_times, inner_times, float(setup),
                   float(teardown), store, present, unrecorded, changed)


# -- tasks and the schedule ----------------------------------------------------------------------


@dataclass
class TaskPlan:
    """One worker process: run outer iterations [first, stop), keep values from emit_from."""

    run_id: str
    first: int
    stop: int
    emit_from: int
    skip: list[int]
    restore_first: bool
    post_loop: bool
    restore_final: bool
    emit_run_level: bool
    estimate: float
    index: int = 0

    def plan_fields(self) -> dict[str, Any]:
        return {"first": self.first, "stop": self.stop, "emit_from": self.emit_from,
                "skip": self.skip, "restore_first": self.restore_first,
                "post_loop": self.post_loop, "restore_final": self.restore_final}


@dataclass
class RunPlan:
    """How one run is replayed."""

    info: RunInfo
    statements: list[StatementInfo]
    strategy: str
    tasks: list[TaskPlan]
    notes: list[str]
    checkpoints: bool
    dropped: list[str] = field(default_factory=list)  # names that cannot be replayed here

    @property
    def estimate(self) -> float:
        return sum(t.estimate for t in self.tasks)


def _restore_cost(store: CheckpointStore) -> float:
    biggest = max((e.get("bytes", 0) for e in store.entries.values()), default=0)
    return RESTORE_FIXED_S + biggest / LOAD_BYTES_PER_S


def plan_run(info: RunInfo, statements: list[StatementInfo]) -> RunPlan:
    """Choose the cheapest correct way to get the statements' values for one run."""
    notes: list[str] = []
    dropped: list[str] = []
    if info.unrecorded:
        notes.append(f"{len(info.unrecorded)} checkpoint file(s) were not written on this "
                     "machine (no local record of them): not loaded; the iterations they "
                     "cover are re-executed")
    places = {s.place for s in statements}
    needs = set().union(*(s.needs for s in statements)) if statements else set()
    n = info.completed
    post = bool(places & {"post", "unknown"}) or "loop" in needs
    loopwork = bool(places & {"outer", "inner"}) or "loop" in needs
    if post and not info.loop_ended:
        gone = [name for s in statements if s.place in ("post", "unknown") or "loop" in s.needs
                for name in s.names]
        dropped += gone
        notes.append(f"the run stopped inside its loop: {', '.join(gone)} (after the loops) "
                     "cannot be replayed")
        statements = [s for s in statements if not set(s.names) & set(gone)]
        post = False
        places = {s.place for s in statements}
        needs = set().union(*(s.needs for s in statements)) if statements else set()
        loopwork = bool(places & {"outer", "inner"})
    store = info.store
    has_ckpt = store.exists and store.start(0) is not None
    need_inner = "inner" in needs or "loop" in needs
    sequential = "carried" in needs or "loop" in needs
    restore = _restore_cost(store) if store.exists else 0.0
    times, inner = info.iter_times, info.inner_times

    def iter_cost(i: int, skip: bool) -> float:
        if skip:
            n_inner = store.iters.get(i, {}).get("n_inner", 0)
            return max(0.0, times[i] - inner[i]) + restore * n_inner
        return times[i]

    def task(first: int, stop: int, emit_from: int, skip: list[int], post_loop: bool,
             run_level: bool) -> TaskPlan:
        restore_first = has_ckpt and first < stop and store.start(first) is not None
        cost = info.setup_s + PROCESS_EXIT_S + sum(iter_cost(i, i in skip)
                                                   for i in range(first, stop))
        if restore_first:
            cost += restore
        restore_final = post_loop and store.exists and store.final() is not None
        if post_loop:
            cost += info.teardown_s + (restore if restore_final else 0.0)
        return TaskPlan(info.run_id, first, stop, emit_from, sorted(skip), restore_first,
                        post_loop, restore_final, run_level, cost)

    if info.outer is None:
        strategy = "re-executed from the start (the run recorded no fw.loop)"
        whole = task(0, 0, 0, [], True, True)
        duration = (info.summary or {}).get("duration")
        if duration:
            whole.estimate = max(whole.estimate, float(duration) + PROCESS_EXIT_S)
        return RunPlan(info, statements, strategy, [whole], notes, False, dropped)
    if not loopwork:
        if post and not (store.exists and store.final() is not None):
            # No final state recorded: the loop has to run to get there.
            strategy = "after the loops; no checkpoints recorded: re-executed from the start"
            if not store.exists:
                notes.append("no checkpoints recorded (no fw.checkpointing): re-executing")
            tasks = [task(0, n, n, [], True, True)]
        elif post:
            strategy = "after the loops; loop skipped, state restored from the final checkpoint"
            tasks = [task(0, 0, 0, [], True, True)]
        else:
            strategy = "before the loops; only the set-up runs"
            tasks = [task(0, 0, 0, [], False, True)]
        return RunPlan(info, statements, strategy, tasks, notes, store.exists, dropped)
    if not has_ckpt:
        if not info.unrecorded:
            notes.append("no checkpoints recorded (the script has no fw.checkpointing around "
                         "its loop): falling back to re-executing the run from the start")
        strategy = "re-executed from the start (no checkpoints)"
        tasks = [task(0, n, 0, [], post, True)]
        return RunPlan(info, statements, strategy, tasks, notes, False, dropped)
    skip = [] if need_inner else [i for i in range(n) if store.skippable(i)]
    if need_inner:
        what = ("inner loops re-executed from the nearest checkpoint" if "inner" in places
                else "inner loops re-executed (the values depend on them)")
    else:
        what = "inner loops skipped via checkpoints"
        if len(skip) < n:
            what += f" ({n - len(skip)} of {n} iterations without one re-executed)"
    if sequential:
        what += "; in order from the first iteration"
    strategy = f"outer loop ({info.outer}); {what}"
    if post:
        strategy += "; then the code after the loops"
    if sequential:
        tasks = [task(0, n, 0, skip, post, True)]
    else:
        tasks = [task(0, n, 0, skip, post, True)]
    return RunPlan(info, statements, strategy, tasks, notes, True, dropped)


def _lpt(costs: list[float], workers: int) -> float:
    loads = [0.0] * max(1, workers)
    for cost in sorted(costs, reverse=True):
        k = loads.index(min(loads))
        loads[k] += cost
    return max(loads) if loads else 0.0


def _splittable(plan: RunPlan) -> bool:
    needs = set().union(*(s.needs for s in plan.statements)) if plan.statements else set()
    return plan.checkpoints and not ({"carried", "loop"} & needs)


def _split(plan: RunPlan, t: TaskPlan) -> tuple[TaskPlan, TaskPlan] | None:
    """Split a task at the checkpointed iteration closest to its cost midpoint."""
    store = plan.info.store
    candidates = [i for i in range(t.emit_from + 1, t.stop) if store.start(i) is not None]
    if not candidates:
        return None
    skip = set(t.skip)
    info = plan.info
    restore = _restore_cost(store)

    def body(i: int) -> float:
        if i in skip:
            n_inner = store.iters.get(i, {}).get("n_inner", 0)
            return max(0.0, info.iter_times[i] - info.inner_times[i]) + restore * n_inner
        return info.iter_times[i]

    total = sum(body(i) for i in range(t.first, t.stop))
    best, best_gap, acc = None, math.inf, 0.0
    running = {i: 0.0 for i in candidates}
    for i in range(t.first, t.stop):
        if i in running:
            running[i] = acc
        acc += body(i)
    for i in candidates:
        gap = abs(running[i] - total / 2)
        if gap < best_gap:
            best, best_gap = i, gap
    assert best is not None
    fixed = info.setup_s + PROCESS_EXIT_S
    first_cost = fixed + running[best] + (restore if t.restore_first else 0.0)
    second_cost = fixed + (total - running[best]) + restore
    if t.post_loop:
        second_cost += info.teardown_s + (restore if t.restore_final else 0.0)
    a = TaskPlan(t.run_id, t.first, best, t.emit_from, [i for i in t.skip if i < best],
                 t.restore_first, False, False, t.emit_run_level and not t.post_loop,
                 first_cost)
    b = TaskPlan(t.run_id, best, t.stop, best, [i for i in t.skip if i >= best], True,
                 t.post_loop, t.restore_final, t.post_loop, second_cost)
    return a, b


def schedule(plans: list[RunPlan], workers: int) -> float:
    """Split outer iterations among `workers` while that shortens the replay; return the
    estimated wall time."""
    workers = max(1, workers)
    while True:
        tasks = [(p, t) for p in plans for t in p.tasks]
        current = _lpt([t.estimate for _, t in tasks], workers)
        if len(tasks) >= 4 * workers:
            break
        improved = False
        for plan, t in sorted(tasks, key=lambda pt: -pt[1].estimate):
            if not _splittable(plan):
                continue
            parts = _split(plan, t)
            if parts is None:
                continue
            trial = [x.estimate for _, x in tasks if x is not t] + [parts[0].estimate,
                                                                   parts[1].estimate]
            # Each extra worker pays the set-up again: split only for a clear gain.
            if _lpt(trial, workers) < current * SPLIT_GAIN:
                k = plan.tasks.index(t)
                plan.tasks[k:k + 1] = list(parts)
                improved = True
            break
        if not improved:
            break
    for plan in plans:
        for k, t in enumerate(plan.tasks):
            t.index = k
    return _lpt([t.estimate for p in plans for t in p.tasks], workers)


def plan_json(plan: RunPlan, task: TaskPlan, scratch: Path, project: str | None) -> str:
    """The JSON a worker reads from $FLOWILLOWER_REPLAY."""
    return json.dumps({
        "version": 1, "run_dir": str(plan.info.run_dir), "scratch": str(scratch),
        "outer": plan.info.outer, "checkpoints": plan.checkpoints,
        "args": plan.info.args, "project": project, **task.plan_fields(),
    }, default=str)
