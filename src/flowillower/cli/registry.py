"""`flowillower registry`: list, show, register and alias model versions."""

from __future__ import annotations

import click

from .common import dir_option, fmt_time, friendly_errors, json_option, print_json, print_table


@click.group("registry")
def registry_command() -> None:
    """Named models whose versions are runs (`fw.register`), with aliases such as prod.

    Entries live in this store only (push sends run folders, not the registry)."""


@registry_command.command("list")
@dir_option
@json_option
@friendly_errors
def list_command(store_dir: str | None, as_json: bool) -> None:
    """Every registered model: versions and aliases."""
    from .. import registry

    found = registry.models(store_dir)
    if as_json:
        print_json([m.as_dict() for m in found])
        return
    if not found:
        click.echo("no registered models; `flowillower registry register RUN NAME` adds one")
        return
    print_table(["model", "versions", "latest", "aliases"],
                [[m.name, len(m.versions), m.versions[-1],
                  ", ".join(f"{a}=v{m.version_of(r)}" for a, r in sorted(m.aliases.items()))]
                 for m in found])


@registry_command.command("show")
@click.argument("name")
@dir_option
@json_option
@friendly_errors
def show_command(name: str, store_dir: str | None, as_json: bool) -> None:
    """One model's versions: run, registration time, aliases."""
    from .. import registry

    entry = registry.model(name, store_dir).as_dict()
    if as_json:
        print_json(entry)
        return
    click.echo(click.style(name, bold=True))
    print_table(["version", "run", "registered", "aliases"],
                [[v["version"], v["run"], fmt_time(v["registered"]) if v["registered"] else "",
                  ", ".join(v["aliases"])] for v in entry["versions"]])


@registry_command.command("register")
@click.argument("run")
@click.argument("name")
@click.option("--alias", default=None, help="Also point this alias (e.g. prod) at it.")
@dir_option
@friendly_errors
def register_command(run: str, name: str, alias: str | None, store_dir: str | None) -> None:
    """Register RUN as a new version of model NAME."""
    from .. import registry

    version = registry.register(run, name, alias=alias, dir=store_dir)
    click.echo(f"{name} {version}" + (f" ({alias})" if alias else ""))


@registry_command.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version")
@dir_option
@friendly_errors
def alias_command(name: str, alias: str, version: str, store_dir: str | None) -> None:
    """Point ALIAS of model NAME at VERSION (vN, another alias or a registered run id)."""
    from .. import registry

    run_id = registry.set_alias(name, alias, version, dir=store_dir)
    click.echo(f"{name}@{alias} -> v{registry.model(name, store_dir).version_of(run_id)} "
               f"({run_id})")
