"""The `flowillower` command. Each group of commands lives in its own module."""

from __future__ import annotations

import click

from .. import __version__
from .code import checkout_command, diff_command
from .common import install_command, install_hint, missing_module
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


# Commands whose modules may pull in heavier or optional dependencies: module, {attribute:
# command name}, and the extra that brings everything the module needs (None: per module).
_OPTIONAL = (
    ("flowillower.cli.replay", {"replay_command": "replay"}, None),
    ("flowillower.cli.ui", {"ui_command": "ui", "export_command": "export",
                            "deploy_command": "deploy"}, None),
    ("flowillower.examples.flow_matching.cli", {"demo_command": "demo"}, "demo"),
    ("flowillower.cli.registry", {"registry_command": "registry"}, None),
    ("flowillower.cli.du", {"du_command": "du"}, None),
)


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


def _add_optional_commands() -> None:
    """Import the optional commands' modules; one that fails still gets its commands,
    as stand-ins saying what is wrong (never silently dropped)."""
    import importlib

    for module, names, extra in _OPTIONAL:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            for name in names.values():
                main.add_command(_unavailable(name, module, exc, extra))
            continue
        for attr, name in names.items():
            main.add_command(getattr(mod, attr), name)


_add_optional_commands()
