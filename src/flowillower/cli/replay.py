"""`flowillower replay NAME[,NAME...]`: hindsight logging for past runs."""

from __future__ import annotations

import click

from .common import dir_option, friendly_errors


@click.command("replay")
@click.argument("names", nargs=-1, required=True)
@click.option("--runs", "runs_filter", default=None, metavar="FILTER",
              help="Only runs matching this filter (fitlog syntax, expression or text).")
@click.option("--workers", "-w", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Worker processes; outer iterations are split among them.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before replaying.")
@click.option("--script", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The script with the new fw.log statements (default: each run's own "
                   "script in the working tree).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@dir_option
@friendly_errors
def replay_command(names: tuple[str, ...], runs_filter: str | None, workers: int, yes: bool,
                   script: str | None, as_json: bool, store_dir: str | None) -> None:
    """Compute values past runs never logged, as if they had been logged originally.

    Add `fw.log("NAME", ...)` to your script, then `flowillower replay NAME`: every
    matching run lacking NAME is replayed from its own code snapshot (the new statement
    transplanted into it) and its checkpoints, in a temporary directory. The schedule is
    shown first; confirm with y (or pass -y).
    """
    from ..hindsight.replay import report_json, run_replay

    report = run_replay(list(names), runs=runs_filter, workers=workers, yes=yes, dir=store_dir,
                    script=script,
                    echo=lambda text: click.echo(text, err=True),
                    confirm=lambda _prompt: click.confirm("Replay now?", default=False,
                                                          err=True))
    if as_json:
        click.echo(report_json(report))
    if report.interrupted:
        raise SystemExit(130)
    if not report.ok and not report.cancelled:
        raise SystemExit(1)
