"""Views of a stored graph: module level (default), any call depth, op level.

Pure Python (no torch): the CLI and the server use it on graphs read from a run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["collapse", "module_view", "op_view"]


def collapse(graph: Mapping[str, Any], depth: int | None = None, *,
             expand: Iterable[str] = (), ops: bool = False) -> dict[str, Any]:
    """A view of `graph`: ``{"nodes": [...], "edges": [...], "groups": [...]}``.

    A module call is *collapsed* (drawn as one node hiding everything it ran) when it
    made no nested module calls (the default module-level view), or when its call depth
    (root 0, modules called by the root 1, ...) is ``>= depth``; paths in ``expand`` stay
    open; ``ops=True`` collapses nothing (op-level view). Every atomic node is represented
    by its outermost collapsed enclosing call, or by itself. Edges are mapped to the
    representatives; edges inside one representative are dropped and duplicates merged.
    ``groups`` lists the open module calls that contain visible nodes (for clustering).
    """
    nodes = graph.get("nodes", [])
    by_id = {n["id"]: n for n in nodes}
    opened = set(expand)
    has_child_call = {n["group"] for n in nodes if n["kind"] == "module" and n["group"]}
    depth_of: dict[str, int] = {}

    def call_depth(nid: str) -> int:
        d = depth_of.get(nid)
        if d is None:
            g = by_id[nid].get("group")
            d = 0 if g is None or g not in by_id else call_depth(g) + 1
            depth_of[nid] = d
        return d

    def is_collapsed(n: Mapping[str, Any]) -> bool:
        if ops or n["kind"] != "module" or n["path"] in opened:
            return False
        if depth is not None and call_depth(n["id"]) >= depth:
            return True
        return n["id"] not in has_child_call

    rep_of: dict[str, str] = {}

    def rep(nid: str) -> str:
        r = rep_of.get(nid)
        if r is not None:
            return r
        chain = []
        cur: str | None = nid
        while cur is not None and cur in by_id:
            chain.append(cur)
            cur = by_id[cur].get("group")
        r = nid
        for cid in reversed(chain):  # outermost first
            if is_collapsed(by_id[cid]):
                r = cid
                break
        rep_of[nid] = r
        return r

    visible = []
    groups = []
    for n in nodes:
        r = rep(n["id"])
        if r != n["id"]:
            continue
        if n["kind"] == "module" and not is_collapsed(n):
            groups.append(n)
        else:
            visible.append(n)
    edges = []
    seen: set[tuple] = set()
    for e in graph.get("edges", []):
        s, d = rep(e["src"]), rep(e["dst"])
        if s == d:
            continue
        key = (s, d, tuple(e["shape"]), e["dtype"])
        if key in seen:
            continue
        seen.add(key)
        edges.append({**e, "src": s, "dst": d})
    return {"nodes": visible, "edges": edges, "groups": groups}


def module_view(graph: Mapping[str, Any]) -> dict[str, Any]:
    """The default module-level view: `collapse(graph)`."""
    return collapse(graph)


def op_view(graph: Mapping[str, Any]) -> dict[str, Any]:
    """The fully expanded op-level view: `collapse(graph, ops=True)`."""
    return collapse(graph, ops=True)
