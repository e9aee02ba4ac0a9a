"""Reading Python syntax trees for hindsight replay: fw calls, names, statement places.

Shared by the transplant (carrying new `fw.log` statements into an old script) and the
data-flow analysis (what a replay must re-execute): recognising `fw.log`/`fw.loop`
calls and the names they log, which variables a statement reads and binds, which names
exist at a point of a module, and every statement with its location (`walk_statements`).
"""

from __future__ import annotations

import ast
import builtins
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

BLOCK_FIELDS = ("body", "orelse", "finalbody")
# Statements holding blocks of other statements.
COMPOUND: tuple[type[ast.stmt], ...] = (
    ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try,
    ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
if hasattr(ast, "TryStar"):
    COMPOUND = (*COMPOUND, ast.TryStar)
BUILTINS = set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__builtins__"}


# -- recognising fw calls ---------------------------------------------------------------------


def fw_aliases(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(module aliases of flowillower, names of `log`/`log_metrics` imported from it)."""
    modules, functions = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "flowillower":
                    modules.add(alias.asname or alias.name)
        elif isinstance(node, ast.ImportFrom) and node.module == "flowillower":
            for alias in node.names:
                if alias.name in ("log", "log_metrics", "loop"):
                    functions.add(alias.asname or alias.name)
    return modules or {"fw"}, functions


def _call_kind(call: ast.AST, aliases: tuple[set[str], set[str]]) -> str | None:
    """'log' / 'log_metrics' / 'loop' when `call` calls that flowillower function."""
    if not isinstance(call, ast.Call):
        return None
    func = call.func
    modules, functions = aliases
    if isinstance(func, ast.Attribute) and func.attr in ("log", "log_metrics", "loop"):
        if isinstance(func.value, ast.Name) and func.value.id in modules:
            return func.attr
        return func.attr if func.attr == "loop" else None  # run.loop(...) counts as a loop
    if isinstance(func, ast.Name) and func.id in functions:
        return func.id
    return None


def logged_names(stmt: ast.AST, aliases: tuple[set[str], set[str]]) -> list[str]:
    """Constant names logged by fw.log / fw.log_metrics calls anywhere in `stmt`."""
    found = []
    for node in ast.walk(stmt):
        kind = _call_kind(node, aliases)
        if kind == "log" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            found.append(node.args[0].value)
        elif kind == "log_metrics" and node.args and isinstance(node.args[0], ast.Dict):
            found += [k.value for k in node.args[0].keys
                      if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return found


def loop_name(node: ast.AST, aliases: tuple[set[str], set[str]] | None = None) -> str | None:
    """The fw.loop name a `for` statement iterates over (also through enumerate/zip)."""
    if not isinstance(node, (ast.For, ast.AsyncFor)):
        return None
    for sub in ast.walk(node.iter):
        if isinstance(sub, ast.Call):
            func = sub.func
            is_loop = (isinstance(func, ast.Attribute) and func.attr == "loop") or (
                isinstance(func, ast.Name) and func.id == "loop")
            if is_loop and sub.args and isinstance(sub.args[0], ast.Constant) \
                    and isinstance(sub.args[0].value, str):
                return sub.args[0].value
    return None


# -- name analysis -----------------------------------------------------------------------------


def names_read(node: ast.AST) -> set[str]:
    """Variables a statement or expression reads from its scope (names bound by its own
    comprehensions and lambdas excluded)."""
    loads, local = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            loads.add(n.id)
        elif isinstance(n, ast.comprehension):
            local |= target_names(n.target)
        elif isinstance(n, ast.Lambda):
            local |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    return loads - local


def target_names(target: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(target) if isinstance(n, ast.Name)
            and isinstance(n.ctx, ast.Store)}


def names_bound(node: ast.AST, *, descend: bool = True) -> set[str]:
    """Names a statement binds (assignments, loop targets, imports, defs, with-as...)."""
    found: set[str] = set()
    nodes: Iterable[ast.AST] = ast.walk(node) if descend else [node]
    for sub in nodes:
        if isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
            found.add(sub.id)
        elif isinstance(sub, (ast.Import, ast.ImportFrom)):
            for alias in sub.names:
                found.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(sub.name)
        elif isinstance(sub, ast.arg):
            found.add(sub.arg)
        elif isinstance(sub, ast.ExceptHandler) and sub.name:
            found.add(sub.name)
        elif isinstance(sub, (ast.Global, ast.Nonlocal)):
            found.update(sub.names)
    return found


def scope_bindings(stmt: ast.AST) -> set[str]:
    """Names that running `stmt` binds in the current scope (not inside defs/lambdas)."""
    found: set[str] = set()
    stack = [stmt]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found.add(node.name)
            continue
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp,
                             ast.GeneratorExp)):
            continue
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            found.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            found.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.update(node.names)
        stack.extend(ast.iter_child_nodes(node))
    return found


def containers(tree: ast.Module, path: list[tuple[ast.stmt, str, int]]
                ) -> list[tuple[list[ast.stmt], ast.stmt]]:
    """(block holding it, compound) for each compound on a statement's path."""
    out = []
    block = tree.body
    for compound, f, k in path:
        out.append((block, compound))
        block = compound.handlers[k].body if f == "handlers" else getattr(compound, f)
    return out


def available_names(tree: ast.Module, aliases: tuple[set[str], set[str]],
                    block: list[ast.stmt], anchor: ast.stmt | None, how: str) -> set[str]:
    """Names bound when execution first reaches a point of `tree` (same iteration only).

    The point is before/after `anchor` in `block` (or the block's start when None).
    """
    module_names = set(aliases[0]) | aliases[1]
    for stmt in tree.body:
        module_names |= scope_bindings(stmt)
    available = set(aliases[0]) | aliases[1]
    path: list[tuple[ast.stmt, str, int]] = []
    for _stmt, loc in walk_statements(tree.body):
        if loc.block is block:
            path = loc.chain
            break
    for container, compound in containers(tree, path):
        for stmt in container:
            if stmt is compound:
                break
            available |= scope_bindings(stmt)
        if isinstance(compound, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # A function body sees its arguments and the module's names (functions run
            # once the module has been run), not its caller's locals.
            available = module_names | names_bound(compound.args)
        if isinstance(compound, (ast.For, ast.AsyncFor)):
            available |= target_names(compound.target)
        if isinstance(compound, (ast.With, ast.AsyncWith)):
            for item in compound.items:
                if item.optional_vars is not None:
                    available |= target_names(item.optional_vars)
    if anchor is not None:
        for stmt in block:
            if how == "before" and stmt is anchor:
                break
            available |= scope_bindings(stmt)
            if stmt is anchor:
                break
    return available


# -- locating and describing statements -----------------------------------------------------------------------


@dataclass
class Loc:
    """A statement's position: the chain of (compound, field) above it and its block."""

    chain: list[tuple[ast.stmt, str, int]]  # (compound, block field, handler index)
    block: list[ast.stmt]
    index: int


def blocks(node: ast.AST) -> Iterator[tuple[str, int, list[ast.stmt]]]:
    for name in BLOCK_FIELDS:
        value = getattr(node, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield name, -1, value
    for k, handler in enumerate(getattr(node, "handlers", []) or []):
        yield "handlers", k, handler.body


def walk_statements(body: list[ast.stmt], chain: list | None = None
                    ) -> Iterator[tuple[ast.stmt, Loc]]:
    """Every statement with its location, in source order."""
    chain = chain or []
    for index, stmt in enumerate(body):
        yield stmt, Loc(list(chain), body, index)
        for name, k, block in blocks(stmt):
            yield from walk_statements(block, [*chain, (stmt, name, k)])


def describe(stmt: ast.stmt) -> str:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"function {stmt.name}()"
    if isinstance(stmt, ast.ClassDef):
        return f"class {stmt.name}"
    name = loop_name(stmt)
    if name is not None:
        return f"the fw.loop({name!r}) loop"
    text = ast.unparse(stmt).splitlines()[0]
    return f"`{text[:60]}`"


def short(stmt: ast.stmt) -> str:
    text = ast.unparse(stmt).splitlines()[0]
    return text if len(text) <= 70 else text[:67] + "..."


def simple_statements(node: ast.AST) -> Iterator[ast.stmt]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.stmt) and not isinstance(sub, COMPOUND):
            yield sub
