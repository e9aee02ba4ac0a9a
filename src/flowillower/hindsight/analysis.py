"""The data-flow analysis of a replay: what each wanted `fw.log` statement depends on.

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
never tainted. The planner turns the result into worker tasks.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from .syntax import (
    COMPOUND,
    containers,
    fw_aliases,
    logged_names,
    loop_name,
    names_bound,
    names_read,
    scope_bindings,
    walk_statements,
)

__all__ = ["StatementInfo", "analyze"]

_RANK = {"pre": 0, "post": 1, "outer": 2, "inner": 3, "unknown": 4}


@dataclass
class StatementInfo:
    """One statement logging wanted names, as seen in the code that will run."""

    names: list[str]
    line: int
    place: str  # pre | outer | inner | post | unknown
    needs: set[str] = field(default_factory=set)  # inner | carried | loop
    why: str = ""


# -- static analysis -----------------------------------------------------------------------------


def checkpointing_keywords(tree: ast.AST) -> Iterator[ast.keyword]:
    """The named arguments of every `fw.checkpointing(...)` call in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            fname = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if fname == "checkpointing":
                yield from (kw for kw in node.keywords if kw.arg)


def _registered_names(tree: ast.AST) -> set[str]:
    """Variables handed to `fw.checkpointing(...)`: the replay restores them in place."""
    return {kw.value.id for kw in checkpointing_keywords(tree)
            if isinstance(kw.value, ast.Name)}


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
        if not isinstance(stmt, COMPOUND):
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
        if isinstance(stmt, COMPOUND):
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
    for container, compound in reversed(containers(tree, outer_loc.chain)):
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
    if not isinstance(stmt, COMPOUND):
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
