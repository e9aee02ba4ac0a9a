"""Matching the statements of two versions of a script (for the transplant).

`align` pairs a block's statements with their counterparts in the old version's block:
exact statements first (longest common subsequence), then statements equal up to
variable names, then moved statements that occur once. `pair_names` and `Rename` carry
variables the old version calls differently.
"""

from __future__ import annotations

import ast
import copy
import difflib

from .syntax import COMPOUND, loop_name

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


def header(stmt: ast.stmt) -> list[ast.AST] | str:
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
    if isinstance(stmt, COMPOUND):
        head = header(stmt)
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


def pair_names(new: ast.AST, old: ast.AST, out: dict[str, set[str]]) -> None:
    """Collect new-name -> old-name correspondences of two structurally equal nodes."""
    new_names = [n for n in ast.walk(new) if isinstance(n, (ast.Name, ast.arg))]
    old_names = [n for n in ast.walk(old) if isinstance(n, (ast.Name, ast.arg))]
    if len(new_names) != len(old_names):
        return
    for a, b in zip(new_names, old_names):
        ida = a.id if isinstance(a, ast.Name) else a.arg
        idb = b.id if isinstance(b, ast.Name) else b.arg
        out.setdefault(ida, set()).add(idb)


class Rename(ast.NodeTransformer):
    def __init__(self, mapping: dict[str, str]) -> None:
        self.mapping = mapping

    def visit_Name(self, node: ast.Name) -> ast.AST:
        if node.id in self.mapping:
            return ast.copy_location(ast.Name(id=self.mapping[node.id], ctx=node.ctx), node)
        return node
