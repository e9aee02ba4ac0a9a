"""Replaying a run started in a Jupyter notebook: its executed cells become the script.

A hindsight replay executes a Python script. For a notebook run, the script is what the
kernel actually ran: the cells recorded in the run's `notebook.json` (IPython's history,
in execution order, re-runs included, up to the cell that ended the run), joined into
one module. The new statements come from the notebook as it is now (its code cells, in
the order of the notebook), carried into that script like any other.

Some notebooks cannot be turned into a script that does what the kernel did; `NotReplayable`
says which cell and why:

* shell escapes (`!pip install ...`, `files = !ls`) and magics other than the harmless
  ones in `DROPPED_MAGICS` (`%load_ext`, `%matplotlib`, `%config`, `%autoreload`), whose
  effects a script cannot reproduce (`%run`, `%%bash`, `%%capture`, `%cd`...);
* a kernel that ran other runs before this one (a `fw.init` in an earlier cell): the
  script would start them too;
* no recorded cells (the extension was not loaded: no `notebook.json`).

Display-only cells (`fw.show(...)`, a run as a cell's value) do nothing in a script; cells
after the one that ended the run are not recorded. Cells run out of the notebook's order
are replayed in the order they ran (`out_of_order` names them for the schedule's notes).
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError

# Line magics whose effect does not change what the cells compute: dropped.
DROPPED_MAGICS = frozenset({"load_ext", "reload_ext", "matplotlib", "config", "autoreload",
                            "aimport"})
_MAGIC = re.compile(r"^\s*(%{1,2})([A-Za-z_][\w.]*)")
_SHELL = re.compile(r"^\s*(?:[\w.\[\], ]+=\s*)?!")


class NotReplayable(FlowillowerError):
    """A notebook run whose cells cannot become a replay script (the message says why)."""


def _clean_cell(source: str, label: str) -> str:
    """The cell as plain Python: harmless magics dropped, anything else IPython-only
    refused (naming the cell and line)."""
    lines = source.splitlines()
    out = []
    for number, line in enumerate(lines, 1):
        magic = _MAGIC.match(line)
        if magic and (magic.group(1) == "%%" or magic.group(2) not in DROPPED_MAGICS):
            kind = "cell magic" if magic.group(1) == "%%" else "magic"
            raise NotReplayable(
                f"{label} line {number} uses the {kind} `{line.strip()}`, which a replay "
                "script cannot reproduce: move it out of the notebook's run (or rewrite "
                "it in Python) and record the run again")
        if magic:
            out.append("")  # keep line numbers
            continue
        if _SHELL.match(line) and not _parses(line.strip()):
            raise NotReplayable(
                f"{label} line {number} runs a shell command (`{line.strip()}`), which a "
                "replay script cannot reproduce: run it outside the notebook's run (or "
                "use subprocess) and record the run again")
        out.append(line)
    cleaned = "\n".join(out)
    try:
        ast.parse(cleaned)
    except SyntaxError as exc:
        raise NotReplayable(f"{label} is not Python ({exc.msg}, line {exc.lineno}): "
                            "IPython-only syntax cannot be replayed") from None
    return cleaned


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def _calls(tree: ast.AST, names: set[str]) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                return True
    return False


def _display_only(tree: ast.Module) -> bool:
    """A cell that only shows things: `fw.show(...)`, a bare name (a run's rich repr)."""
    if not tree.body:
        return True
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            return False
        value = stmt.value
        if isinstance(value, ast.Name):
            continue
        if isinstance(value, ast.Call) and _calls(value, {"show"}) and isinstance(
                value.func, (ast.Attribute, ast.Name)) and (
                getattr(value.func, "attr", None) or getattr(value.func, "id", "")) == "show":
            continue
        return False
    return True


def cells_script(cells: list[str], what: str = "cell") -> str:
    """One module from notebook cells: each cleaned (see `_clean_cell`), display-only ones
    left out, separated by a `# -- cell N --` line."""
    parts = []
    for index, source in enumerate(cells, 1):
        label = f"{what} {index}"
        cleaned = _clean_cell(source, label)
        if _display_only(ast.parse(cleaned)):
            continue
        parts.append(f"# -- {label} --\n{cleaned.rstrip()}\n")
    return "\n".join(parts)


def recorded_cells(run_dir: Path) -> list[str]:
    """The cells the kernel executed for a run (notebook.json), in execution order."""
    try:
        record = json.loads((Path(run_dir) / "notebook.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise NotReplayable("the run recorded no executed cells (load the extension: "
                            "%load_ext flowillower.integrations.jupyter)") from None
    cells = [str(c.get("source", "")) for c in record.get("cells") or []]
    if not cells:
        why = record.get("left_out") or "no cells were recorded"
        raise NotReplayable(f"the run's executed cells are not recorded ({why})")
    return cells


def replay_source(cells: list[str]) -> str:
    """The script a replay runs for recorded `cells`; refuses a kernel that started
    other runs first."""
    inits = []
    for index, source in enumerate(cells, 1):
        try:
            tree = ast.parse(_clean_cell(source, f"executed cell {index}"))
        except NotReplayable:
            raise
        if _calls(tree, {"init"}):
            inits.append(index)
    if len(inits) > 1:
        raise NotReplayable(
            f"the kernel started runs in executed cells {', '.join(map(str, inits))}: a "
            "script of its cells would start the earlier runs too; restart the kernel "
            "before the run you want to replay (Kernel > Restart & Run All)")
    return cells_script(cells, "executed cell")


def notebook_cells(path: Path) -> list[str]:
    """The code cells of an .ipynb, in the notebook's order."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    out = []
    for cell in doc.get("cells", []):
        if cell.get("cell_type") == "code":
            source = cell.get("source", "")
            out.append("".join(source) if isinstance(source, list) else str(source))
    return out


def out_of_order(executed: list[str], notebook: list[str]) -> list[str]:
    """Executed cells found in the notebook that ran before a cell placed above them."""
    positions = {source.strip(): i for i, source in enumerate(notebook)}
    notes, highest = [], -1
    for index, source in enumerate(executed, 1):
        where = positions.get(source.strip())
        if where is None:
            continue
        if where < highest:
            notes.append(f"executed cell {index} (notebook cell {where + 1}) ran after a "
                         "cell placed below it: replayed in the order it ran")
        highest = max(highest, where)
    return notes


def job_sources(run_dir: Path, meta: dict[str, Any], current: Path | None = None
                ) -> tuple[str, str, str, list[str]]:
    """(relative script path, old script, new script, notes) for replaying a notebook run.

    The old script is the run's executed cells; the new one is built from `current` (a
    .py script given with `--script`, or an .ipynb), by default the notebook at the path
    the run recorded. Raises `NotReplayable` saying why not, and the way out."""
    try:
        return _job_sources(run_dir, meta, current)
    except NotReplayable as exc:
        raise NotReplayable(
            f"the run was started in a Jupyter notebook and its cells cannot be replayed: "
            f"{exc}; or export the notebook (jupyter nbconvert --to script NOTEBOOK.ipynb), "
            "run that script as a new run, and replay that run") from None


def _job_sources(run_dir: Path, meta: dict[str, Any], current: Path | None
                 ) -> tuple[str, str, str, list[str]]:
    old = replay_source(recorded_cells(run_dir))
    record = json.loads((Path(run_dir) / "notebook.json").read_text(encoding="utf-8"))
    path = Path(current) if current is not None else Path(record.get("path") or "")
    if current is None and not path.is_file():
        raise NotReplayable(f"cannot read the notebook {path}: pass script= (--script) "
                            "naming it, or a .py holding the new statements")
    try:
        if path.suffix == ".ipynb":
            cells = notebook_cells(path)
            new = cells_script(cells, "notebook cell")
            notes = out_of_order(recorded_cells(run_dir), cells)
        else:
            new, notes = path.read_text(encoding="utf-8"), []
    except (OSError, ValueError) as exc:
        raise NotReplayable(f"cannot read {path}: {exc}") from None
    root = Path((meta.get("git") or {}).get("root") or meta.get("cwd") or ".")
    rel = f"{path.stem or 'notebook'}.replay.py"
    try:
        folder = path.resolve().parent.relative_to(root.resolve())
        rel = str(folder / rel) if str(folder) != "." else rel
    except ValueError:
        pass
    return rel, old, new, notes
