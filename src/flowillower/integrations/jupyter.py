"""Jupyter: runs started in a notebook record the notebook, and `fw.show()` embeds the UI.

    %load_ext flowillower.integrations.jupyter     # once per kernel (or import this module)
    run = fw.init(project="notebook")
    ...
    show()           # the run's charts inline; a Run as a cell's value shows its page

Once loaded, every run started in the kernel gets `notebook.json` in its directory: the
notebook file (found by the path Jupyter, JupyterLab or VS Code give the kernel, else by
looking in the working directory for the notebook holding the executed cells), a copy of
it (`notebook/<name>.ipynb`), and the cells executed in this kernel, in execution order,
from IPython's history, updated after each cell until the run ends. The working tree's
code snapshot holds the saved .ipynb as for any file, and its rules hold for the copy
and the cells too: a notebook the snapshot leaves out (a secret pattern, a
`.flowillowerignore` line) is named in notebook.json, nothing more. The kernel's own command line
(`ipykernel_launcher -f kernel.json`) is never read as `--kwargs`, and the run's default
name is the notebook's (`<notebook>-<4 hex>`), not `ipykernel_launcher-...`.

`show()` serves the UI of the store from a background thread on 127.0.0.1 (a free port,
started once per store) and displays it in an IFrame; the page's CSP lets local pages
(Jupyter on localhost, VS Code's webviews) frame it. Only this module imports IPython.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from .. import api
from ..run import Run, on_run_created
from ..runinfo import default_name
from ..store.layout import find_store_root

__all__ = ["show", "embed_html", "ui_url", "notebook_path", "executed_cells", "attach",
           "load_ipython_extension", "unload_ipython_extension", "FRAME_ANCESTORS"]

# Who may frame the UI: local notebook servers and VS Code's notebook webviews.
FRAME_ANCESTORS = os.environ.get(
    "FLOWILLOWER_FRAME_ANCESTORS",
    "'self' http://localhost:* http://127.0.0.1:* https://localhost:* https://127.0.0.1:* "
    "vscode-webview: vscode-file:")
MAX_COPY = 50 * 2**20  # a notebook larger than this (big outputs) is not copied
_servers: dict[Path, str] = {}
_server_lock = threading.Lock()
_tracked: weakref.WeakSet[Run] = weakref.WeakSet()
_ended: weakref.WeakSet[Run] = weakref.WeakSet()  # runs whose record is final
_copied: weakref.WeakKeyDictionary[Run, tuple] = weakref.WeakKeyDictionary()
_notebook: Path | None = None  # this kernel's notebook, once found


def _ipython() -> Any:
    """The running IPython shell, or None (plain Python, or IPython not installed)."""
    module = sys.modules.get("IPython")
    if module is None:
        return None
    try:
        return module.get_ipython()
    except Exception:
        return None


def executed_cells(shell: Any = None) -> list[str]:
    """The cells executed in this kernel so far, in execution order (raw source)."""
    shell = shell or _ipython()
    if shell is None:
        return []
    history = getattr(shell.history_manager, "input_hist_raw", None) or []
    return [str(cell) for cell in history[1:]]  # entry 0 is IPython's empty prompt


def notebook_path(shell: Any = None, cells: list[str] | None = None) -> Path | None:
    """The .ipynb this kernel runs: $FLOWILLOWER_NOTEBOOK, VS Code's `__vsc_ipynb_file__`,
    JupyterLab's `__session__`, Jupyter Server's $JPY_SESSION_NAME; else the notebook in
    the working directory whose code cells hold the cells executed so far."""
    shell = shell or _ipython()
    user_ns = getattr(shell, "user_ns", {}) or {}
    for given in (os.environ.get("FLOWILLOWER_NOTEBOOK"), user_ns.get("__vsc_ipynb_file__"),
                  user_ns.get("__session__"), os.environ.get("JPY_SESSION_NAME")):
        if given and str(given).endswith(".ipynb") and Path(given).is_file():
            return Path(given).resolve()
    wanted = [c.strip() for c in (cells if cells is not None else executed_cells(shell))
              if c.strip()]
    if not wanted:
        return None
    best: tuple[int, Path] | None = None
    for path in sorted(Path.cwd().glob("*.ipynb"))[:100]:
        try:
            if path.stat().st_size > MAX_COPY:
                continue
            doc = json.loads(path.read_text(encoding="utf-8"))
            sources = {"".join(c.get("source", "")).strip() for c in doc.get("cells", [])
                       if c.get("cell_type") == "code"}
        except (OSError, ValueError, AttributeError):
            continue
        found = sum(cell in sources for cell in wanted)
        if found and (best is None or found > best[0]):
            best = (found, path.resolve())
    return best[1] if best else None


def _find_notebook(shell: Any, cells: list[str]) -> Path | None:
    """`notebook_path`, looked up once per kernel (a search reads every notebook in the
    folder): the same file is reused while it exists."""
    global _notebook
    if _notebook is None or not _notebook.is_file():
        _notebook = notebook_path(shell, cells)
    return _notebook


def _record(run: Run) -> None:
    """Write (or update) the run's notebook.json and its copy of the notebook (copied
    again only when the file changed since the last copy)."""
    shell = _ipython()
    cells = executed_cells(shell)
    path = _find_notebook(shell, cells)
    git = json.loads((run.dir / "run.json").read_text(encoding="utf-8")).get("git")
    if run.capture_code and (not isinstance(git, dict) or "root" not in git):
        return  # the snapshot is not taken yet: its rules decide what may be kept
    why = _left_out(path, git) if path is not None else None
    if why is not None:  # a secret or .flowillowerignore'd notebook stays out of the run too
        doc = {"path": str(path), "copy": None, "cells": [], "left_out": why}
        _write(run, doc)
        return
    copied = None
    if path is not None:
        stat = path.stat()
        target = run.dir / "notebook" / path.name
        if stat.st_size <= MAX_COPY:
            copied = f"notebook/{path.name}"
            if _copied.get(run) != (path, stat.st_size, stat.st_mtime_ns):
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                _copied[run] = (path, stat.st_size, stat.st_mtime_ns)
    doc = {"path": str(path) if path else None, "copy": copied,
           "cells": [{"index": i + 1, "source": source} for i, source in enumerate(cells)],
           "replay": "a replay runs these cells, in execution order, as one script "
                     "(flowillower replay NAME); magics and shell escapes are refused"}
    _write(run, doc)


def _left_out(path: Path, git: Any) -> str | None:
    """Why the code snapshot left the notebook out (a secret pattern, .flowillowerignore),
    or None: the notebook's copy and cells follow the snapshot's rules."""
    if not isinstance(git, dict) or not git.get("root"):
        return None
    rel = os.path.relpath(path, git["root"]).replace(os.sep, "/")
    for entry in git.get("left_out") or []:
        if isinstance(entry, list) and entry and entry[0] == rel:
            return str(entry[1]) if len(entry) > 1 else "left out"
    return None


def _write(run: Run, doc: dict[str, Any]) -> None:
    # Rewritten after every cell: compact JSON (C encoder), through a rename as always.
    target = run.dir / "notebook.json"
    tmp = target.with_name(f".notebook.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(doc, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, target)


def _after_cell(*_args: Any) -> None:
    """IPython's post_run_cell: bring the notebook record of every run on disk up to date;
    a run that ended gets its last update (the cells up to the one that ended it)."""
    for run in list(_tracked):
        if run in _ended or not (run.dir / "run.json").is_file():
            continue
        try:
            _record(run)
        except Exception:  # bookkeeping never breaks the user's cell
            pass
        if run.status is not None:
            _ended.add(run)


def attach(run: Run) -> None:
    """Creation hook: in an IPython kernel, name the run after its notebook and record
    the notebook as cells run (registered by loading this module)."""
    shell = _ipython()
    if shell is None or run.rank != 0:
        return
    if run.name == default_name(run.id):  # the user gave no name
        path = _find_notebook(shell, executed_cells(shell))
        run.name = f"{path.stem if path else 'notebook'}-{run.id[-4:]}"
    _tracked.add(run)


def load_ipython_extension(shell: Any) -> None:
    """`%load_ext flowillower.integrations.jupyter`: record notebooks with their runs and
    show runs inline (`display(run)` or a run as a cell's value)."""
    events = shell.events
    if _after_cell not in events.callbacks.get("post_run_cell", []):
        events.register("post_run_cell", _after_cell)
    html = shell.display_formatter.formatters["text/html"]
    html.for_type(Run, lambda run: embed_html(runs=[run], page="run"))


def unload_ipython_extension(shell: Any) -> None:
    """`%unload_ext flowillower.integrations.jupyter`: stop recording notebooks with runs
    and showing runs inline (runs already created stay tracked until they end)."""
    if _after_cell in shell.events.callbacks.get("post_run_cell", []):
        shell.events.unregister("post_run_cell", _after_cell)
    shell.display_formatter.formatters["text/html"].pop(Run, None)


def _frameable(app: Any) -> Any:
    """The UI's ASGI app, with `frame-ancestors` opened to local notebook pages (the UI
    forbids framing everywhere else)."""
    async def wrapped(scope: dict, receive: Any, send: Any) -> None:
        async def send_framed(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v.replace(b"frame-ancestors 'none'",
                                         b"frame-ancestors " + FRAME_ANCESTORS.encode()))
                           if k.lower() == b"content-security-policy" else (k, v)
                           for k, v in message.get("headers", [])]
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, send_framed)

    return wrapped


def ui_url(dir: str | os.PathLike[str] | None = None, timeout: float = 30.0) -> str:
    """The address of the UI of the store at `dir` (default: the usual store), starting
    it in a daemon thread on 127.0.0.1 the first time."""
    root = find_store_root(dir)
    with _server_lock:
        if root in _servers:
            return _servers[root]
        import socket

        import uvicorn

        from ..server.app import create_app

        (root / "runs").mkdir(parents=True, exist_ok=True)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(_frameable(create_app(root)), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        threading.Thread(target=server.run, name="flowillower-ui", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if time.monotonic() > deadline or getattr(server, "should_exit", False):
                raise RuntimeError(f"the flowillower UI did not start on port {port}")
            time.sleep(0.02)
        _servers[root] = url = f"http://127.0.0.1:{port}/"
        return url


def _run_ids(runs: Any) -> list[str]:
    if runs is None:
        return []
    items = runs if isinstance(runs, (list, tuple, set)) else [runs]
    return [item.id if isinstance(item, Run) else str(item) for item in items]


def embed_html(runs: Any = None, page: str = "runs", height: int = 600,
               dir: str | os.PathLike[str] | None = None) -> str:
    """The IFrame `show` displays: `page` is "runs" (the table), "charts" or "run" (the
    first of `runs`' page); `runs` (Runs or ids) are the selection."""
    import html
    from urllib.parse import quote

    ids = _run_ids(runs)
    for item in runs if isinstance(runs, (list, tuple)) else [runs]:
        if isinstance(item, Run) and item.status is None:
            item.flush()  # the page shows what was logged up to now
            if dir is None:
                dir = item.store_root
    if page not in ("runs", "charts", "run"):
        raise ValueError(f"page must be 'runs', 'charts' or 'run', not {page!r}")
    if page == "run" and not ids:
        raise ValueError("page='run' needs a run")
    target = {"runs": "", "charts": "charts", "run": f"run/{quote(ids[0] if ids else '')}"}
    fragment = "#/" + target[page] + (f"?sel={','.join(quote(i) for i in ids)}" if ids else "")
    src = ui_url(dir) + fragment
    return (f'<iframe src="{html.escape(src, quote=True)}" width="100%" height="{int(height)}"'
            f' style="border:1px solid #ddd" title="flowillower"></iframe>')


class _Embed:
    def __init__(self, markup: str) -> None:
        self.markup = markup

    def _repr_html_(self) -> str:
        return self.markup


def show(runs: Any = None, page: str | None = None, height: int = 600,
         dir: str | os.PathLike[str] | None = None) -> None:
    """Display the UI inline in a notebook: the runs table, or the charts of `runs` (Runs
    or ids; default the current run, if any). Outside a notebook, print its address."""
    if runs is None:
        current = api.open_run()
        runs = [current] if current is not None else None
    markup = embed_html(runs, page or ("charts" if runs else "runs"), height, dir)
    shell = _ipython()
    if shell is None:
        src = markup.split('src="', 1)[1].split('"', 1)[0]
        print(f"flowillower UI: {src}")
        return
    from IPython.display import display

    display(_Embed(markup))


on_run_created(attach)
_shell = _ipython()
if _shell is not None and hasattr(_shell, "events"):  # imported inside a kernel
    load_ipython_extension(_shell)
