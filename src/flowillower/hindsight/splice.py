"""Splicing placed statements into the old version of a script (for the transplant).

A `Spot` says where a unit of new statements goes in the old tree (after or before an
anchor statement, or at the start of a block); `apply_insertions` writes the statements
into the old source line-wise, so the old file keeps its comments and line numbers stay
close, falling back to unparsing the old tree when a one-line block leaves no room.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field


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
class Spot:
    """Where a unit goes in the old tree."""

    block: list[ast.stmt]
    anchor: ast.stmt | None
    how: str  # "after" | "before" | "start" | "present"
    helpers: list[ast.stmt]
    parent: ast.stmt | None
    unit: ast.stmt


@dataclass
class Insertion:
    """Statements to insert before 0-based line `line` of the old source, at column `col`."""

    line: int
    col: int
    nodes: list[ast.stmt]
    spot: Spot
    placement: Placement


def insertion_point(spot: Spot) -> tuple[int, int]:
    """(0-based line index to insert before, column) in the old source."""
    anchor = spot.anchor
    if anchor is None:
        first = spot.block[0]
        return first.lineno - 1, first.col_offset
    if spot.how == "after":
        return anchor.end_lineno or anchor.lineno, anchor.col_offset
    return anchor.lineno - 1, anchor.col_offset


def apply_insertions(old_src: str, old_tree: ast.Module, insertions: list[Insertion]) -> str:
    """The old source with the insertions' statements spliced in line-wise (comments and
    line numbers kept; each placement's `old_line` set), or, when that does not parse,
    the old tree with the statements inserted, unparsed."""
    if not insertions:
        return old_src
    lines = old_src.splitlines(keepends=True)
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
        source = _apply_ast(old_tree, insertions)
    return source


def _apply_ast(old_tree: ast.Module, insertions: list[Insertion]) -> str:
    """The old tree with the insertions' statements in place, unparsed (comments lost)."""
    inserted: set[int] = set()  # ids of statements put in: later ones go after them
    for ins in insertions:
        block, anchor = ins.spot.block, ins.spot.anchor
        if anchor is None:
            at = 0
        else:
            at = next(k for k, s in enumerate(block) if s is anchor)
            at += 1 if ins.spot.how == "after" else 0
            while ins.spot.how == "after" and at < len(block) and id(block[at]) in inserted:
                at += 1
        inserted.update(id(node) for node in ins.nodes)
        block[at:at] = ins.nodes
    return ast.unparse(old_tree) + "\n"
