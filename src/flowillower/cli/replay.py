"""`flowillower replay NAME[,NAME...]` / `--watch MODEL`: hindsight logging for past runs."""

from __future__ import annotations

import click

from .common import dir_option, friendly_errors


@click.command("replay")
@click.argument("names", nargs=-1)
@click.option("--watch", "watch", default=None, metavar="NAME",
              help="Also compute fw.watch statistics (activations, gradients, weights) "
                   "for runs that never watched their model: the object registered as "
                   "NAME with fw.checkpointing(NAME=model). Needs no NAME argument.")
@click.option("--watch-every", default=1, type=click.IntRange(1), show_default=True,
              help="With --watch: watch every N-th step, as fw.watch(every=N).")
@click.option("--force-watch", is_flag=True,
              help="With --watch: also runs that already have fw.watch statistics.")
@click.option("--runs", "runs_filter", default=None, metavar="FILTER",
              help="Only runs matching this filter (fitlog syntax, expression or text).")
@click.option("--workers", "-w", default=None, type=click.IntRange(1, 4096),
              help="Tasks at once; outer iterations are split among them [default: 1 "
                   "locally, every CPU of a Ray cluster, 8 Slurm jobs].")
@click.option("--executor", "executor_name", default=None,
              metavar="local|ray[=ADDRESS]|slurm[=FOLDER]",
              help="Where the tasks run: local processes, a Ray cluster (the one "
                   "`ray start` made here, or HOST:PORT), or Slurm jobs through submitit "
                   "(FOLDER on the cluster's shared disk) [default: "
                   "$FLOWILLOWER_REPLAY_EXECUTOR, else local].")
@click.option("--yes", "-y", is_flag=True,
              help="Do not ask before replaying (never implies --trust).")
@click.option("--trust", "trust_all", is_flag=True,
              help="Also replay runs from elsewhere (pulled, or recorded on another host): "
                   "their code runs on this machine.")
@click.option("--trust-author", "trust_authors", multiple=True, metavar="NAME",
              help="Also replay runs from elsewhere whose recorded author is NAME "
                   "(repeatable).")
@click.option("--script", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The script with the new fw.log statements (default: each run's own "
                   "script in the working tree).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@dir_option
@friendly_errors
def replay_command(names: tuple[str, ...], watch: str | None, watch_every: int,
                   force_watch: bool, runs_filter: str | None, workers: int | None,
                   executor_name: str | None, yes: bool, trust_all: bool, trust_authors: tuple[str, ...], script: str | None,
                   as_json: bool, store_dir: str | None) -> None:
    """Compute values past runs never logged, as if they had been logged originally.

    Add `fw.log("NAME", ...)` to your script, then `flowillower replay NAME`: every
    matching run lacking NAME is replayed from its own code snapshot (the new statement
    transplanted into it) and its checkpoints, in a temporary directory. The schedule is
    shown first, with each run's author and host; confirm with y (or pass -y).

    `flowillower replay --watch model` computes the `fw.watch` statistics of the model
    registered as `model` with `fw.checkpointing` for runs that never watched it, shown
    on the model page marked "replayed" (combinable with value names).

    Runs from elsewhere (pulled from a remote, or recorded on another host) are left out:
    replaying runs their code here. Pass --trust, or --trust-author NAME, to include them.
    """
    if not names and watch is None:
        raise click.UsageError("name a value to replay (flowillower replay grad_norm) or a "
                               "model to watch (flowillower replay --watch model)")
    from ..hindsight.engines import make_executor
    from ..hindsight.replay import report_json, run_replay

    def echo(text: str) -> None:
        click.echo(text, err=True)

    try:
        executor = make_executor(executor_name, workers, echo=echo)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--executor") from None
    executor.open()
    try:
        report = run_replay(list(names), runs=runs_filter, workers=executor.workers, yes=yes,
                            dir=store_dir, script=script,
                            trust=True if trust_all else list(trust_authors), echo=echo,
                            confirm=lambda _prompt: click.confirm("Replay now?",
                                                                  default=False, err=True),
                            executor=executor, watch=watch, watch_every=watch_every,
                            force_watch=force_watch)
    finally:
        executor.close()
    if as_json:
        click.echo(report_json(report))
    if report.interrupted:
        raise SystemExit(130)
    if not report.ok and not report.cancelled:
        raise SystemExit(1)
