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


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                styles: dict[int, Callable[[Any], str]] | None = None,
                title: str | None = None) -> None:
    """A rich table on a terminal (with colour), plain aligned text otherwise."""
    from rich.console import Console
    from rich.table import Table

    console = Console(no_color=not sys.stdout.isatty(), width=None if sys.stdout.isatty()
                      else 200, soft_wrap=False)
    table = Table(*headers, title=title, box=None if not sys.stdout.isatty() else None,
                  header_style="bold", pad_edge=False)
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = str(cell)
            if styles and i in styles and sys.stdout.isatty():
                text = f"[{styles[i](cell)}]{text}[/]"
            cells.append(text)
        table.add_row(*cells)
    console.print(table)
