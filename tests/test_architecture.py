"""The house drawn from the imports reads top-down, with no arrow climbing back up.

Every module under src/flowillower is parsed (never imported) and every import statement
counts: top-level ones, deferred ones inside functions and `if TYPE_CHECKING:` ones (a
type-only import still ties two modules together for a reader). Relative imports are
resolved. Three rules:

(a) no import circle among flowillower modules;
(b) a module never imports one of a higher layer (`LAYERS` below);
(c) no module reads another module's underscore names through its alias (`api._x`), nor
    a `Run`'s (`run._x`) outside run.py.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

PKG = "flowillower"
SRC = Path(__file__).resolve().parents[1] / "src" / PKG

# Lowest first. A module belongs to the layer of the longest prefix listed; imports
# within a layer are allowed (circles are caught by rule (a)).
LAYERS: list[tuple[str, list[str]]] = [
    # Plain values and settings every other layer uses; they import nothing of ours but
    # each other.
    ("foundation", ["errors", "values", "sizes", "args", "system", "procfs", "heartbeat",
                    "notify"]),
    # Files on disk: the record buffer, frame format, writer, reader and index (`store`),
    # and git (`gitops`). They know nothing of runs being logged.
    ("store", ["store", "gitops"]),
    # The logging core: a `Run`, its per-thread state and loops, what it records about
    # itself and how it ends. It knows nothing of replays, models or the user API:
    # those plug in from above through its public surface.
    ("run", ["run", "rows", "threadstate", "runinfo", "loops", "lifecycle", "runhooks"]),
    # What a script or notebook calls: the `fw.*` functions, hindsight checkpoints and
    # replays, model graphs and watching, queries over the store, push / pull, fitlog.
    # Hindsight's `fw.checkpointing` finds the current run through `api` (same layer).
    ("features", ["api", "hindsight", "model", "queries", "remote", "fitlog", "lineage",
                  "registry", "sysmetrics", "alerts", "monitoring"]),
    # Front ends: the package facade (`flowillower/__init__.py`, which also plugs replay
    # mode into run creation), the command line, the web UI and the examples.
    ("front", ["", "__main__", "cli", "server", "examples"]),
    # Adapters for training frameworks and notebooks: they may use everything below.
    ("integrations", ["integrations"]),
]


def module_name(root: Path, path: Path) -> str:
    """`flowillower.x.y` for `<root>/x/y.py` (`flowillower.x` for `x/__init__.py`)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([PKG, *parts])


def modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, whether it is a package `__init__`)."""
    return {module_name(root, p): (p, p.name == "__init__.py")
            for p in sorted(root.rglob("*.py"))}


def _resolve(name: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module an `ImportFrom` names (`from ..x import y` -> `flowillower.x`)."""
    if not node.level:
        return node.module or ""
    base = name.split(".")
    if not is_pkg:
        base.pop()  # a module's relative imports start at its package
    for _ in range(node.level - 1):
        base.pop()
    return ".".join(base + ([node.module] if node.module else []))


@functools.lru_cache(maxsize=4)
def imports(root: Path) -> dict[str, dict[str, dict[str, int]]]:
    """Module -> {imported flowillower module -> line}, plus the aliases bound to them:
    returns {module: {"edges": {target: line}, "aliases": {alias: target}}}."""
    mods = modules(root)
    out: dict[str, dict[str, dict]] = {}
    for name, (path, is_pkg) in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[str, int] = {}
        aliases: dict[str, str] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.name == PKG or a.name.startswith(PKG + "."):
                        edges.setdefault(a.name, node.lineno)
                        if a.asname:
                            aliases[a.asname] = a.name
                        elif "." not in a.name:
                            aliases[a.name] = a.name
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(name, is_pkg, node)
                if not (target == PKG or target.startswith(PKG + ".")):
                    continue
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    if sub in mods:  # `from . import api`: the module itself
                        edges.setdefault(sub, node.lineno)
                        aliases[a.asname or a.name] = sub
                    else:
                        edges.setdefault(target, node.lineno)
        edges.pop(name, None)
        if PKG in edges and _only_locates_package(tree, aliases):
            del edges[PKG]
        out[name] = {"edges": edges, "aliases": aliases}
    return out


def _only_locates_package(tree: ast.AST, aliases: dict[str, str]) -> bool:
    """Whether the bare package is imported only to find it on disk (`flowillower.__file__`,
    e.g. to put it on a worker's path): that uses no API, so it is no arrow up."""
    names = {alias for alias, target in aliases.items() if target == PKG}
    uses = [node for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in names]
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    return bool(names) and all(isinstance(parents.get(u), ast.Attribute)
                               and parents[u].attr == "__file__" for u in uses)


def find_cycle(graph: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle as a path `[a, b, ..., a]`, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def layer_of(module: str) -> int:
    """Index in `LAYERS` of the longest listed prefix of `module`."""
    rel = module[len(PKG) + 1:] if module != PKG else ""
    best, best_len = None, -1
    for index, (_label, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (rel == prefix or (prefix and rel.startswith(prefix + "."))) \
                    and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """'a (layer) -> b (higher layer), line n' for every import that climbs up."""
    bad = []
    for src, edges in sorted(graph.items()):
        for dst, line in sorted(edges.items()):
            if layer_of(dst) > layer_of(src):
                bad.append(f"{src} ({LAYERS[layer_of(src)][0]}) -> {dst} "
                           f"({LAYERS[layer_of(dst)][0]}), line {line}")
    return bad


def underscore_reads(root: Path) -> list[str]:
    """'module:line alias._name' for every underscore name read from another module
    through its alias, or from a Run (`run._x`, `self.run._x`) outside run.py."""
    found = imports(root)
    bad = []
    for name, (path, _is_pkg) in modules(root).items():
        aliases = found[name]["aliases"]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__")):
                continue
            value = node.value
            if isinstance(value, ast.Name) and value.id in aliases:
                bad.append(f"{name}:{node.lineno} {value.id}.{node.attr}")
            elif name != f"{PKG}.run" and (
                    (isinstance(value, ast.Name) and value.id == "run")
                    or (isinstance(value, ast.Attribute) and value.attr == "run")):
                bad.append(f"{name}:{node.lineno} run.{node.attr}")
    return sorted(set(bad))


def _graph(root: Path) -> dict[str, dict[str, int]]:
    return {name: info["edges"] for name, info in imports(root).items()}


def test_no_import_circle() -> None:
    cycle = find_cycle(_graph(SRC))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers() -> None:
    bad = layer_violations(_graph(SRC))
    assert not bad, "imports climbing a layer up:\n" + "\n".join(bad)


def test_no_module_reads_another_modules_underscore_names() -> None:
    bad = underscore_reads(SRC)
    assert not bad, "underscore names read from outside:\n" + "\n".join(bad)


def test_every_module_has_a_layer_and_a_docstring() -> None:
    missing = []
    for name, (path, _is_pkg) in modules(SRC).items():
        layer_of(name)  # raises for a module no layer lists
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))):
            missing.append(name)
    assert not missing, "modules without an opening docstring saying their job: " + \
        ", ".join(missing)


def test_the_checks_see_deferred_relative_and_type_only_imports(tmp_path: Path) -> None:
    """The rules catch what they claim to (a package made to break each of them)."""
    pkg = tmp_path / PKG
    (pkg / "hindsight").mkdir(parents=True)
    files = {
        "__init__.py": '"""Facade."""\n',
        "values.py": '"""Values."""\n',
        "run.py": '"""Run."""\ndef f():\n    from .hindsight import session\n',
        "api.py": '"""API."""\nfrom .run import f\nfrom . import run as core\n'
                  'x = core._private\n',
        "hindsight/__init__.py": '"""H."""\n',
        "hindsight/session.py": '"""S."""\nfrom typing import TYPE_CHECKING\n'
                                'if TYPE_CHECKING:\n    from ..api import f\n'
                                'def g(run):\n    return run._step\n',
    }
    for rel, text in files.items():
        (pkg / rel).write_text(text, encoding="utf-8")
    graph = _graph(pkg)
    assert graph[f"{PKG}.run"] == {f"{PKG}.hindsight.session": 3}  # deferred, relative
    assert f"{PKG}.api" in graph[f"{PKG}.hindsight.session"]  # type-only
    cycle = find_cycle(graph)
    assert cycle is not None and cycle[0] == cycle[-1] and len(cycle) == 4
    assert set(cycle) == {f"{PKG}.api", f"{PKG}.run", f"{PKG}.hindsight.session"}
    assert layer_violations(graph) == [
        f"{PKG}.run (run) -> {PKG}.hindsight.session (features), line 3"]
    assert underscore_reads(pkg) == [f"{PKG}.api:4 core._private",
                                     f"{PKG}.hindsight.session:6 run._step"]


@pytest.mark.parametrize("module, layer", [
    ("flowillower", "front"), ("flowillower.store.writer", "store"),
    ("flowillower.run", "run"), ("flowillower.hindsight.session", "features"),
    ("flowillower.values", "foundation")])
def test_layer_table_places_modules(module: str, layer: str) -> None:
    assert LAYERS[layer_of(module)][0] == layer


# -- the public surface the layers above use instead of underscores -------------------


def test_run_surface_saves_restores_and_controls_the_loop_position(tmp_path: Path) -> None:
    """What hindsight does through `Run`'s public surface: choose the iterations a loop
    yields, save the loop position, put it back; other threads keep their own."""
    import threading

    from flowillower.run import Run

    run = Run(project="p", dir=tmp_path, snapshot=False)
    run.set_loop_control(lambda name, depth, items: ((i, x) for i, x in enumerate(items)
                                                     if i % 2 and name == "epoch"))
    seen, depths = [], []
    for item in run.loop("epoch", "abcd"):
        seen.append((item, run.loop_depth))
        worker = threading.Thread(target=lambda: depths.append(run.loop_depth))
        worker.start()
        worker.join()
    assert seen == [("b", 1), ("d", 1)] and depths == [0, 0] and run.loop_depth == 0
    saved = run.loop_position()
    assert saved.loop_totals == {("epoch",): 2}
    run.set_loop_control(None)
    assert list(run.loop("epoch", "xy")) == ["x", "y"]
    assert run.loop_position().loop_totals == {("epoch",): 4}
    assert saved.loop_totals == {("epoch",): 2}  # a copy, not the live dict
    run.restore_loop_position(saved)
    steps = []
    for _ in run.loop("epoch", "z"):
        steps.append(run.thread_state().step)
    assert steps == [2]  # the restored count continues: iteration 3 of the loop
    run.finish()


def test_run_creation_hook_redirects_output_before_anything_is_written(tmp_path: Path
                                                                        ) -> None:
    """How replay mode plugs in from above: a hook sends a new run to another store."""
    from flowillower.errors import FlowillowerError
    from flowillower.run import Run, on_run_created

    scratch = tmp_path / "scratch"
    created = []

    def hook(run: Run) -> None:
        created.append(run.id)
        run.redirect_output(scratch)
        run.capture_code = False

    handle = on_run_created(hook)
    try:
        run = Run(project="p", dir=tmp_path / "main", snapshot=True)
    finally:
        handle.remove()
    assert created == [run.id] and run.store_root == scratch and not run.capture_code
    run.log("loss", 1.0)
    run.finish()
    assert (run.dir / "summary.json").is_file() and run.dir.is_relative_to(scratch)
    assert not (tmp_path / "main").exists()
    with pytest.raises(FlowillowerError, match="already on disk"):
        run.redirect_output(tmp_path / "elsewhere")
    later = Run(project="p", dir=tmp_path / "main", snapshot=False)  # hook removed
    assert later.store_root != scratch and len(created) == 1
    later.finish()


def test_api_accessors_replace_reads_of_api_underscores(tmp_path: Path) -> None:
    """fitlog (and any facade) reaches the current run through these, not `api._x`."""
    from flowillower import api

    assert api.open_run() is None and not api.is_debug()
    api.set_defaults(dir=str(tmp_path))
    with pytest.raises(TypeError, match="not a run default: colour"):
        api.set_defaults(colour="red")
    run = api.active_run()  # starts the implicit run in the default dir
    assert run is not None and api.open_run() is run
    assert run.store_root.is_relative_to(tmp_path)
    run.log("loss", 0.5)
    api.end_current_run()
    assert run.status == "success" and api.open_run() is None
    api.debug(True)
    try:
        assert api.is_debug() and api.active_run() is None
    finally:
        api.debug(False)


def test_the_package_and_the_store_load_no_logging_core() -> None:
    """`import flowillower` (and so every `flowillower.store.*` import of the CLI and the
    UI) loads neither the logging core nor heavy libraries; the `fw.*` names resolve on
    first use, and the run-creation hooks are registered from the start."""
    code = (
        "import sys, flowillower as fw, flowillower.store.index\n"
        "heavy = ['flowillower.api', 'flowillower.run', 'flowillower.store.writer',\n"
        "         'flowillower.lifecycle', 'numpy', 'pandas',\n"
        "         'torch', 'git']\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
        "from flowillower.runhooks import creation_hooks\n"
        "print(len(creation_hooks), fw.init.__module__, fw.Run.__module__)\n"
        "from flowillower import log_metrics, FlowillowerError\n"
        "print(log_metrics.__module__, 'init' in dir(fw))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["[]", "3 flowillower.api flowillower.run",
                                       "flowillower.api True"]
