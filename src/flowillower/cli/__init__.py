"""The `flowillower` command. Each group of commands lives in its own module."""

from __future__ import annotations

import click

from .. import __version__
from .code import checkout_command, diff_command
from .model import model_command
from .remote import pull_command, push_command
from .runs import df_command, gc_command, ls_command, reindex_command, rm_command, show_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowillower")
def main() -> None:
    """flowillower: local-first experiment tracking, hindsight logging and model views.

    Runs live in .flowillower/ at the root of your git repository (or the current
    directory). Every command takes --dir to point elsewhere.
    """


for _command in (ls_command, show_command, diff_command, checkout_command, push_command,
                 pull_command, df_command, rm_command, gc_command, reindex_command,
                 model_command):
    main.add_command(_command)


def _add_optional_commands() -> None:
    """Commands whose modules may pull in heavier dependencies, imported on demand."""
    import importlib

    for module, names in (("flowillower.cli.replay", ("replay_command",)),
                          ("flowillower.cli.ui", ("ui_command", "export_command",
                                                  "deploy_command")),
                          ("flowillower.examples.flow_matching.cli", ("demo_command",))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in names:
            command = getattr(mod, name, None)
            if command is not None:
                main.add_command(command)


_add_optional_commands()
