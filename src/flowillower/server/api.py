"""The JSON API: one view per endpoint and the route table declaring them.

Views are plain functions (run in a worker thread by `routing.make_route`) that validate
references through `StoreView`, read through the store and the series cache, and return
dicts. Every UI page draws from these endpoints: they are the pages' JSON twins.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from starlette.responses import FileResponse, Response

from .. import __version__
from ..errors import FlowillowerError, GitError, RunNotFoundError
from ..gitops.paths import safe_rel
from ..store.documents import read_meta, read_summary
from ..store.index import latest_annotation
from ..store.resolve import InvalidRunRefError, run_file
from .answer_cache import AnswerCache
from .code_view import code_diff, file_doc, search_contents, snapshot_sha, snapshot_tree
from .columns import is_watch
from .live import live_series
from .model_runs import model_names, model_run_endpoints
from .panels_api import panel_endpoints
from .routing import ApiError, Endpoint, P
from .security import safe_run_file
from .series import chart_series, hist_series
from .series_cache import SeriesCache
from .store_view import StoreView

_MODEL_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")
_IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"}
# Served run files can't run scripts, even an SVG or HTML artifact opened directly.
_FILE_HEADERS = {"X-Content-Type-Options": "nosniff",
                 "Content-Security-Policy": "default-src 'none'; img-src 'self' data:; "
                                            "style-src 'unsafe-inline'; sandbox"}


def classify(stats: dict[str, Any]) -> str:
    """What a key's values are: chart, image, artifact, hist or other."""
    if stats.get("kind") in ("float", "int"):
        return "chart"
    last = stats.get("last")
    if isinstance(last, dict):
        if last.get("$media") in ("image", "artifact"):
            return str(last["$media"])
        if isinstance(last.get("counts"), list) and "min" in last and "max" in last:
            return "hist"
    return "other"


def args_diff(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Arg changes from `a` to `b`, sorted by key: `added`, `removed` or `changed`.

    Values compare by their JSON text, as `flowillower diff` does (1 and 1.0 differ).
    """
    out = []
    for key in sorted(set(a) | set(b)):
        if key not in a:
            out.append({"key": key, "change": "added", "b": b[key]})
        elif key not in b:
            out.append({"key": key, "change": "removed", "a": a[key]})
        elif json.dumps(a[key], default=str) != json.dumps(b[key], default=str):
            out.append({"key": key, "change": "changed", "a": a[key], "b": b[key]})
    return out


class Api:
    """The views of the JSON API over one `StoreView`."""

    def __init__(self, view: StoreView, token: str | None = None) -> None:
        self.view = view
        self.series_cache = SeriesCache()
        self.answers = AnswerCache()  # chart answers, while their series are unchanged
        self.auth = "token" if token else "loopback"

    # -- store level -------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        rows = self.view.rows()
        return {"version": __version__, "store": str(self.view.root), "runs": len(rows),
                "generation": self.view.generation, "auth": self.auth, "static": False,
                "running": sum(1 for r in rows if r["status"] == "running")}

    def runs(self, q: str | None, sort: str, desc: bool, offset: int, limit: int,
             group: str | None, col: list[str], hidden: bool) -> dict[str, Any]:
        return self.view.table(q=q, sort=sort, desc=desc, offset=offset, limit=limit,
                               group=group or None, cols=col or None, hidden=hidden)

    def points(self, dim: list[str], q: str | None, hidden: bool, limit: int
               ) -> dict[str, Any]:
        if not dim:
            raise ApiError(400, "give at least one dim= column (e.g. arg:lr, last:loss)",
                           "dim")
        return self.view.points(dim, q=q, hidden=hidden, limit=limit)

    def keys(self, run: list[str]) -> dict[str, Any]:
        """The chartable metrics and loops of some runs (what the charts page offers)."""
        if not run:
            raise ApiError(400, "give at least one run= id", "run")
        runs, counts, loops = [], {}, {}
        watch: set[str] = set()
        for ref in dict.fromkeys(run):
            row = self.view.row(self.view.resolve(ref))
            if row is None:
                continue
            runs.append({k: row.get(k) for k in ("id", "name", "status", "created",
                                                  "loops", "args", "tags")})
            for loop in row.get("loops") or []:
                loops[loop] = None
            for name, stats in row["metrics"].items():
                if classify(stats) == "chart":
                    counts[name] = counts.get(name, 0) + 1
                    if is_watch(name, stats):
                        watch.add(name)
        metrics = [{"name": n, "runs": c, "watch": n in watch} for n, c in sorted(counts.items())]
        return {"runs": runs, "metrics": metrics, "loops": list(loops)}

    # -- one run -----------------------------------------------------------------------
    def run(self, run: str) -> dict[str, Any]:
        run_dir = self.view.run_dir(run)
        run_id = run_dir.name
        row = self.view.row(run_id)
        if row is None:
            self.view.refresh(wait=True)
            row = self.view.row(run_id)
        if row is None:
            raise ApiError(404, f"run {run_id} is not indexed yet; try again")
        keys: dict[str, list[str]] = {"chart": [], "image": [], "artifact": [], "hist": [],
                                      "other": []}
        for name, stats in sorted(row["metrics"].items()):
            keys[classify(stats)].append(name)
        meta = read_meta(run_dir) or {}
        return {"run": row, "meta": meta, "summary": read_summary(run_dir),
                "annotations": latest_annotation(run_dir), "keys": keys,
                "models": self._models(run_dir),
                "snapshot": (meta.get("git") or {}).get("snapshot")}

    def annotate(self, run: str, body: dict[str, Any]) -> dict[str, Any]:
        run_id = self.view.resolve(run)
        fields = {k: body[k] for k in ("notes", "hidden", "tags") if k in body}
        if not fields:
            raise ApiError(400, "send at least one of notes, hidden, tags")
        try:
            self.view.store.annotate(run_id, **fields)
        except (FlowillowerError, ValueError, OSError) as exc:
            raise ApiError(400, str(exc)) from None
        self.view.refresh(wait=True)
        return {"ok": True, "run": self.view.row(run_id)}

    def delete(self, run: str) -> dict[str, Any]:
        run_id = self.view.resolve(run)
        try:
            self.view.store.delete(run_id)
        except RunNotFoundError as exc:
            raise ApiError(404, str(exc)) from None
        self.view.refresh(wait=True)
        return {"ok": True, "deleted": run_id}

    def series(self, run: list[str], key: str, x: str, points: int, x0: float | None,
               x1: float | None, after: list[int], also: list[str]) -> dict[str, Any]:
        if not run:
            raise ApiError(400, "give at least one run= id", "run")
        if after and len(after) != len(run):
            raise ApiError(400, "give one after= cursor per run= (same order)", "after")
        if x0 is not None and x1 is not None and x0 > x1:
            raise ApiError(400, "x0 must be <= x1", "x0")
        other_key = x[len("metric:"):] if x.startswith("metric:") else None
        items = []
        for ref in dict.fromkeys(run):  # each run once, in the order given
            run_dir = self.view.run_dir(ref)
            run_id = run_dir.name
            names = [key] + ([other_key] if other_key else [])
            got = self.series_cache.get(run_dir, names, also[:64])
            row = self.view.row(run_id) or {}
            items.append((run_id, got[key], got.get(other_key) if other_key else None,
                          row.get("created")))
        if after:  # live: only what came after each cursor (see live.py)
            resets = [self.series_cache.needs_reset(rid, key, c)
                      for (rid, *_), c in zip(items, after)]
            return live_series(items, key, x, points, after, resets)
        versions = [(it[0], it[1].version, it[2].version if it[2] else None) for it in items]
        memo = None if any(v[1] is None for v in versions) else (
            "series", tuple(versions), key, x, points, x0, x1)
        return self.answers.get(memo, lambda: chart_series(items, key, x, points, x0, x1,
                                                           None))

    def hist(self, run: str, key: str, points: int) -> dict[str, Any]:
        run_dir = self.view.run_dir(run)
        loaded = self.series_cache.get(run_dir, [key])[key]
        if loaded.series is None:
            raise ApiError(404, f"run {run_dir.name} has no series {key!r}")
        return {"run": run_dir.name, "key": key, **hist_series(loaded, points)}

    def media(self, run: str, key: str) -> dict[str, Any]:
        run_dir = self.view.run_dir(run)
        loaded = self.series_cache.get(run_dir, [key])[key]
        s = loaded.series
        if s is None:
            raise ApiError(404, f"run {run_dir.name} has no media {key!r}")
        items = []
        for i, value in enumerate(s.values):
            if isinstance(value, dict) and "$media" in value:
                items.append({"step": int(s.step[i]), "time": float(s.time[i]),
                              "replayed": bool(s.replayed[i]),
                              **{k: value.get(k) for k in ("$media", "path", "caption",
                                                           "width", "height", "bytes", "dir")}})
        return {"run": run_dir.name, "key": key, "items": items}

    def file(self, run: str, path: str, download: bool) -> Response:
        run_dir = self.view.run_dir(run)
        target = safe_run_file(run_dir, path)
        headers = dict(_FILE_HEADERS)
        inline = target.suffix.lower() in _IMAGE_TYPES or not download
        return FileResponse(target, headers=headers,
                            content_disposition_type="inline" if inline else "attachment",
                            filename=target.name if not inline else None)

    @staticmethod
    def _models(run_dir: Path) -> list[str]:
        return model_names(run_dir)

    def models(self, run: str) -> dict[str, Any]:
        run_dir = self.view.run_dir(run)
        return {"run": run_dir.name, "models": self._models(run_dir)}

    def model(self, run: str, name: str | None) -> Response:
        run_dir = self.view.run_dir(run)
        if name and (not _MODEL_NAME.match(name) or name in (".", "..")):
            raise ApiError(400, "model name must match [A-Za-z0-9_.-]+", "name")
        try:  # a link inside the run must not serve a file from elsewhere
            path = run_file(run_dir, "model", *([name] if name else []), "graph.json")
        except InvalidRunRefError as exc:
            raise ApiError(403, str(exc)) from None
        if not path.is_file():
            raise ApiError(404, f"run {run_dir.name} has no model graph"
                           + (f" named {name!r}" if name else "")
                           + "; log one with fw.log_model(model, example_input)")
        # Shipped as stored: no parse / re-encode of a possibly large document.
        return FileResponse(path, media_type="application/json")

    # -- code (server/code_view.py) -----------------------------------------------------
    def _snapshot(self, run: str) -> tuple[str, str]:
        run_dir = self.view.run_dir(run)
        sha = snapshot_sha(read_meta(run_dir) or {})
        if sha is None:
            raise ApiError(404, f"run {run_dir.name} has no code snapshot")
        return run_dir.name, sha

    def code(self, run: str) -> dict[str, Any]:
        run_id, sha = self._snapshot(run)
        try:
            tree = snapshot_tree(self.view.store.git_dir, sha)
        except (GitError, OSError) as exc:
            raise ApiError(404, f"snapshot {sha[:10]} of run {run_id} is not in this store "
                           f"({exc}); `flowillower pull` may bring it") from None
        return {"run": run_id, "snapshot": sha, "files": [e["path"] for e in tree],
                "tree": tree, "search": True}

    def code_file(self, run: str, path: str) -> dict[str, Any]:
        run_id, sha = self._snapshot(run)
        if ":" in path or not safe_rel(path):  # `:` would change what `sha:path` names
            raise ApiError(400, "bad path in snapshot", "path")
        from ..gitops.snapshot import read_file

        try:
            data = read_file(self.view.store.git_dir, sha, path)
        except (GitError, OSError):
            raise ApiError(404, f"no file {path!r} in the snapshot of run {run_id}") from None
        return {"run": run_id, "path": path, **file_doc(data)}

    def code_search(self, run: str, text: str) -> dict[str, Any]:
        run_id, sha = self._snapshot(run)
        try:
            paths = search_contents(self.view.store.git_dir, sha, text)
        except (GitError, OSError) as exc:
            raise ApiError(404, f"cannot search the snapshot of run {run_id}: {exc}") from None
        return {"run": run_id, "text": text, "paths": paths}

    def diff(self, a: str, b: str) -> dict[str, Any]:
        """How run `b` differs from run `a`: args (like `flowillower diff`), then code.

        A run without a code snapshot (or whose snapshot was never pulled) still gets
        its arg differences; `code_error` says why there is no code diff.
        """
        run_a, run_b = self.view.resolve(a), self.view.resolve(b)
        if self.view.row(run_a) is None or self.view.row(run_b) is None:
            self.view.refresh(wait=True)  # a run newer than the last sync
        rows = [self.view.row(r) or {} for r in (run_a, run_b)]
        out: dict[str, Any] = {"a": run_a, "b": run_b,
                               "args": args_diff(rows[0].get("args") or {},
                                                 rows[1].get("args") or {}),
                               "diff": None, "truncated": False, "code_error": None}
        try:
            (_, sha_a), (_, sha_b) = self._snapshot(run_a), self._snapshot(run_b)
        except ApiError as exc:
            out["code_error"] = exc.message
            return out
        try:
            text, cut = code_diff(self.view.store.git_dir, sha_a, sha_b)
        except (GitError, OSError) as exc:
            out["code_error"] = f"cannot diff the snapshots: {exc}"
            return out
        out.update(snapshot_a=sha_a, snapshot_b=sha_b, diff=text, truncated=cut)
        return out

    # -- the route table ---------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        run = P("run", where="path", required=True, max_length=200,
                description="run id, unique id prefix or unique name")
        q = P("q", description="filter: plain words, an expression (lr < 0.1 and "
                               "status == 'success') or fitlog's ${'hyper-lr':'<0.1'}$; "
                               "names resolve against the listed runs (the answer's "
                               "filter.names), an unknown or ambiguous one is a 400")
        hidden = P("hidden", "boolean", default=False, description="include hidden runs")
        return [
            Endpoint("GET", "/api/info", self.info, "Store facts: run count, version, auth",
                     tag="store"),
            Endpoint("GET", "/api/runs", self.runs, "One page of the runs table", [
                q, P("sort", default="created", max_length=300,
                     description="column key: a field, arg:NAME, last:M, best:M, min:M..."),
                P("desc", "boolean", default=True), P("offset", "integer", default=0,
                                                       minimum=0, maximum=10**9),
                P("limit", "integer", default=100, minimum=1, maximum=5000),
                P("group", max_length=300, description="group rows by a column (arg:NAME)"),
                P("col", many=True, max_length=300, description="columns to fill in rows"),
                hidden]),
            Endpoint("GET", "/api/points", self.points,
                     "Columns of all matched runs (scatter / parallel coordinates)", [
                         P("dim", many=True, max_length=300, description="column key"),
                         q, hidden, P("limit", "integer", default=10000, minimum=1,
                                      maximum=100000)]),
            Endpoint("GET", "/api/keys", self.keys,
                     "Chartable metrics and loops of some runs", [
                         P("run", many=True, max_length=200, description="run ids")],
                     tag="series"),
            Endpoint("GET", "/api/series", self.series,
                     "One metric of several runs, downsampled for a chart", [
                         P("run", many=True, max_length=200, description="run ids"),
                         P("key", required=True, max_length=500, description="metric name"),
                         P("x", default="step", max_length=500,
                           description="step, time, rel, a loop name or metric:NAME"),
                         P("points", "integer", default=1000, minimum=2, maximum=100000,
                           description="at most this many points per run"),
                         P("x0", "number", description="zoom window start (full resolution)"),
                         P("x1", "number", description="zoom window end"),
                         P("after", "integer", many=True, minimum=0, maximum=10**12,
                           description="per-run cursor: only points after it (live)"),
                         P("also", many=True, max_length=500,
                           description="keys the client asks for next: decoded in the "
                                       "same pass over each run file")],
                     tag="series"),
            Endpoint("GET", "/api/runs/{run}", self.run,
                     "A run: args, metrics, environment, git, keys, models", [run]),
            Endpoint("PATCH", "/api/runs/{run}", self.annotate,
                     "Edit a run's notes, tags or hidden flag", [run],
                     body={"type": "object", "additionalProperties": False, "properties": {
                         "notes": {"type": "string", "maxLength": 100000},
                         "hidden": {"type": "boolean"},
                         "tags": {"type": "array", "maxItems": 100,
                                  "items": {"type": "string", "maxLength": 200}}}},
                     mutating=True),
            Endpoint("DELETE", "/api/runs/{run}", self.delete, "Delete a run for good", [run],
                     mutating=True),
            Endpoint("GET", "/api/runs/{run}/hist", self.hist,
                     "A histogram series over steps (heat map)", [
                         run, P("key", required=True, max_length=500),
                         P("points", "integer", default=200, minimum=1, maximum=5000)],
                     tag="series"),
            Endpoint("GET", "/api/runs/{run}/media", self.media,
                     "Images / artifacts of one key, per step", [
                         run, P("key", required=True, max_length=500)], tag="media"),
            Endpoint("GET", "/api/runs/{run}/files/{path:path}", self.file,
                     "A file under the run's media/ or artifacts/", [
                         run, P("path", where="path", required=True, max_length=1000),
                         P("download", "boolean", default=False)], tag="media"),
            *model_run_endpoints(self.view), *panel_endpoints(self.view),
            Endpoint("GET", "/api/runs/{run}/models", self.models,
                     "Names of the run's model graphs", [run], tag="model"),
            Endpoint("GET", "/api/runs/{run}/model", self.model,
                     "A model graph (docs/model.md format)", [
                         run, P("name", max_length=100, description="'' = the main model")],
                     tag="model"),
            Endpoint("GET", "/api/runs/{run}/code", self.code,
                     "Files of the run's code snapshot", [run], tag="code"),
            Endpoint("GET", "/api/runs/{run}/code/file", self.code_file,
                     "One file of the run's code snapshot", [
                         run, P("path", required=True, max_length=1000)], tag="code"),
            Endpoint("GET", "/api/runs/{run}/code/search", self.code_search,
                     "Paths of the snapshot's files containing a text", [
                         run, P("text", required=True, max_length=200,
                                description="literal, case-insensitive")], tag="code"),
            Endpoint("GET", "/api/diff", self.diff, "Arg and code differences of two runs", [
                P("a", required=True, max_length=200), P("b", required=True, max_length=200)],
                tag="code"),
        ]
