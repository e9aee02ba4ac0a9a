"""`flowillower model RUN`: the logged model's structure as a readable table."""

from __future__ import annotations

import json

import click

from ..errors import FlowillowerError
from ..store.resolve import run_file
from .common import dir_option, friendly_errors, json_option, print_json


@click.command("model")
@click.argument("run")
@click.option("--depth", type=int, default=None, help="Collapse the tree below this depth.")
@dir_option
@json_option
@friendly_errors
def model_command(run: str, depth: int | None, store_dir: str | None, as_json: bool) -> None:
    """Print the module tree of the model logged with fw.log_model in RUN."""
    from .common import open_store

    store = open_store(store_dir)
    run_dir = store.run_dir(run)
    path = run_file(run_dir, "model", "graph.json")  # never a link out of the run
    if not path.exists():
        raise FlowillowerError(f"run {run_dir.name} has no model; call "
                               "fw.log_model(model, example_input) in the script")
    graph = json.loads(path.read_text())
    if as_json:
        print_json(graph)
        return
    from ..model.summary import format_summary

    click.echo(format_summary(graph.get("tree", {}), graph, max_depth=depth))
