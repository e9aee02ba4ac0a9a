"""Commands over runs: ls, show, df, rm, gc, reindex."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from ..queries.filters import compile_filter
from ..store.catalog import Store
from .common import (
    STATUS_STYLE,
    dir_option,
    fmt_duration,
    fmt_time,
    fmt_value,
    friendly_errors,
    install_hint,
    json_option,
    open_store,
    print_json,
    print_table,
)


def _varying_args(rows: list[dict], limit: int = 4) -> list[str]:
    """Args whose value differs between the listed runs: the ones worth a column."""
    names: dict[str, set[str]] = {}
    for row in rows:
        for key, value in row["args"].items():
            names.setdefault(key, set()).add(json.dumps(value, default=str))
    varying = [k for k, vals in names.items() if len(vals) > 1 or len(rows) == 1]
    return varying[:limit]


# Who and where: shown when they tell the listed runs apart (one author on one machine
# needs no column); origin whenever a listed run was pulled.
_WHO = ("author", "host")


def _who_columns(rows: list[dict]) -> list[str]:
    cols = [k for k in _WHO if len({r.get(k) for r in rows}) > 1]
    return cols + (["origin"] if any(r.get("origin") for r in rows) else [])


@click.command("ls")
@click.argument("filter", required=False)
@click.option("--all", "show_all", is_flag=True, help="Include hidden runs.")
@click.option("-n", "--limit", type=int, default=50, show_default=True,
              help="Runs (or, with --group-by, groups) to list.")
@click.option("-g", "--group-by", "group_by", default=None, metavar="NAME",
              help="Count the matching runs per value of NAME instead of listing them: a "
              "run field (author, host, origin, project, status, ...), an arg or metric, "
              "or day / week / month (of the start).")
@dir_option
@json_option
@friendly_errors
def ls_command(filter: str | None, show_all: bool, limit: int, group_by: str | None,
               store_dir: str | None, as_json: bool) -> None:
    """List runs, newest first. FILTER: text, `lr < 0.3 and status == "finished"`,
    `author == 'alice' and created > '2026-11-01'` or fitlog's ${'hyper-lr':'<0.3'}$.
    Names resolve against the listed runs and the resolution is printed on stderr; an
    unknown or ambiguous name exits 1 with the spellings to use (`args.lr`,
    `metrics.lr`). Columns for author, host and origin (the remote a pulled run came
    from) appear when they tell the listed runs apart."""
    store = open_store(store_dir)
    rows = store.runs(include_hidden=show_all,
                      limit=None if filter or group_by else limit)
    if filter:  # names resolve against these runs; unknown/ambiguous ones exit 1
        compiled = compile_filter(filter, rows)
        for line in compiled.describe():
            click.echo(f"filter: {line}", err=True)
        rows = [r for r in rows if compiled.predicate(r)]
    if group_by:
        from .groups import print_groups

        print_groups(rows, group_by, limit, as_json)
        return
    rows = rows[:limit]
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no runs" + (f" match {filter!r}" if filter else ""))
        return
    who = _who_columns(rows)
    args = _varying_args(rows)
    metrics = list(dict.fromkeys(m for r in rows for m, stats in r["metrics"].items()
                                 if stats["role"] == "metric"))[:4]
    both = set(args) & set(metrics)  # an arg and a metric of one name: say which is which
    headers = ["id", "name", "status", "start", "duration", *who,
               *[f"args.{a}" if a in both else a for a in args],
               *[f"metrics.{m}" if m in both else m for m in metrics]]
    table = []
    for r in rows:
        table.append([r["id"], r["name"], r["status"], fmt_time(r["created"]),
                      fmt_duration(r["duration"]), *[r.get(k) or "-" for k in who],
                      *[fmt_value(r["args"].get(a, "")) for a in args],
                      *[fmt_value(r["metrics"][m]["last"]) if m in r["metrics"] else ""
                        for m in metrics]])
    print_table(headers, table, styles={2: lambda s: STATUS_STYLE.get(s, "white")})


@click.command("show")
@click.argument("run")
@dir_option
@json_option
@friendly_errors
def show_command(run: str, store_dir: str | None, as_json: bool) -> None:
    """Show one run: metadata, args, metrics, git and environment."""
    store = open_store(store_dir)
    run_id = store.resolve(run)
    row = store.runs(lambda r: r["id"] == run_id)[0]
    reader = store.reader(run_id)
    from ..lineage import graph

    lineage = graph(store, run_id)  # inputs, consumers and the DAG around the run
    detail = {**row, "meta": reader.meta, "summary": reader.summary, "lineage": lineage}
    if as_json:
        print_json(detail)
        return
    meta = reader.meta
    git = meta.get("git") or {}
    click.echo(click.style(f"{row['name']}  ({run_id})", bold=True))
    click.echo(f"  status    {row['status']}")
    click.echo(f"  project   {row['project']}")
    # Who and where as the index keeps them: a pulled run.json's names are cut and
    # carry no control characters to the terminal.
    click.echo(f"  author    {row.get('author') or '-'}   host {row.get('host') or '-'}")
    if row.get("origin"):
        click.echo(f"  origin    pulled from {row['origin']}")
    click.echo(f"  started   {fmt_time(row['created'])}   duration {fmt_duration(row['duration'])}")
    if isinstance(meta.get("segments"), int) and meta["segments"] > 1:  # resumed
        click.echo(f"  segments  {meta['segments']} (resumed {meta['segments'] - 1} time(s))")
    fork = meta.get("fork_of")
    if isinstance(fork, dict):
        click.echo(f"  fork of   {fork.get('run')} at step {fork.get('step')}")
    if row["tags"]:
        click.echo(f"  tags      {', '.join(row['tags'])}")
    if row["notes"]:
        click.echo(f"  notes     {row['notes']}")
    click.echo(f"  git       head {git.get('head') or '-'} branch {git.get('branch') or '-'}"
               f" dirty {git.get('dirty')} snapshot {(git.get('snapshot') or '-')[:12]}")
    click.echo(f"  python    {meta.get('python')}  "
               + " ".join(f"{k} {v}" for k, v in (meta.get("packages") or {}).items()))
    if row["error"]:
        click.echo("  error     " + row["error"].strip().splitlines()[-1])
    if row["args"]:
        click.echo(click.style("args", bold=True))
        for key, value in row["args"].items():
            click.echo(f"  {key} = {value!r}")
    if row["metrics"]:
        print_table(["metric", "last", "min", "max", "count"],
                    [[name, fmt_value(m["last"]), fmt_value(m["min"]) if m["min"] is not None
                      else "", fmt_value(m["max"]) if m["max"] is not None else "", m["count"]]
                     for name, m in row["metrics"].items()])
    _print_lineage(lineage)


def _print_lineage(lineage: dict) -> None:
    """The run's inputs (runs whose artifacts it used) and consumers (runs using its)."""
    for title, records, arrow in (("inputs", lineage["inputs"], "<-"),
                                  ("consumers", lineage["consumers"], "->")):
        if records:
            click.echo(click.style(title, bold=True))
            for rec in records:
                via = f"  ({rec['via']})" if rec.get("via") else ""
                click.echo(f"  {arrow} {rec['run']}  {rec['artifact']}{via}")


@click.command("df")
@click.argument("names", nargs=-1)
@click.option("--runs", "runs_filter", default=None, help="Filter selecting the runs.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write to a .csv or .parquet file instead of printing CSV.")
@dir_option
@friendly_errors
def df_command(names: tuple[str, ...], runs_filter: str | None, output: str | None,
               store_dir: str | None) -> None:
    """Export values as a table (CSV or Parquet). No NAMES: one row per run."""
    import importlib.util

    from ..queries.dataframe import dataframe

    if output is not None and output.endswith(".parquet") and not any(
            importlib.util.find_spec(engine) for engine in ("pyarrow", "fastparquet")):
        # pandas would fail only after the whole query, with an ImportError of its own.
        raise click.ClickException(install_hint("pyarrow", "df -o FILE.parquet")
                                   or "writing Parquet needs pyarrow")
    open_store(store_dir)
    frame = dataframe(*names, runs=runs_filter, dir=store_dir)
    if output is None:
        click.echo(frame.to_csv(index=False), nl=False)
    elif output.endswith(".parquet"):
        frame.to_parquet(output, index=False)
        click.echo(f"wrote {len(frame)} rows to {output}")
    else:
        frame.to_csv(output, index=False)
        click.echo(f"wrote {len(frame)} rows to {output}")


@click.command("rm")
@click.argument("runs", nargs=-1, required=True)
@click.option("--hide", is_flag=True, help="Hide from listings instead of deleting.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@dir_option
@friendly_errors
def rm_command(runs: tuple[str, ...], hide: bool, yes: bool, store_dir: str | None) -> None:
    """Delete (or --hide) runs."""
    store = open_store(store_dir)
    ids = [store.resolve(r) for r in runs]
    if hide:
        for run_id in ids:
            store.annotate(run_id, hidden=True)
        click.echo(f"hid {len(ids)} run(s)")
        return
    if not yes:
        click.confirm(f"delete {len(ids)} run(s) for good: {', '.join(ids)}?", abort=True)
    for run_id in ids:
        store.delete(run_id)
    click.echo(f"deleted {len(ids)} run(s)")


@click.command("gc")
@click.option("--checkpoints", is_flag=True, help="Also delete every run's checkpoints.")
@click.option("--keep-last", type=click.IntRange(min=0), default=None, metavar="N",
              help="Delete media and checkpoints of all but the newest N runs.")
@click.option("--older-than", type=click.FloatRange(min=0), default=None, metavar="DAYS",
              help="Delete media and checkpoints of runs started over DAYS days ago.")
@click.option("-y", "--yes", is_flag=True, help="Delete media / checkpoints without asking.")
@click.option("--dry-run", is_flag=True, help="Delete nothing; say what --keep-last/"
              "--older-than would free.")
@dir_option
@friendly_errors
def gc_command(checkpoints: bool, keep_last: int | None, older_than: float | None,
               yes: bool, dry_run: bool, store_dir: str | None) -> None:
    """Reclaim space: drop code snapshots no run uses (and, if asked, checkpoints).

    Objects and code refs written in the last two hours are kept: a run that is starting
    right now may not have named its snapshot yet. With --keep-last N and/or
    --older-than DAYS, the media and checkpoints of runs outside the newest N and older
    than DAYS go too (values never do; running runs are kept); asks first unless -y.
    """
    from ..store.reader import RunReader

    store = open_store(store_dir)
    if keep_last is not None or older_than is not None:
        if not _prune_media(store, keep_last, older_than, yes, dry_run):
            return
    if dry_run:  # a dry run deletes nothing at all, snapshots and --checkpoints included
        click.echo("dry run: nothing deleted")
        return
    freed, live = 0, []
    for run_dir in sorted(Path(store.root, "runs").iterdir()) if checkpoints else ():
        ckpt = run_dir / "checkpoints"
        # Only real folders inside the store: a link never leads gc anywhere else.
        if run_dir.is_symlink() or ckpt.is_symlink() or not ckpt.is_dir():
            continue
        if RunReader(run_dir).status == "running":
            live.append(run_dir.name)  # still writing (and maybe replaying from) them
            continue
        freed += sum(p.lstat().st_size for p in ckpt.rglob("*") if p.is_file())
        shutil.rmtree(ckpt, ignore_errors=True)
    removed = _prune_snapshot_refs(store.root)
    click.echo(f"freed {freed / 2**20:.1f} MiB of checkpoints; dropped {removed} ref(s) of "
               "deleted runs and unused snapshots and pruned objects unreachable for over "
               "two hours")
    if live:
        click.echo(f"kept the checkpoints of {len(live)} running run(s): {', '.join(live)}")


def _prune_media(store: Store, keep_last: int | None, older_than: float | None, yes: bool,
                 dry_run: bool) -> bool:
    """Media and checkpoints of old runs (store.usage.plan_prune): listed, confirmed,
    removed. False when the user declined."""
    from ..store.usage import plan_prune, prune

    plan = plan_prune(store.runs(), store.root, keep_last, older_than)
    total = sum(sum(c.bytes.values()) for c in plan)
    files = sum(sum(c.files.values()) for c in plan)
    click.echo(f"{'would free' if dry_run else 'frees'} {total / 2**20:.1f} MiB in {files} "
               f"file(s) of media and checkpoints from {len(plan)} run(s); values stay")
    for cand in plan[:20]:
        click.echo(f"  {cand.id}  " + ", ".join(f"{k} {v / 2**20:.1f} MiB"
                                                 for k, v in cand.bytes.items()))
    if dry_run or not plan:
        return True
    if not yes and not click.confirm("delete them?", default=False):
        click.echo("nothing deleted")
        return False
    freed = prune(store.root, plan)
    click.echo(f"freed {freed / 2**20:.1f} MiB of media and checkpoints")
    return True


def _prune_snapshot_refs(root: Path) -> int:
    """Delete refs of runs that no longer exist and of unused snapshots; prune (safely)."""
    from ..gitops.maintenance import collect_garbage

    return len(collect_garbage(root)["refs_removed"])


@click.command("reindex")
@dir_option
@friendly_errors
def reindex_command(store_dir: str | None) -> None:
    """Rebuild the index from the run folders (deleting index.sqlite loses nothing)."""
    store = open_store(store_dir)
    count = store.index.rebuild()
    click.echo(f"indexed {count} run(s)")
