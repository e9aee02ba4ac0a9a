"""Pages of an exported site opened from a file: the UI's modules as one classic script.

Chromium and Firefox refuse ES modules and fetch() on file:// pages, but run classic
scripts. So the export also writes static/app.bundle.js (every module wrapped in a
function, imports rewritten to a lookup) and, next to each data file, a `.js` twin that
hands its JSON to the page; a fetch shim (file:// only) loads those twins. Split out of
`export.py` (which re-exports these names).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .routing import sanitize

__all__ = ["BUNDLE", "BundleError", "bundle_modules", "graph_twin", "script_twin"]

BUNDLE = "static/app.bundle.js"
_IMPORT = re.compile(r'^import\s*\{([^}]*)\}\s*from\s*"\./([\w-]+\.js)";?[ \t]*$', re.M)
_DYNAMIC = re.compile(r'\bimport\(\s*"\./([\w-]+\.js)"\s*\)')
_EXPORT = re.compile(r"^export\s+((?:async\s+)?function\*?|class|const|let|var)\s+([\w$]+)",
                     re.M)
_LEFT = re.compile(r"^\s*(?:import|export)\b|\bimport\s*(?:\(|\.meta)", re.M)
_PRELUDE = """\
"use strict";
const defs = {}, mods = {};
function req(name) {
  if (!mods[name]) { mods[name] = {}; defs[name](mods[name]); }
  return mods[name];
}
if (location.protocol === "file:") {
  const waiting = new Map();
  window.__fwData = (path, data) => {
    const todo = waiting.get(path) || [];
    waiting.delete(path);
    todo.forEach((done) => done(data));
  };
  const realFetch = window.fetch;
  window.fetch = function (input, init) {
    const url = typeof input === "string" ? input : input.url;
    if (!/^data\\//.test(url)) return realFetch.call(this, input, init);
    const path = decodeURIComponent(url.split("?")[0]);
    return new Promise((resolve) => {
      const reply = (body, status, statusText) => resolve(new Response(body, {
        status, statusText, headers: { "Content-Type": "application/json" } }));
      if (!waiting.has(path)) waiting.set(path, []);
      waiting.get(path).push((data) => reply(JSON.stringify(data), 200, "OK"));
      const s = document.createElement("script");
      s.src = url.split("?")[0] + ".js";
      s.onerror = () => { waiting.delete(path); reply("", 404, "Not Found"); s.remove(); };
      s.onload = () => s.remove();
      document.head.appendChild(s);
    });
  };
}
"""


class BundleError(ValueError):
    """A module uses syntax the bundler does not rewrite (the export then needs HTTP)."""


def _module(name: str, text: str) -> str:
    def imp(m: re.Match[str]) -> str:
        names = [n.strip().replace(" as ", ": ") for n in m.group(1).split(",") if n.strip()]
        return f'const {{ {", ".join(names)} }} = req("{m.group(2)}");'

    body = _IMPORT.sub(imp, text)
    body = _DYNAMIC.sub(lambda m: f'Promise.resolve().then(() => req("{m.group(1)}"))', body)
    names = [m.group(2) for m in _EXPORT.finditer(body)]
    body = _EXPORT.sub(lambda m: f"{m.group(1)} {m.group(2)}", body)
    left = _LEFT.search(body)
    if left:
        line = body[:left.start()].count("\n") + 1
        raise BundleError(f"{name}:{line}: cannot bundle {left.group(0).strip()!r}")
    getters = ", ".join(f"{n}: {{ get: () => {n}, enumerable: true }}" for n in names)
    # Getters are defined first: exports are live bindings, as in a module.
    return (f'defs["{name}"] = function (__exports) {{\n'
            f"Object.defineProperties(__exports, {{ {getters} }});\n{body}\n}};\n")


def _static_imports(text: str) -> list[str]:
    return [m.group(2) for m in _IMPORT.finditer(text)]


def bundle_modules(js_dir: Path, entry: str = "app.js") -> str:
    """Every module in `js_dir` as one classic script that starts `entry`.

    Raises `BundleError` for syntax it does not rewrite, and for import cycles (a
    destructured import would read a binding before its module ran).
    """
    sources = {p.name: p.read_text(encoding="utf-8") for p in sorted(js_dir.glob("*.js"))}
    state: dict[str, int] = {}

    def visit(name: str) -> None:  # depth-first: 1 = in progress, 2 = done
        if state.get(name) == 1:
            raise BundleError(f"import cycle through {name}")
        if state.get(name) == 2:
            return
        if name not in sources:
            raise BundleError(f"{name} is imported but missing")
        state[name] = 1
        for dep in _static_imports(sources[name]):
            visit(dep)
        state[name] = 2

    for name in sources:
        visit(name)
    parts = [_module(name, text) for name, text in sources.items()]
    start = (f'const go = () => req("{entry}");\n'
             'if (document.readyState === "loading") '
             'document.addEventListener("DOMContentLoaded", go); else go();\n')
    return ("// flowillower: the UI's modules in one classic script, for pages opened from a\n"
            "// file (written by `flowillower export`; the served site uses the modules).\n"
            "(function () {\n" + _PRELUDE + "".join(parts) + start + "})();\n")


def script_twin(out: Path, path: Path, text: str) -> None:
    """`path`'s JSON as a classic script: how a file:// page reads data it cannot fetch."""
    key = json.dumps(path.relative_to(out).as_posix())
    path.with_name(path.name + ".js").write_text(f"window.__fwData({key}, {text});\n",
                                                 encoding="utf-8")


def graph_twin(out: Path, graph: Path) -> None:
    """A copied graph.json's twin, re-encoded: the file comes from a run (maybe a hostile
    teammate's), and its text pasted into a script as is could run code. Not JSON: no
    twin (the page then says the file is missing)."""
    try:
        obj = json.loads(graph.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return
    script_twin(out, graph, json.dumps(sanitize(obj), separators=(",", ":"), default=str))
