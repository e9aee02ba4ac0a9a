"""`flowillower du`: where a store's bytes are, by run and by kind."""

from __future__ import annotations

import click

from .common import dir_option, friendly_errors, json_option, open_store, print_json, print_table


def fmt_bytes(size: int) -> str:
    """`size` in B / KiB / MiB / GiB, three significant figures."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover - the loop always returns


@click.command("du")
@click.option("-n", "--limit", type=int, default=20, show_default=True,
              help="Runs listed (largest first).")
@dir_option
@json_option
@friendly_errors
def du_command(limit: int, store_dir: str | None, as_json: bool) -> None:
    """Space used: by kind (values, media, artifacts, checkpoints, snapshots, ...) and by
    run, largest first. `gc --keep-last N --older-than DAYS` frees media and checkpoints."""
    from ..store.usage import KINDS, measure

    store = open_store(store_dir)
    usage = measure(store.root).as_dict()
    if as_json:
        print_json(usage)
        return
    print_table(["kind", "size"], [[k, fmt_bytes(v)] for k, v in usage["by_kind"].items()]
                + [["total", fmt_bytes(usage["total"])]], title=str(store.root))
    runs = usage["runs"][:max(limit, 0)]
    if runs:
        print_table(["run", "total", *KINDS],
                    [[r["id"], fmt_bytes(r["total"]), *[fmt_bytes(r[k]) for k in KINDS]]
                     for r in runs])
    if len(usage["runs"]) > len(runs):
        click.echo(f"... and {len(usage['runs']) - len(runs)} smaller run(s); -n to see more")
