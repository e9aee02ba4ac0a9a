"""Commands over code snapshots: diff and checkout (never touching your working tree)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import FlowillowerError
from .common import dir_option, friendly_errors, open_store


def _snapshot(store, run_id: str) -> str:
    git = store.reader(run_id).meta.get("git") or {}
    sha = git.get("snapshot")
    if not sha:
        reason = git.get("error") or "the run recorded no code snapshot"
        raise FlowillowerError(f"run {run_id} has no code snapshot ({reason})")
    return sha


def _args_diff(a: dict, b: dict) -> list[str]:
    lines = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key, "<unset>"), b.get(key, "<unset>")
        if json.dumps(va, default=str) != json.dumps(vb, default=str):
            lines.append(f"  {key}: {va!r} -> {vb!r}")
    return lines


@click.command("diff")
@click.argument("run_a")
@click.argument("run_b")
@click.option("--code/--no-code", default=True, help="Include the code diff.")
@dir_option
@friendly_errors
def diff_command(run_a: str, run_b: str, code: bool, store_dir: str | None) -> None:
    """Show how two runs differ: args, then code (a unified diff of their snapshots)."""
    from ..gitops.snapshot import diff_snapshots

    store = open_store(store_dir)
    a, b = store.resolve(run_a), store.resolve(run_b)
    rows = {r["id"]: r for r in store.runs()}
    click.echo(click.style(f"args {a} -> {b}", bold=True))
    lines = _args_diff(rows[a]["args"], rows[b]["args"])
    click.echo("\n".join(lines) if lines else "  (same args)")
    if code:
        click.echo(click.style("code", bold=True))
        text = diff_snapshots(store.git_dir, _snapshot(store, a), _snapshot(store, b))
        click.echo(text if text.strip() else "  (same code)")


@click.command("checkout")
@click.argument("run")
@click.argument("dest", type=click.Path(file_okay=False))
@dir_option
@friendly_errors
def checkout_command(run: str, dest: str, store_dir: str | None) -> None:
    """Write RUN's code snapshot into DEST (a new or empty directory)."""
    from ..gitops.snapshot import checkout_snapshot

    store = open_store(store_dir)
    run_id = store.resolve(run)
    checkout_snapshot(store.git_dir, _snapshot(store, run_id), Path(dest))
    click.echo(f"wrote the code of {run_id} to {dest}")
