"""Carry new `fw.log(...)` statements from the current script into an older version.

Both versions are parsed with `ast`. For each statement of the new script that logs a
wanted name and has no counterpart in the old one, we

1. walk its enclosing blocks (functions, loops, with/if/try blocks) from the module down
   and find each block's counterpart in the old tree (by header: a function's name, an
   `fw.loop`'s loop name, a `with`'s items, a test...; renamed variables allowed),
2. align the statements of the innermost block with the old block (longest common
   subsequence on exact statements, then on statements equal up to variable names, then
   moved statements that occur once) and insert after the nearest preceding statement that
   has a counterpart (or before the nearest following one),
3. rename variables the old version calls differently, when the renaming is unambiguous,
4. check every name the statement reads exists at that place in the old version;
   new helper lines right before it that compute those names come along.

Text is inserted line-wise so the old file keeps its comments and line numbers stay close.
Anything that cannot be placed raises `TransplantError` saying which statement and why.
"""

from __future__ import annotations

import ast
import builtins
import copy
import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ..errors import FlowillowerError

_BLOCK_FIELDS = ("body", "orelse", "finalbody")
_COMPOUND = (ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith, ast.Try,
             ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
if hasattr(ast, "TryStar"):
    _COMPOUND = (*_COMPOUND, ast.TryStar)
_BUILTINS = set(dir(builtins)) | {"__file__", "__name__", "__doc__", "__builtins__"}


class TransplantError(FlowillowerError):
    """A new statement could not be placed in the old version of the script."""


@dataclass
class Placement:
    """Where one new statement went."""

    names: list[str]
    new_line: int
    old_line: int  # line in the transplanted file where the statement now starts
    where: str  # human description of the anchor
    renames: dict[str, str] = field(default_factory=dict)
    helpers: int = 0  # helper statements carried along


@dataclass
class TransplantResult:
    """The transplanted source and what was done."""

    source: str
    placements: list[Placement]
    present: list[str]  # wanted names the old version already logs
    changed: bool


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


# -- keys used to align statements -------------------------------------------------------------


class _Anonymize(ast.NodeTransformer):
    def visit_Name(self, node: ast.Name) -> ast.AST:
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node: ast.arg) -> ast.AST:
        node = copy.copy(node)
        node.arg = "_"
        node.annotation = None
        return node


def _dump(node: ast.AST | list | None) -> str:
    if node is None:
        return ""
    if isinstance(node, list):
        return "[" + ",".join(_dump(n) for n in node) + "]"
    return ast.dump(node, include_attributes=False)


def _header(stmt: ast.stmt) -> list[ast.AST] | str:
    """The part of a compound statement that identifies it (its body excluded)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return f"def:{stmt.name}"
    if isinstance(stmt, (ast.For, ast.AsyncFor)):
        name = loop_name(stmt)
        return f"loop:{name}" if name is not None else [stmt.target, stmt.iter]
    if isinstance(stmt, (ast.While, ast.If)):
        return [stmt.test]
    if isinstance(stmt, (ast.With, ast.AsyncWith)):
        return [item.context_expr for item in stmt.items]
    return type(stmt).__name__  # try: matched by position among tries


def stmt_key(stmt: ast.stmt, anonymous: bool = False) -> str:
    """Alignment key: full statement for simple ones, header for compound ones."""
    kind = type(stmt).__name__
    if isinstance(stmt, _COMPOUND):
        head = _header(stmt)
        if isinstance(head, str):
            return f"{kind}:{head}"
        nodes = head
    else:
        nodes = [stmt]
    if anonymous:
        nodes = [_Anonymize().visit(copy.deepcopy(n)) for n in nodes]
    return f"{kind}:{_dump(nodes)}"


def align(new: list[ast.stmt], old: list[ast.stmt]) -> dict[int, int]:
    """Map indices of `new` statements to their counterparts in `old`."""
    pairs: dict[int, int] = {}
    exact_new, exact_old = [stmt_key(s) for s in new], [stmt_key(s) for s in old]
    anon_new = [stmt_key(s, True) for s in new]
    anon_old = [stmt_key(s, True) for s in old]

    def lcs(a_idx: list[int], b_idx: list[int], a_keys: list[str], b_keys: list[str]) -> None:
        matcher = difflib.SequenceMatcher(None, [a_keys[i] for i in a_idx],
                                          [b_keys[j] for j in b_idx], autojunk=False)
        for block in matcher.get_matching_blocks():
            for k in range(block.size):
                pairs[a_idx[block.a + k]] = b_idx[block.b + k]

    lcs(list(range(len(new))), list(range(len(old))), exact_new, exact_old)
    # Within each gap between exact matches: statements equal up to variable names.
    anchors = sorted(pairs.items())
    bounds = [(-1, -1), *anchors, (len(new), len(old))]
    for (a0, b0), (a1, b1) in zip(bounds, bounds[1:]):
        gap_a = [i for i in range(a0 + 1, a1) if i not in pairs]
        gap_b = [j for j in range(b0 + 1, b1)]
        if gap_a and gap_b:
            lcs(gap_a, gap_b, anon_new, anon_old)
    # Moved statements: unmatched ones whose key occurs exactly once on both sides.
    used = set(pairs.values())
    for keys_new, keys_old in ((exact_new, exact_old), (anon_new, anon_old)):
        free_old = [j for j in range(len(old)) if j not in used]
        free_new = [i for i in range(len(new)) if i not in pairs]
        for i in free_new:
            hits = [j for j in free_old if keys_old[j] == keys_new[i]]
            if len(hits) == 1 and sum(keys_new[k] == keys_new[i] for k in free_new) == 1:
                pairs[i] = hits[0]
                used.add(hits[0])
                free_old.remove(hits[0])
    return pairs


# -- name analysis -----------------------------------------------------------------------------


def names_read(node: ast.AST) -> set[str]:
    """Variables a statement or expression reads from its scope (names bound by its own
    comprehensions and lambdas excluded)."""
    loads, local = set(), set()
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load):
            loads.add(n.id)
        elif isinstance(n, ast.comprehension):
            local |= _target_names(n.target)
        elif isinstance(n, ast.Lambda):
            local |= {a.arg for a in ast.walk(n.args) if isinstance(a, ast.arg)}
    return loads - local


def _target_names(target: ast.AST) -> set[str]:
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


def _containers(tree: ast.Module, path: list[tuple[ast.stmt, str, int]]
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
    for container, compound in _containers(tree, path):
        for stmt in container:
            if stmt is compound:
                break
            available |= scope_bindings(stmt)
        if isinstance(compound, (ast.FunctionDef, ast.AsyncFunctionDef)):
            # A function body sees its arguments and the module's names (functions run
            # once the module has been run), not its caller's locals.
            available = module_names | names_bound(compound.args)
        if isinstance(compound, (ast.For, ast.AsyncFor)):
            available |= _target_names(compound.target)
        if isinstance(compound, (ast.With, ast.AsyncWith)):
            for item in compound.items:
                if item.optional_vars is not None:
                    available |= _target_names(item.optional_vars)
    if anchor is not None:
        for stmt in block:
            if how == "before" and stmt is anchor:
                break
            available |= scope_bindings(stmt)
            if stmt is anchor:
                break
    return available


def _pair_names(new: ast.AST, old: ast.AST, out: dict[str, set[str]]) -> None:
    """Collect new-name -> old-name correspondences of two structurally equal nodes."""
    new_names = [n for n in ast.walk(new) if isinstance(n, (ast.Name, ast.arg))]
    old_names = [n for n in ast.walk(old) if isinstance(n, (ast.Name, ast.arg))]
    if len(new_names) != len(old_names):
        return
    for a, b in zip(new_names, old_names):
        ida = a.id if isinstance(a, ast.Name) else a.arg
        idb = b.id if isinstance(b, ast.Name) else b.arg
        out.setdefault(ida, set()).add(idb)


class _Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node


# -- locating statements -----------------------------------------------------------------------


@dataclass
class _Loc:
    """A statement's position: the chain of (compound, field) above it and its block."""

    chain: list[tuple[ast.stmt, str, int]]  # (compound, block field, handler index)
    block: list[ast.stmt]
    index: int


def _blocks(node: ast.AST) -> Iterator[tuple[str, int, list[ast.stmt]]]:
    for name in _BLOCK_FIELDS:
        value = getattr(node, name, None)
        if isinstance(value, list) and value and isinstance(value[0], ast.stmt):
            yield name, -1, value
    for k, handler in enumerate(getattr(node, "handlers", []) or []):
        yield "handlers", k, handler.body


def walk_statements(body: list[ast.stmt], chain: list | None = None
                    ) -> Iterator[tuple[ast.stmt, _Loc]]:
    """Every statement with its location, in source order."""
    chain = chain or []
    for index, stmt in enumerate(body):
        yield stmt, _Loc(list(chain), body, index)
        for name, k, block in _blocks(stmt):
            yield from walk_statements(block, [*chain, (stmt, name, k)])


def _describe(stmt: ast.stmt) -> str:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return f"function {stmt.name}()"
    if isinstance(stmt, ast.ClassDef):
        return f"class {stmt.name}"
    name = loop_name(stmt)
    if name is not None:
        return f"the fw.loop({name!r}) loop"
    text = ast.unparse(stmt).splitlines()[0]
    return f"`{text[:60]}`"


def _short(stmt: ast.stmt) -> str:
    text = ast.unparse(stmt).splitlines()[0]
    return text if len(text) <= 70 else text[:67] + "..."


def _simple_statements(node: ast.AST) -> Iterator[ast.stmt]:
    for sub in ast.walk(node):
        if isinstance(sub, ast.stmt) and not isinstance(sub, _COMPOUND):
            yield sub


# -- the transplant ----------------------------------------------------------------------------


@dataclass
class _Spot:
    """Where a unit goes in the old tree."""

    block: list[ast.stmt]
    anchor: ast.stmt | None
    how: str  # "after" | "before" | "start" | "present"
    helpers: list[ast.stmt]
    parent: ast.stmt | None
    unit: ast.stmt


@dataclass
class _Insertion:
    line: int
    col: int
    nodes: list[ast.stmt]
    spot: _Spot
    placement: Placement


class _Transplanter:
    def __init__(self, old_src: str, new_src: str, names: list[str], label: str) -> None:
        self.old_src, self.new_src = old_src, new_src
        self.label = label
        self.wanted = list(names)
        try:
            self.new_tree = ast.parse(new_src)
        except SyntaxError as exc:
            raise TransplantError(f"the current script does not parse: {exc}") from None
        try:
            self.old_tree = ast.parse(old_src)
        except SyntaxError as exc:
            raise TransplantError(f"the old version ({label}) does not parse: {exc}") from None
        self.new_alias = fw_aliases(self.new_tree)
        self.old_alias = fw_aliases(self.old_tree)
        self.renames = self._rename_candidates()
        self.old_keys = {stmt_key(s) for s in _simple_statements(self.old_tree)}
        self._last_mapping: dict[str, str] = {}

    def _rename_candidates(self) -> dict[str, set[str]]:
        """new name -> old names, from statements matched across the whole module."""
        out: dict[str, set[str]] = {}

        def visit(new_body: list[ast.stmt], old_body: list[ast.stmt]) -> None:
            for i, j in align(new_body, old_body).items():
                a, b = new_body[i], old_body[j]
                if isinstance(a, _COMPOUND):
                    head_a, head_b = _header(a), _header(b)
                    if not isinstance(head_a, str) and not isinstance(head_b, str):
                        for x, y in zip(head_a, head_b):
                            _pair_names(x, y, out)
                    if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                            isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        _pair_names(a.args, b.args, out)
                    for (fa, ka, ba), (fb, kb, bb) in zip(_blocks(a), _blocks(b)):
                        if fa == fb and ka == kb:
                            visit(ba, bb)
                else:
                    _pair_names(a, b, out)
                    if isinstance(a, (ast.For, ast.AsyncFor)):
                        _pair_names(a.target, b.target, out)

        visit(self.new_tree.body, self.old_tree.body)
        return out

    def targets(self) -> list[tuple[ast.stmt, _Loc, list[str]]]:
        found = []
        for stmt, loc in walk_statements(self.new_tree.body):
            if isinstance(stmt, _COMPOUND):
                continue
            logged = [n for n in logged_names(stmt, self.new_alias) if n in self.wanted]
            if logged:
                found.append((stmt, loc, logged))
        return found

    def _counterpart(self, stmt: ast.stmt, new_block: list[ast.stmt], old_block: list[ast.stmt]
                     ) -> ast.stmt | None:
        pairs = align(new_block, old_block)
        index = next(i for i, s in enumerate(new_block) if s is stmt)
        j = pairs.get(index)
        if j is not None:
            return old_block[j]
        # Headers can differ more than a rename (a loop over a new range): same kind and
        # the only candidate of its kind left unmatched.
        used = set(pairs.values())
        same = [s for k, s in enumerate(old_block) if k not in used and type(s) is type(stmt)
                and not isinstance(stmt, (ast.FunctionDef, ast.ClassDef, ast.For))]
        return same[0] if len(same) == 1 else None

    def _all_new(self, node: ast.stmt) -> bool:
        """No simple statement inside `node` exists in the old version."""
        return all(stmt_key(s) not in self.old_keys or isinstance(s, ast.Pass)
                   for s in _simple_statements(node))

    def place(self, stmt: ast.stmt, loc: _Loc) -> _Spot:
        """Find where `stmt` (or the new block around it) goes in the old tree."""
        new_block, old_block = self.new_tree.body, self.old_tree.body
        unit, unit_block = stmt, loc.block
        old_parent: ast.stmt | None = None
        for compound, field_name, k in loc.chain:
            old = self._counterpart(compound, new_block, old_block)
            if old is None:
                if self._all_new(compound):
                    unit, unit_block = compound, new_block  # carry the whole new block
                    break
                raise TransplantError(
                    f"cannot place `{_short(stmt)}` (line {stmt.lineno} of the current "
                    f"script): {_describe(compound)} around it (line {compound.lineno}) has no "
                    f"counterpart in the old version ({self.label})")
            if field_name == "handlers":
                handlers = getattr(old, "handlers", [])
                if k >= len(handlers):
                    raise TransplantError(
                        f"cannot place `{_short(stmt)}` (line {stmt.lineno}): the old version "
                        f"has no matching except-block at line {old.lineno}")
                next_old = handlers[k].body
                next_new = compound.handlers[k].body  # type: ignore[attr-defined]
            else:
                next_old = getattr(old, field_name, None) or []
                next_new = getattr(compound, field_name)
                if not next_old:
                    raise TransplantError(
                        f"cannot place `{_short(stmt)}` (line {stmt.lineno}): "
                        f"{_describe(old)} in the old version has no `{field_name}` block")
            new_block, old_block, old_parent = next_new, next_old, old
        if unit is stmt and not isinstance(stmt, ast.Expr):
            raise TransplantError(
                f"cannot transplant `{_short(stmt)}` (line {stmt.lineno}): the fw.log call "
                "is part of a larger statement; write it as its own `fw.log(...)` line so "
                "the old code's computation is not run twice")
        pairs = align(unit_block, old_block)
        index = next(i for i, s in enumerate(unit_block) if s is unit)
        spot = _Spot(old_block, None, "start", [], old_parent, unit)
        if index in pairs:  # an equivalent statement is already there
            spot.anchor, spot.how = old_block[pairs[index]], "present"
            return spot
        spot.helpers = self._helpers(unit, unit_block, index, pairs)
        before = [i for i in range(index) if i in pairs]
        after = [i for i in range(index + 1, len(unit_block)) if i in pairs]
        if before:
            spot.anchor, spot.how = old_block[pairs[before[-1]]], "after"
        elif after:
            spot.anchor, spot.how = old_block[pairs[after[0]]], "before"
        elif index != 0:
            raise TransplantError(
                f"cannot place `{_short(stmt)}` (line {stmt.lineno}): none of the statements "
                f"around it exists in the old version ({self.label})")
        return spot

    def _helpers(self, unit: ast.stmt, block: list[ast.stmt], index: int,
                 pairs: dict[int, int]) -> list[ast.stmt]:
        """New statements right before `unit` that compute names it reads."""
        needed = names_read(unit)
        helpers: list[ast.stmt] = []
        i = index - 1
        while i >= 0 and i not in pairs:
            candidate = block[i]
            bound = names_bound(candidate)
            if bound & needed and not logged_names(candidate, self.new_alias):
                helpers.insert(0, candidate)
                needed = (needed - bound) | names_read(candidate)
            i -= 1
        return helpers

    def _rename_map(self, nodes: list[ast.stmt], old_bound: set[str]) -> dict[str, str]:
        mapping = {}
        for name in set().union(*(names_read(n) | names_bound(n) for n in nodes)):
            options = self.renames.get(name, set())
            others = options - {name}
            if not others:
                continue
            if len(options) > 1:
                if name in options and name in old_bound:
                    continue  # also used unchanged: keep it
                raise TransplantError(
                    f"cannot place `{_short(nodes[-1])}` (line {nodes[-1].lineno}): `{name}` "
                    f"corresponds to several variables of the old version "
                    f"({', '.join(sorted(options))}); the renaming is ambiguous")
            (target,) = others
            mapping[name] = target
        return mapping

    def run(self) -> TransplantResult:
        insertions: list[_Insertion] = []
        present: list[str] = []
        old_bound_all = names_bound(self.old_tree)
        seen_units: set[int] = set()
        carried_defs: dict[int, ast.stmt] = {}
        for stmt, loc, logged in self.targets():
            spot = self.place(stmt, loc)
            if spot.how == "present":
                present += logged
                continue
            if id(spot.unit) in seen_units:
                insertions[-1].placement.names += logged
                continue
            seen_units.add(id(spot.unit))
            nodes = [*spot.helpers, spot.unit]
            mapping = self._rename_map(nodes, old_bound_all)
            renamed = [_Rename(mapping).visit(copy.deepcopy(n)) for n in nodes]
            self._last_mapping = mapping
            defs = [d for d in self._module_defs(renamed, old_bound_all)
                    if id(d) not in carried_defs]
            for d in defs:
                carried_defs[id(d)] = d
            extra = set().union(*(names_bound(d, descend=False) for d in carried_defs.values())
                                ) if carried_defs else set()
            self._check_names(renamed, stmt, loc, spot, extra)
            line, col = self._insertion_point(spot)
            where = ("at the start of its block" if spot.anchor is None else
                     f"{spot.how} `{_short(spot.anchor)}` (old line {spot.anchor.lineno})")
            insertions.append(_Insertion(line, col, renamed, spot, Placement(
                list(logged), stmt.lineno, line + 1, where, mapping, len(spot.helpers))))
        if carried_defs:
            insertions.append(self._module_insertion(list(carried_defs.values())))
        source = self._apply(insertions)
        return TransplantResult(source, [i.placement for i in insertions], present,
                                bool(insertions))

    def _module_defs(self, nodes: list[ast.stmt], old_bound: set[str]) -> list[ast.stmt]:
        """New top-level imports and function/class definitions `nodes` need that the old
        version lacks (e.g. `import numpy as np` or a helper function added since)."""
        needed = set().union(*(names_read(n) for n in nodes)) - old_bound - _BUILTINS
        found: list[ast.stmt] = []
        handled: set[str] = set()
        while needed:
            name = needed.pop()
            handled.add(name)
            for top in self.new_tree.body:
                if not isinstance(top, (ast.Import, ast.ImportFrom, ast.FunctionDef,
                                        ast.AsyncFunctionDef, ast.ClassDef)):
                    continue
                if name in names_bound(top, descend=False) and all(t is not top for t in found):
                    found.append(top)
                    if not isinstance(top, (ast.Import, ast.ImportFrom)):
                        inner = names_read(top) - names_bound(top) - old_bound - _BUILTINS
                        needed |= inner - handled
                    break
        return [d for d in self.new_tree.body if any(d is f for f in found)]  # new order

    def _module_insertion(self, defs: list[ast.stmt]) -> _Insertion:
        """Carried imports/definitions go right after the old version's imports."""
        body = self.old_tree.body
        imports = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
        if imports:
            spot = _Spot(body, imports[-1], "after", [], None, defs[0])
        else:
            first = 1 if (body and isinstance(body[0], ast.Expr)
                          and isinstance(body[0].value, ast.Constant)) else 0
            anchor = body[first] if first < len(body) else body[-1]
            spot = _Spot(body, anchor, "before" if first < len(body) else "after", [], None,
                         defs[0])
        line, col = self._insertion_point(spot)
        names = sorted(set().union(*(names_bound(d, descend=False) for d in defs)))
        return _Insertion(line, col, defs, spot, Placement(
            [], defs[0].lineno, line + 1, f"module level: carried {', '.join(names)}"))

    def _check_names(self, nodes: list[ast.stmt], stmt: ast.stmt, loc: _Loc,
                     spot: _Spot, extra: set[str]) -> None:
        """Every name read must be bound at the insertion point of the old version.

        A name the current script itself only has from an earlier loop iteration (read
        before it is assigned in the loop body) may be loop-carried in the old one too.
        """
        available = available_names(self.old_tree, self.old_alias, spot.block, spot.anchor,
                                    spot.how) | extra
        new_available = available_names(self.new_tree, self.new_alias, loc.block,
                                        loc.block[loc.index], "before")
        needed: set[str] = set()
        for node in nodes:
            needed |= names_read(node) - available
            available |= names_bound(node)
        needed -= _BUILTINS
        renamed_back = {v: k for k, v in self._last_mapping.items()}
        needed = {n for n in needed if renamed_back.get(n, n) in new_available
                  or not self._bound_in_loops(n, spot)}
        if not needed:
            return
        anywhere = names_bound(self.old_tree)
        for name in sorted(needed):
            if name in anywhere:
                raise TransplantError(
                    f"cannot place `{_short(stmt)}` (line {stmt.lineno}): it reads `{name}`, "
                    f"which the old version ({self.label}) only assigns after the place the "
                    "statement would go; the code around it moved")
            raise TransplantError(
                f"cannot place `{_short(stmt)}` (line {stmt.lineno}): it reads `{name}`, "
                f"which does not exist in the old version ({self.label}); add the line that "
                "defines it right before the statement, or log an expression of old variables")

    def _bound_in_loops(self, name: str, spot: _Spot) -> bool:
        """Whether a loop around the insertion point assigns `name` (a loop-carried value)."""
        for _stmt, loc in walk_statements(self.old_tree.body):
            if loc.block is spot.block:
                return any(isinstance(c, (ast.For, ast.AsyncFor, ast.While))
                           and name in scope_bindings(c) for c, _f, _k in loc.chain)
        return False

    def _insertion_point(self, spot: _Spot) -> tuple[int, int]:
        """(0-based line index to insert before, column) in the old source."""
        anchor = spot.anchor
        if anchor is None:
            first = spot.block[0]
            return first.lineno - 1, first.col_offset
        if spot.how == "after":
            return anchor.end_lineno or anchor.lineno, anchor.col_offset
        return anchor.lineno - 1, anchor.col_offset

    def _apply(self, insertions: list[_Insertion]) -> str:
        if not insertions:
            return self.old_src
        lines = self.old_src.splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        # Equal insertion lines keep the new script's order; later lines shift by the
        # lines inserted above them.
        order = sorted(range(len(insertions)), key=lambda k: (insertions[k].line, k))
        shift = 0
        out = list(lines)
        for k in order:
            ins = insertions[k]
            text = "\n".join(ast.unparse(n) for n in ins.nodes).splitlines()
            new_lines = [" " * ins.col + t + "\n" for t in text]
            at = ins.line + shift
            out[at:at] = new_lines
            ins.placement.old_line = at + 1
            shift += len(new_lines)
        source = "".join(out)
        try:
            ast.parse(source)
        except SyntaxError:  # e.g. a one-line `for x in y: f()` block: rebuild from the tree
            source = self._apply_ast(insertions)
        return source

    def _apply_ast(self, insertions: list[_Insertion]) -> str:
        for ins in insertions:
            block, anchor = ins.spot.block, ins.spot.anchor
            if anchor is None:
                at = 0
            else:
                at = next(k for k, s in enumerate(block) if s is anchor)
                at += 1 if ins.spot.how == "after" else 0
                while ins.spot.how == "after" and at < len(block) and \
                        getattr(block[at], "_fw_inserted", False):
                    at += 1
            for node in ins.nodes:
                node._fw_inserted = True  # type: ignore[attr-defined]
            block[at:at] = ins.nodes
        return ast.unparse(self.old_tree) + "\n"


def transplant(old_src: str, new_src: str, names: Iterable[str], label: str = "old version"
               ) -> TransplantResult:
    """Insert the current script's statements logging `names` into `old_src`.

    Raises `TransplantError` naming the statement and the reason when one cannot be placed.
    """
    wanted = list(dict.fromkeys(names))
    worker = _Transplanter(old_src, new_src, wanted, label)
    targets = worker.targets()
    found = {n for _, _, logged in targets for n in logged}
    missing = [n for n in wanted if n not in found]
    old_logged = {n for s, _ in walk_statements(worker.old_tree.body)
                  for n in logged_names(s, worker.old_alias)}
    missing = [n for n in missing if n not in old_logged]
    if missing:
        raise TransplantError(
            f"the current script has no fw.log statement for {', '.join(missing)}; add "
            "`fw.log(NAME, value)` where the value is available, then replay")
    result = worker.run()
    result.present = sorted(set(result.present) | (old_logged & set(wanted)))
    return result
