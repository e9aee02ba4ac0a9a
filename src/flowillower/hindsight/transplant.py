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
This module decides where statements go; reading syntax trees is syntax.py, matching two
versions' statements align.py, writing them into the old source splice.py.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import FlowillowerError
from .align import Rename, align, header, pair_names, stmt_key
from .splice import Insertion, Placement, Spot, apply_insertions, insertion_point
from .syntax import (
    BUILTINS,
    COMPOUND,
    Loc,
    available_names,
    blocks,
    describe,
    fw_aliases,
    logged_names,
    names_bound,
    names_read,
    scope_bindings,
    short,
    simple_statements,
    walk_statements,
)

__all__ = ["Placement", "TransplantError", "TransplantResult", "transplant"]


class TransplantError(FlowillowerError):
    """A new statement could not be placed in the old version of the script."""


@dataclass
class TransplantResult:
    """The transplanted source and what was done."""

    source: str
    placements: list[Placement]
    present: list[str]  # wanted names the old version already logs
    changed: bool


# -- the transplant ---------------------------------------------------------------------------


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
        self.old_keys = {stmt_key(s) for s in simple_statements(self.old_tree)}
        self._last_mapping: dict[str, str] = {}

    def _rename_candidates(self) -> dict[str, set[str]]:
        """new name -> old names, from statements matched across the whole module."""
        out: dict[str, set[str]] = {}

        def visit(new_body: list[ast.stmt], old_body: list[ast.stmt]) -> None:
            for i, j in align(new_body, old_body).items():
                a, b = new_body[i], old_body[j]
                if isinstance(a, COMPOUND):
                    head_a, head_b = header(a), header(b)
                    if not isinstance(head_a, str) and not isinstance(head_b, str):
                        for x, y in zip(head_a, head_b):
                            pair_names(x, y, out)
                    if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                            isinstance(b, (ast.FunctionDef, ast.AsyncFunctionDef)):
                        pair_names(a.args, b.args, out)
                    for (fa, ka, ba), (fb, kb, bb) in zip(blocks(a), blocks(b)):
                        if fa == fb and ka == kb:
                            visit(ba, bb)
                else:
                    pair_names(a, b, out)
                    if isinstance(a, (ast.For, ast.AsyncFor)):
                        pair_names(a.target, b.target, out)

        visit(self.new_tree.body, self.old_tree.body)
        return out

    def targets(self) -> list[tuple[ast.stmt, Loc, list[str]]]:
        found = []
        for stmt, loc in walk_statements(self.new_tree.body):
            if isinstance(stmt, COMPOUND):
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
                   for s in simple_statements(node))

    def place(self, stmt: ast.stmt, loc: Loc) -> Spot:
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
                    f"cannot place `{short(stmt)}` (line {stmt.lineno} of the current "
                    f"script): {describe(compound)} around it (line {compound.lineno}) has no "
                    f"counterpart in the old version ({self.label})")
            if field_name == "handlers":
                handlers = getattr(old, "handlers", [])
                if k >= len(handlers):
                    raise TransplantError(
                        f"cannot place `{short(stmt)}` (line {stmt.lineno}): the old version "
                        f"has no matching except-block at line {old.lineno}")
                next_old = handlers[k].body
                next_new = compound.handlers[k].body  # type: ignore[attr-defined]
            else:
                next_old = getattr(old, field_name, None) or []
                next_new = getattr(compound, field_name)
                if not next_old:
                    raise TransplantError(
                        f"cannot place `{short(stmt)}` (line {stmt.lineno}): "
                        f"{describe(old)} in the old version has no `{field_name}` block")
            new_block, old_block, old_parent = next_new, next_old, old
        if unit is stmt and not isinstance(stmt, ast.Expr):
            raise TransplantError(
                f"cannot transplant `{short(stmt)}` (line {stmt.lineno}): the fw.log call "
                "is part of a larger statement; write it as its own `fw.log(...)` line so "
                "the old code's computation is not run twice")
        pairs = align(unit_block, old_block)
        index = next(i for i, s in enumerate(unit_block) if s is unit)
        spot = Spot(old_block, None, "start", [], old_parent, unit)
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
                f"cannot place `{short(stmt)}` (line {stmt.lineno}): none of the statements "
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
                    f"cannot place `{short(nodes[-1])}` (line {nodes[-1].lineno}): `{name}` "
                    f"corresponds to several variables of the old version "
                    f"({', '.join(sorted(options))}); the renaming is ambiguous")
            (target,) = others
            mapping[name] = target
        return mapping

    def run(self) -> TransplantResult:
        insertions: list[Insertion] = []
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
            renamed = [Rename(mapping).visit(copy.deepcopy(n)) for n in nodes]
            self._last_mapping = mapping
            defs = [d for d in self._module_defs(renamed, old_bound_all)
                    if id(d) not in carried_defs]
            for d in defs:
                carried_defs[id(d)] = d
            extra = set().union(*(names_bound(d, descend=False) for d in carried_defs.values())
                                ) if carried_defs else set()
            self._check_names(renamed, stmt, loc, spot, extra)
            line, col = insertion_point(spot)
            where = ("at the start of its block" if spot.anchor is None else
                     f"{spot.how} `{short(spot.anchor)}` (old line {spot.anchor.lineno})")
            insertions.append(Insertion(line, col, renamed, spot, Placement(
                list(logged), stmt.lineno, line + 1, where, mapping, len(spot.helpers))))
        if carried_defs:
            insertions.append(self._module_insertion(list(carried_defs.values())))
        source = apply_insertions(self.old_src, self.old_tree, insertions)
        return TransplantResult(source, [i.placement for i in insertions], present,
                                bool(insertions))

    def _module_defs(self, nodes: list[ast.stmt], old_bound: set[str]) -> list[ast.stmt]:
        """New top-level imports and function/class definitions `nodes` need that the old
        version lacks (e.g. `import numpy as np` or a helper function added since)."""
        needed = set().union(*(names_read(n) for n in nodes)) - old_bound - BUILTINS
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
                        inner = names_read(top) - names_bound(top) - old_bound - BUILTINS
                        needed |= inner - handled
                    break
        return [d for d in self.new_tree.body if any(d is f for f in found)]  # new order

    def _module_insertion(self, defs: list[ast.stmt]) -> Insertion:
        """Carried imports/definitions go right after the old version's imports."""
        body = self.old_tree.body
        imports = [s for s in body if isinstance(s, (ast.Import, ast.ImportFrom))]
        if imports:
            spot = Spot(body, imports[-1], "after", [], None, defs[0])
        else:
            first = 1 if (body and isinstance(body[0], ast.Expr)
                          and isinstance(body[0].value, ast.Constant)) else 0
            anchor = body[first] if first < len(body) else body[-1]
            spot = Spot(body, anchor, "before" if first < len(body) else "after", [], None,
                         defs[0])
        line, col = insertion_point(spot)
        names = sorted(set().union(*(names_bound(d, descend=False) for d in defs)))
        return Insertion(line, col, defs, spot, Placement(
            [], defs[0].lineno, line + 1, f"module level: carried {', '.join(names)}"))

    def _check_names(self, nodes: list[ast.stmt], stmt: ast.stmt, loc: Loc,
                     spot: Spot, extra: set[str]) -> None:
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
        needed -= BUILTINS
        renamed_back = {v: k for k, v in self._last_mapping.items()}
        needed = {n for n in needed if renamed_back.get(n, n) in new_available
                  or not self._bound_in_loops(n, spot)}
        if not needed:
            return
        anywhere = names_bound(self.old_tree)
        for name in sorted(needed):
            if name in anywhere:
                raise TransplantError(
                    f"cannot place `{short(stmt)}` (line {stmt.lineno}): it reads `{name}`, "
                    f"which the old version ({self.label}) only assigns after the place the "
                    "statement would go; the code around it moved")
            raise TransplantError(
                f"cannot place `{short(stmt)}` (line {stmt.lineno}): it reads `{name}`, "
                f"which does not exist in the old version ({self.label}); add the line that "
                "defines it right before the statement, or log an expression of old variables")

    def _bound_in_loops(self, name: str, spot: Spot) -> bool:
        """Whether a loop around the insertion point assigns `name` (a loop-carried value)."""
        for _stmt, loc in walk_statements(self.old_tree.body):
            if loc.block is spot.block:
                return any(isinstance(c, (ast.For, ast.AsyncFor, ast.While))
                           and name in scope_bindings(c) for c, _f, _k in loc.chain)
        return False


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
