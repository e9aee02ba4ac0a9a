"""Commands sharing runs through git remotes: push and pull."""

from __future__ import annotations

import click

from .common import dir_option, friendly_errors, json_option, print_json


@click.command("push")
@click.argument("remote", default="origin")
@click.option("--runs", "runs_filter", default=None, help="Filter selecting runs to push.")
@click.option("--include-large", is_flag=True, help="Also push large artifacts.")
@dir_option
@json_option
@friendly_errors
def push_command(remote: str, runs_filter: str | None, include_large: bool,
                 store_dir: str | None, as_json: bool) -> None:
    """Publish runs (data + code snapshots) to REMOTE: a remote name, path or URL.

    Each run travels on its own ref, so pushes from several machines never conflict.
    Checkpoints stay local.
    """
    from ..remote import push

    result = push(remote, runs_filter, include_large=include_large, dir=store_dir)
    if as_json:
        print_json(result)
        return
    click.echo(f"pushed {result['runs']} run(s) to {result['remote']}")
    if result.get("rejected"):
        click.echo(f"{len(result['rejected'])} run(s) changed on the remote too: run "
                   f"`flowillower pull {remote}` and push again: {', '.join(result['rejected'])}")


@click.command("pull")
@click.argument("remote", default="origin")
@dir_option
@json_option
@friendly_errors
def pull_command(remote: str, store_dir: str | None, as_json: bool) -> None:
    """Fetch runs others pushed to REMOTE; they appear next to yours."""
    from ..remote import pull

    result = pull(remote, dir=store_dir)
    if as_json:
        print_json(result)
        return
    click.echo(f"pulled from {result['remote']}: {result['runs_added']} new run(s), "
               f"{result['files_added']} new file(s)")
