"""Commands sharing runs through git remotes: push and pull."""

from __future__ import annotations

import re
from typing import Any

import click

from ..errors import InvalidRunRefError, RunNotFoundError
from ..queries.filters import row_filter
from .common import dir_option, friendly_errors, json_option, open_store, print_json

# Characters that only a filter expression has (`lr < 0.3`, fitlog's ${...}$, quotes).
_FILTER_CHARS = re.compile(r"""[\s<>=!${}()"']""")


def _select_runs(store_dir: str | None, runs: str) -> list[str]:
    """Run ids for `--runs`: comma-separated run references (each resolved by the store,
    so a path or `..` is an error) or, failing that, a filter expression."""
    store = open_store(store_dir)
    if not _FILTER_CHARS.search(runs):
        # `--runs ""` is not "all runs": an empty reference is an error like `..` is
        refs = [part.strip() for part in runs.split(",") if part.strip()] or [runs]
        try:
            return list(dict.fromkeys(store.resolve(ref) for ref in refs))
        except RunNotFoundError as exc:
            if isinstance(exc, InvalidRunRefError) or len(refs) > 1:
                raise
    ids = [row["id"] for row in store.runs(row_filter(runs))]  # a filter (plain text matches names)
    if not ids:
        raise RunNotFoundError(f"no run matches {runs!r}; `flowillower ls` lists them")
    return ids


@click.command("push")
@click.argument("remote", default="origin")
@click.option("--runs", "runs_filter", default=None,
              help="Runs to push: ids / names (comma-separated) or a filter.")
@click.option("--include-large", is_flag=True, help="Also push large artifacts.")
@click.option("--no-code", is_flag=True, help="Push run data only, no code snapshots.")
@dir_option
@json_option
@friendly_errors
def push_command(remote: str, runs_filter: str | None, include_large: bool, no_code: bool,
                 store_dir: str | None, as_json: bool) -> None:
    """Publish runs (data + code snapshots) to REMOTE: a remote name, path or URL.

    Each run travels on its own ref, so pushes from several machines never conflict.
    Checkpoints stay local; with --no-code, code snapshots too. A Hugging Face Space
    (https://huggingface.co/spaces/USER/SPACE, hf:USER/SPACE) or a ModelScope studio
    (ms:USER/STUDIO), or a remote name of yours for one, also gets the static viewer of
    these runs (`flowillower deploy`).
    """
    from ..gitops.sync import push
    from ..server.share import deploy_runs, hosted_target

    store = open_store(store_dir)
    ids = _select_runs(store_dir, runs_filter) if runs_filter is not None else None
    target = hosted_target(remote, store.root)
    if target is not None:
        report_deploy(deploy_runs(store.root, target, ids, include_large=include_large,
                                  no_code=no_code), as_json)
        return
    result = push(store.root, remote, run_ids=ids, include_large=include_large,
                  no_code=no_code)
    if as_json:
        print_json(result)
        return
    code = "no code snapshots" if no_code else f"{result['code']} code snapshot(s)"
    click.echo(f"{result.get('new', 0)} new, {result.get('updated', 0)} updated, "
               f"{result.get('up_to_date', 0)} up to date run(s) and {code} on "
               f"{result['remote']}")
    for run_id, items in (result.get("conflicts") or {}).items():
        click.echo(f"not pushed {run_id}: changed here and on the remote: " + "; ".join(
            f"{path} ({why})" for path, why in items[:5]), err=True)
    retry = [r for r in result.get("rejected") or [] if r not in (result.get("conflicts") or {})]
    if retry:
        click.echo(f"{len(retry)} run(s) still changed on the remote after several tries: "
                   f"run `flowillower pull {remote}` and push again: {', '.join(retry)}",
                   err=True)
    if (result.get("catalog") or {}).get("error"):
        click.echo(f"{result['catalog']['error']} (the runs went; `pull --runs FILTER` "
                   "fetches the runs it lacks whole)", err=True)
    if result.get("rejected") or result.get("conflicts"):
        raise SystemExit(1)  # a script must notice runs that did not go


def report_deploy(result: dict[str, Any], as_json: bool = False) -> None:
    """Print a deploy's summary (site, then run refs); exit 1 when the run refs were
    refused, after saying that the site itself is deployed."""
    if as_json:
        print_json(result)
    elif result["pushed"]:
        lfs = f", {len(result['lfs'])} file(s) through Git LFS" if result["lfs"] else ""
        page = f"; open {result['page']}" if result["space"] else ""
        click.echo(f"pushed the site {result['commit'][:10]} to {result['url']} "
                   f"({result['branch']}{lfs}){page}")
    else:
        click.echo(f"site unchanged: {result['reason']}")
    for path in result.get("skipped") or []:
        click.echo(f"left out a link: {path}", err=True)
    runs = result.get("runs")
    if runs is None:
        return
    if runs.get("error"):
        raise click.ClickException(f"the site is deployed, but {runs['error']}")
    if not as_json:
        click.echo(f"pushed the data of {runs['runs']} run(s) ({runs['pushed']} new or "
                   f"updated, {runs['code']} code snapshot(s)): teammates get them with "
                   f"`flowillower pull {result['url']}`")
    if runs.get("rejected"):
        click.echo(f"{len(runs['rejected'])} run(s) changed on the remote too: pull, then "
                   f"deploy again: {', '.join(runs['rejected'])}", err=True)
    if (runs.get("catalog") or {}).get("error"):
        click.echo(f"{runs['catalog']['error']} (the runs went; `pull --runs FILTER` "
                   "fetches the runs it lacks whole)", err=True)


@click.command("pull")
@click.argument("remote", default="origin")
@click.option("--runs", "runs_filter", default=None,
              help="Runs to pull: a filter as `ls` takes, or ids / names (comma-separated).")
@click.option("--no-media", is_flag=True,
              help="Leave media/ and artifacts/ on the remote (fetched when a run is opened).")
@dir_option
@json_option
@friendly_errors
def pull_command(remote: str, runs_filter: str | None, no_media: bool,
                 store_dir: str | None, as_json: bool) -> None:
    """Fetch runs others pushed to REMOTE; they appear next to yours.

    Only what a run holds is accepted (run.json, summaries, record files, media,
    artifacts, model graphs, notes), each checked; anything else is refused and listed.
    """
    from ..remote import pull

    result = pull(remote, runs=runs_filter, no_media=no_media, dir=store_dir)
    if as_json:
        print_json(result)
        return
    click.echo(f"pulled from {result['remote']}: {result['runs_added']} new run(s), "
               f"{result['files_added']} new file(s)")
    _catalog_notice(result.get("catalog"))
    if result.get("runs_not_selected"):
        click.echo(f"left {result['runs_not_selected']} run(s) the selection does not match")
    if result.get("media_left"):
        click.echo(f"left {result['media_left']} media/artifact file(s) on the remote: "
                   "opening a run in `flowillower ui` fetches its own")
    for run_id, why in result.get("runs_refused", []):
        click.echo(f"refused run {run_id}: {why}", err=True)
    for run_id, items in result.get("refused", {}).items():
        reasons: dict[str, list[str]] = {}
        for path, why in items:
            reasons.setdefault(why, []).append(path)
        click.echo(f"refused {len(items)} file(s) of run {run_id}:", err=True)
        for why, paths in reasons.items():
            shown = ", ".join(paths[:5]) + (f" (+{len(paths) - 5} more)" if len(paths) > 5
                                            else "")
            click.echo(f"  {why}: {shown}", err=True)
    if result.get("snapshots_refused"):
        click.echo(f"refused {result['snapshots_refused']} code ref(s) whose name is not "
                   "their commit", err=True)


def _catalog_notice(report: dict[str, Any] | None) -> None:
    """One line when a filtered pull could not go by the remote's run catalog alone."""
    if not report:
        return
    if report["state"] == "missing":
        click.echo(f"the remote has no run catalog (pushed by an older flowillower): "
                   f"fetched all {report['runs']} run(s) to check the filter; a push from "
                   "this version adds one", err=True)
    elif report["state"] == "unreadable":
        click.echo(f"the remote's run catalog could not be read ({report['error']}): "
                   f"fetched all {report['runs']} run(s) to check the filter", err=True)
    elif report["uncovered"]:
        click.echo(f"the remote's run catalog does not cover {report['uncovered']} run(s) "
                   "(pushed without it, or changed since): fetched those whole to check "
                   "the filter", err=True)
