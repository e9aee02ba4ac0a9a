"""`export_site(store_root, out_dir, runs_filter=None)`: the UI as a static site.

The same front end, told by a meta tag to read data files instead of the API (see
`static/js/local.js`). Layout of the output::

    index.html                     the shell (mode "static")
    static/                        the front end and vendored libraries
    static/app.bundle.js           its modules as one classic script (pages opened from a file)
    data/index.json                run rows (what the runs table filters and sorts)
    data/runs/<id>/run.json        the run page's data (as /api/runs/<id>)
    data/runs/<id>/series.json     every chartable key (system/ too), downsampled to `points` values
    data/runs/<id>/lineage.json    inputs and consumers (as /api/runs/<id>/lineage), when any
    data/runs/<id>/family.json     parent, forks, segments (as /api/runs/<id>/family), when any
    data/runs/<id>/hist.json       histogram series (model page heat maps)
    data/runs/<id>/media.json      images / artifacts per key
    data/runs/<id>/media/...       image files; artifacts/... up to a size cap
    data/runs/<id>/model/...       model graphs
    data/**/<name>.json.js         each JSON file above as a script (pages opened from a file)

Works from any static host, from `python -m http.server` (`serve_command`), and opened as
a file (double-click): browsers load neither ES modules nor fetch() data on file:// pages,
so there the page runs the bundle and reads the `.json.js` twins. Should bundling fail, a
page opened from a file shows `serve_command` instead. Nothing is fetched from a CDN;
series are downsampled (min/max buckets) so 1,000 runs stay a few tens of MB.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import RunNotFoundError, StoreError
from ..queries.filters import row_filter
from ..store.catalog import Store
from ..store.documents import read_meta, read_summary
from ..store.index import latest_annotation
from ..store.layout import runs_dir
from ..store.reader import RunReader
from ..store.resolve import InvalidRunRefError, run_file, run_path
from ..store.views import SavedViews
from .api import classify
from .app import STATIC_DIR, render_index
from .downsample import json_floats, minmax_indices
from .export_bundle import BUNDLE, BundleError, bundle_modules, graph_twin, script_twin
from .export_code import CodeExport
from .export_panels import export_panels
from .routing import sanitize
from .series import Loaded, hist_series

MARKER = "data/index.json"
# Row fields a published site never carries: a pulled run's `origin` names the team's
# remote (a URL or a path on someone's disk), which is this machine's business only.
PRIVATE_FIELDS = ("origin",)
_WATCH = ("act/", "grad/", "param/")


def serve_command(out_dir: str | Path, port: int = 8000) -> str:
    """The one shell command that serves an exported site at http://127.0.0.1:`port`/.

    Bound to 127.0.0.1: `python -m http.server` alone listens on every interface, which
    would publish the runs to the whole network. The folder is quoted for this OS's shell.
    """
    folder = str(Path(out_dir).resolve())
    quoted = subprocess.list2cmdline([folder]) if os.name == "nt" else shlex.quote(folder)
    return f"python -m http.server --bind 127.0.0.1 -d {quoted} {port}"

def _dump(path: Path, obj: Any, out: Path | None) -> int:
    """Write `obj` as JSON at `path`; with its script twin when `out` (the site) is given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    except ValueError:
        text = json.dumps(sanitize(obj), separators=(",", ":"), default=str)
    path.write_text(text, encoding="utf-8")
    if out is not None:
        script_twin(out, path, text)
    return len(text)


def _prepare(out: Path) -> None:
    """Create `out`, or clear a previous export there; never clobber other files."""
    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise StoreError(f"{out} is not empty and holds no earlier export; pick a new or "
                             "empty directory")
        for name in ("data", "static", "index.html"):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _loop_changes(data: Any, names: list[str]) -> dict[str, list[list[int]]]:
    """Per loop: [[first step, loop index], ...] where the loop index changes.

    Enough for the browser to place values at fractional loop positions (epoch 2.5)
    without shipping a coordinate per value.
    """
    out: dict[str, list[list[int]]] = {}
    if not data.loop_names:
        return out
    steps, ctxs = [], []
    for name in names:
        s = data.series[name]
        steps.append(s.step)
        ctxs.append(s.ctx)
    if not steps:
        return out
    step = np.concatenate(steps)
    ctx = np.concatenate(ctxs)
    order = np.argsort(step, kind="stable")
    step, ctx = step[order], ctx[order]
    for col, loop in enumerate(data.loop_names):
        coord = data.ctx_coords[ctx, col]
        ok = coord >= 0
        if not ok.any():
            continue
        s, c = step[ok], coord[ok]
        change = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
        out[loop] = [[int(s[i]), int(c[i])] for i in change[:100000]]
    return out


def _series_doc(data: Any, created: float | None, points: int) -> dict[str, Any]:
    keys = [n for n, s in data.series.items() if s.role != "arg" and s.kind != "object"
            and s.role != "sys"]
    # System values (the run page's System panel) are charted against wall time: their
    # steps are the sampler's counts, so they take no part in the loops' positions.
    system = [n for n, s in data.series.items() if s.role == "sys" and s.kind != "object"]
    doc: dict[str, Any] = {"created": created, "loops": _loop_changes(data, keys), "series": {}}
    t0 = created or 0.0
    for name in keys + system:
        s = data.series[name]
        y = s.values.astype(np.float64)
        n_points = points // 3 if name.startswith(_WATCH) else points
        keep = minmax_indices(y, max(4, n_points))
        finite = y[np.isfinite(y)]
        entry: dict[str, Any] = {
            "count": len(y), "step": s.step[keep].tolist(),
            "t": json_floats(s.time[keep] - t0, 9), "y": json_floats(y[keep], 6),
            "last": float(y[-1]) if len(y) else None,
            "min": float(finite.min()) if len(finite) else None,
            "max": float(finite.max()) if len(finite) else None,
        }
        if s.replayed.any():
            entry["replayed"] = np.flatnonzero(s.replayed[keep]).tolist()
        doc["series"][name] = entry
    return doc


def _copy_media(run_dir: Path, dest: Path, data: Any, keys: dict[str, list[str]],
                max_artifact_bytes: int, media: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("image", "artifact"):
        for key in keys[kind]:
            s = data.series.get(key)
            if s is None:
                continue
            items = []
            for i, value in enumerate(s.values):
                if not isinstance(value, dict) or "path" not in value:
                    continue
                rel = str(value["path"])
                src = (run_dir / rel).resolve()
                item = {"step": int(s.step[i]), "time": float(s.time[i]),
                        "replayed": bool(s.replayed[i]),
                        **{k: value.get(k) for k in ("$media", "path", "caption", "width",
                                                     "height", "bytes", "dir")}}
                inside = run_dir.resolve() in src.parents
                size = int(value.get("bytes") or 0)
                copy = (media and inside and src.is_file() and not value.get("dir")
                        and (kind == "image" or size <= max_artifact_bytes))
                if copy:
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, target)
                item["exported"] = bool(copy)
                items.append(item)
            out[key] = items
    return out


def export_site(store_root: str | Path, out_dir: str | Path, runs_filter: str | None = None,
                *, points: int = 300, include_hidden: bool = False, media: bool = True,
                max_artifact_bytes: int = 20 * 2**20, files: bool = True,
                snapshots: bool = True) -> dict[str, Any]:
    """Write the static UI site for the runs matching `runs_filter` into `out_dir`.

    Returns ``{"runs", "bytes", "seconds", "out", "serve", "url", "file", "code", "panels"}``
    (`panels`: how many runs got a lineage / family card): `serve` is
    the command that serves the site at `url`; `file` is True when the site also runs
    opened from a file (else why not: the page then shows `serve`). `points`: values
    kept per series (min/max buckets); `media`: copy images and artifacts (artifacts up to
    `max_artifact_bytes` each); `files`: also make it run opened from a file (a script
    bundle and a `.js` twin per data file, about twice the data; a host serving it over
    HTTP, e.g. a deploy, does not need them); `snapshots`: the runs' code (`export_code`).
    """
    t0 = time.perf_counter()
    store = Store(store_root, must_exist=True)
    rows = [{k: v for k, v in row.items() if k not in PRIVATE_FIELDS}
            for row in store.runs(row_filter(runs_filter), include_hidden=include_hidden)]
    out = Path(out_dir)
    _prepare(out)
    shutil.copytree(STATIC_DIR, out / "static",
                    ignore=shutil.ignore_patterns("index.html", "*.map"))
    (out / "index.html").write_text(render_index("static"), encoding="utf-8")
    file_ok: str | bool = "not asked for (files=False)"
    if files:
        try:  # without the bundle, a page opened from a file shows how to serve it
            (out / BUNDLE).write_text(bundle_modules(STATIC_DIR / "js"), encoding="utf-8")
            file_ok = True
        except BundleError as exc:
            file_ok = str(exc)
    twins = out if file_ok is True else None
    (out / ".nojekyll").write_text("")  # GitHub Pages: serve static/ as is
    _dump(out / "data" / "views.json", {"views": SavedViews(store.root).list()}, twins)
    base = runs_dir(store.root)
    kept = []
    code = CodeExport(store.git_dir, out, lambda path, obj: _dump(path, obj, twins))
    for row in rows:
        try:  # the store's resolver: a real run folder inside runs/, never a link
            run_dir = run_path(base, row["id"])
        except RunNotFoundError:
            continue  # deleted since the index saw it
        kept.append(row)
        dest = out / "data" / "runs" / row["id"]
        reader = RunReader(run_dir)
        data = reader.load()
        keys: dict[str, list[str]] = {"chart": [], "image": [], "artifact": [], "hist": [],
                                      "other": []}
        for name, stats in sorted(row["metrics"].items()):
            keys[classify(stats)].append(name)
        meta = read_meta(run_dir) or {}
        models = []
        if (run_dir / "model").is_dir():
            for graph in sorted((run_dir / "model").rglob("graph.json")):
                rel = graph.relative_to(run_dir)
                try:  # never publish a file a link inside the run points to
                    run_file(run_dir, *rel.parts)
                except InvalidRunRefError:
                    continue
                if len(rel.parts) in (2, 3):
                    target = dest / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(graph, target)
                    if twins:
                        graph_twin(out, target)
                    models.append("" if len(rel.parts) == 2 else rel.parts[1])
        kept[-1] = {**row, "models": models}  # the model page's "compare with" list
        _dump(dest / "run.json", {
            "run": row, "meta": meta, "summary": read_summary(run_dir),
            "annotations": latest_annotation(run_dir), "keys": keys, "models": models,
            "snapshot": code.add(meta) if snapshots else None, "static": True}, twins)
        _dump(dest / "series.json", _series_doc(data, row.get("created"), points), twins)
        if keys["hist"]:
            hists = {}
            for key in keys["hist"]:
                s = data.series.get(key)
                hists[key] = {"run": row["id"], "key": key,
                              **hist_series(Loaded(s, data.loop_names, data.ctx_coords), 100)}
            _dump(dest / "hist.json", hists, twins)
        if keys["image"] or keys["artifact"]:
            _dump(dest / "media.json", _copy_media(run_dir, dest, data, keys,
                                                   max_artifact_bytes, media), twins)
    # The run page's lineage and family cards (export_panels.py).
    panels = export_panels(store, kept, out, lambda path, obj: _dump(path, obj, twins))
    # No timestamp: the same runs export to the same bytes (a redeploy pushes nothing).
    rows = kept
    # The filter text is shown as the site's selection, unless it names a private field
    # (`--runs "origin == '/srv/team.git'"` would publish the path it meant to keep).
    shown = None if runs_filter and re.search(rf"\b({'|'.join(PRIVATE_FIELDS)})\b",
                                              runs_filter) else runs_filter
    _dump(out / MARKER, {"version": __version__, "filter": shown, "runs": rows}, twins)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return {"runs": len(rows), "bytes": size, "seconds": time.perf_counter() - t0,
            "out": str(out), "serve": serve_command(out), "url": "http://127.0.0.1:8000/",
            "file": file_ok, "code": code.stats, "panels": panels}
