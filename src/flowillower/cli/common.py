"""Shared pieces of the CLI: the --dir / --json options, output helpers, error handling."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from typing import Any

import click

from ..errors import FlowillowerError
from ..store.catalog import Store

dir_option = click.option("--dir", "store_dir", type=click.Path(file_okay=False),
                          default=None, help="Project or store directory (default: the git "
                          "root or the current directory).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# Third-party modules of pyproject's extras: which extra brings each one.
EXTRA_OF_MODULE = {"torch": "torch", "PIL": "media", "matplotlib": "media",
                   "pyarrow": "parquet", "omegaconf": "demo"}
# flowillower's required dependencies: missing means a broken installation.
CORE_MODULES = frozenset({"numpy", "pandas", "click", "rich", "tqdm", "starlette", "uvicorn",
                          "zstandard"})


def missing_module(exc: ImportError) -> str | None:
    """The third-party top-level module whose absence caused `exc`, or None when `exc`
    is not a missing dependency (e.g. flowillower's own module failed: a bug)."""
    name = getattr(exc, "name", None)
    if not isinstance(exc, ModuleNotFoundError) or not name:
        return None
    top = name.split(".", 1)[0]
    return None if top == "flowillower" else top


def install_command(module: str, extra: str | None = None) -> str | None:
    """The pip command that brings `module` back (None for a module no extra brings)."""
    extra = extra or EXTRA_OF_MODULE.get(module)
    if extra:
        return f"pip install 'flowillower[{extra}]'"
    if module in CORE_MODULES:  # a broken installation
        return "pip install --force-reinstall flowillower"
    return None


def install_hint(module: str, command: str | None = None, extra: str | None = None
                 ) -> str | None:
    """What to install when `module` is missing (None for a module no extra brings)."""
    what = f"`flowillower {command}`" if command else "this command"
    pip = install_command(module, extra)
    if pip is None:
        return None
    if extra or module in EXTRA_OF_MODULE:
        return f"{what} needs {module}, which is not installed: {pip}"
    return (f"{what} needs {module}, a dependency of flowillower that is missing: "
            f"reinstall it ({pip})")


def command_name() -> str | None:
    """The running subcommand as typed after `flowillower` (e.g. `demo train`)."""
    ctx = click.get_current_context(silent=True)
    names = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names)) or None


def friendly_errors(fn: Callable) -> Callable:
    """Turn our errors into a one-line message and exit code 1 (no traceback); a missing
    optional dependency says which extra to install."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlowillowerError as exc:
            raise click.ClickException(str(exc)) from None
        except ModuleNotFoundError as exc:
            module = missing_module(exc)
            hint = install_hint(module, command_name()) if module else None
            if hint is None:  # flowillower's own module or an unknown one: not an extra
                raise
            raise click.ClickException(hint) from None

    return wrapper


def open_store(store_dir: str | None, must_exist: bool = True) -> Store:
    return Store(store_dir, must_exist=must_exist)


def print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str))


def fmt_time(ts: float | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else (f"{minutes}m{secs:02d}s" if minutes
                                                    else f"{secs}s")


def fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "$media" in value:
        return f"<{value['$media']}>"
    text = str(value)
    return text if len(text) <= 24 else text[:21] + "..."


STATUS_STYLE = {"success": "green", "running": "cyan", "failed": "red", "killed": "yellow",
                "lost": "magenta"}


# A cell longer than this is cut (with "…") in plain tables: one odd value must not push
# every other column off the screen.
CELL_LIMIT = 80


def safe_cell(value: Any, limit: int = CELL_LIMIT) -> str:
    """`value` as one table cell: control and invisible formatting characters (escape
    sequences a hostile run name could carry to the terminal, newlines that would break
    the row) shown as U+FFFD, and at most `limit` characters."""
    text = str(value)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    if not text.isprintable():
        text = "".join(c if c.isprintable() else "\ufffd" for c in text)
    return text


def _width(text: str) -> int:
    """Terminal columns `text` takes (wide East Asian characters take two)."""
    if text.isascii():
        return len(text)
    import unicodedata

    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                styles: dict[int, Callable[[Any], str]] | None = None,
                title: str | None = None) -> None:
    """Aligned columns (two spaces apart, header first). On a terminal, with colour; a
    table wider than the terminal goes through rich, which folds columns to fit. Cells
    go through `safe_cell`: what a run recorded is shown, never interpreted."""
    tty = sys.stdout.isatty()
    cells = [[safe_cell(c) for c in row] for row in rows]
    heads = [safe_cell(h) for h in headers]
    widths = [max([_width(h)] + [_width(r[i]) for r in cells if i < len(r)])
              for i, h in enumerate(heads)]
    if tty:
        import shutil

        if sum(widths) + 2 * (len(widths) - 1) > shutil.get_terminal_size().columns:
            _rich_table(heads, rows, cells, styles, title)
            return
    lines = [title] if title else []
    bold, reset = ("\x1b[1m", "\x1b[0m") if tty else ("", "")
    lines.append(bold + "  ".join(_pad(h, w) for h, w in zip(heads, widths)).rstrip() + reset)
    colours = {"green": 32, "red": 31, "yellow": 33, "blue": 34, "magenta": 35, "cyan": 36,
               "white": 37}
    for raw, row in zip(rows, cells):
        out = []
        for i, (text, w) in enumerate(zip(row, widths)):
            padded = _pad(text, w)
            if tty and styles and i in styles and styles[i](raw[i]) in colours:
                padded = f"\x1b[{colours[styles[i](raw[i])]}m{text}\x1b[0m" + padded[len(text):]
            out.append(padded)
        lines.append("  ".join(out).rstrip())
    click.echo("\n".join(lines))


def _rich_table(heads: list[str], rows: Sequence[Sequence[Any]], cells: list[list[str]],
                styles: dict[int, Callable[[Any], str]] | None, title: str | None) -> None:
    """A table wider than the terminal: rich folds its columns to fit."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(soft_wrap=False)
    table = Table(*map(escape, heads), title=title and escape(title), box=None,
                  header_style="bold", pad_edge=False)
    for raw, row in zip(rows, cells):
        table.add_row(*[f"[{styles[i](raw[i])}]{escape(text)}[/]" if styles and i in styles
                        else escape(text) for i, text in enumerate(row)])
    console.print(table)
