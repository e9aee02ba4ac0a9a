"""The `flowillower` command. Each group of commands lives in its own module, imported
only when one of its commands runs or is listed (`--help`): `flowillower ls` loads what
`ls` needs, not the UI server's, replay's or the demo's modules."""

from __future__ import annotations

from typing import Any

import click

from .. import __version__
from .common import install_command, install_hint, missing_module

# Command name -> (module, attribute, the extra that brings everything the module needs:
# None for "per module"). A module that fails to import still gets its commands, as
# stand-ins saying what is wrong (never silently dropped).
_COMMANDS: dict[str, tuple[str, str, str | None]] = {
    "ls": ("flowillower.cli.runs", "ls_command", None),
    "show": ("flowillower.cli.runs", "show_command", None),
    "diff": ("flowillower.cli.code", "diff_command", None),
    "checkout": ("flowillower.cli.code", "checkout_command", None),
    "push": ("flowillower.cli.remote", "push_command", None),
    "pull": ("flowillower.cli.remote", "pull_command", None),
    "df": ("flowillower.cli.runs", "df_command", None),
    "rm": ("flowillower.cli.runs", "rm_command", None),
    "gc": ("flowillower.cli.runs", "gc_command", None),
    "reindex": ("flowillower.cli.runs", "reindex_command", None),
    "model": ("flowillower.cli.model", "model_command", None),
    "replay": ("flowillower.cli.replay", "replay_command", None),
    "ui": ("flowillower.cli.ui", "ui_command", None),
    "export": ("flowillower.cli.ui", "export_command", None),
    "deploy": ("flowillower.cli.ui", "deploy_command", None),
    "demo": ("flowillower.examples.flow_matching.cli", "demo_command", "demo"),
    "registry": ("flowillower.cli.registry", "registry_command", None),
    "du": ("flowillower.cli.du", "du_command", None),
}


class _LazyCommands(dict):
    """`main.commands`: every command's name from the start; its object is imported the
    first time it is looked up (click asks through `get`, listings through `values`)."""

    def __getitem__(self, name: str) -> click.Command:
        command = dict.__getitem__(self, name)
        if command is None:
            command = _load(name)
            dict.__setitem__(self, name, command)
        return command

    def get(self, name: str, default: Any = None) -> Any:
        return self[name] if name in self else default

    def values(self) -> list[click.Command]:  # type: ignore[override]
        return [self[name] for name in self]

    def items(self) -> list[tuple[str, click.Command]]:  # type: ignore[override]
        return [(name, self[name]) for name in self]


def _load(name: str) -> click.Command:
    import importlib

    module, attr, extra = _COMMANDS[name]
    try:
        return getattr(importlib.import_module(module), attr)
    except ImportError as exc:
        return _unavailable(name, module, exc, extra)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flowillower")
def main() -> None:
    """flowillower: local-first experiment tracking, hindsight logging and model views.

    Runs live in .flowillower/ at the root of your git repository (or the current
    directory). Every command takes --dir to point elsewhere.
    """


main.commands = _LazyCommands.fromkeys(_COMMANDS)


def _unavailable(name: str, module: str, exc: ImportError, extra: str | None
                 ) -> click.Command:
    """A stand-in for a command whose module failed to import: listed in --help, and
    saying why when invoked (exit 1). A missing dependency names the extra to install;
    a failure inside flowillower itself is a bug and is shown as one, with its traceback.
    """
    missing = missing_module(exc)
    hint = short = None
    if missing is not None:
        hint = install_hint(missing, name, extra) or (
            f"`flowillower {name}` needs the Python module {missing}, which is not "
            "installed")
        short = f"(unavailable) needs {missing}: " + (install_command(missing, extra)
                                                      or f"install {missing}")
    summary = hint or (f"flowillower's own module {module} failed to import ({exc}); this "
                       "is a bug in flowillower, not a missing extra: please report it")

    @click.command(name, help=f"(unavailable) {summary}", add_help_option=False,
                   short_help=short or "(unavailable) failed to import: a bug in flowillower",
                   context_settings={"ignore_unknown_options": True,
                                     "allow_extra_args": True})
    def command() -> None:
        if hint is not None:
            raise click.ClickException(hint)
        click.echo(f"Error: {summary}", err=True)
        raise exc

    return command
