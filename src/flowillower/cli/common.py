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


def friendly_errors(fn: Callable) -> Callable:
    """Turn our errors into a one-line message and exit code 1 (no traceback)."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except FlowillowerError as exc:
            raise click.ClickException(str(exc)) from None

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


STATUS_STYLE = {"success": "green", "running": "cyan", "failed": "red", "killed": "yellow"}


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
