"""`flowillower ui`, `flowillower export`, `flowillower deploy`: the web UI commands."""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import webbrowser
from pathlib import Path

import click

from .common import dir_option, friendly_errors, open_store


def _free_port(host: str, port: int, tries: int = 20) -> int:
    """`port`, or the next free one (like Jupyter) when it is taken."""
    for candidate in range(port, port + tries):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, candidate))
            except OSError:
                continue
            return candidate
    raise click.ClickException(f"ports {port}-{port + tries - 1} on {host} are all taken; "
                               "pass --port")


@click.command("ui")
@click.option("--port", default=8686, show_default=True, help="Port to listen on.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface; anything but loopback requires a token.")
@dir_option
@click.option("--no-browser", is_flag=True, help="Do not open a browser tab.")
@click.option("--token", default=None, envvar="FLOWILLOWER_UI_TOKEN",
              help="Token to require (generated when --host is not loopback).")
@click.option("--demo", is_flag=True, help="Serve a throwaway store of demo runs.")
@friendly_errors
def ui_command(port: int, host: str, store_dir: str | None, no_browser: bool,
               token: str | None, demo: bool) -> None:
    """Serve the web UI: runs table, charts, run pages, model graphs (live).

    It keeps serving while runs are being written: open it before training starts.
    """
    import uvicorn

    from ..server.app import create_app
    from ..server.security import is_loopback

    if demo:
        from ..server.demo import make_demo_store

        store_root = Path(tempfile.mkdtemp(prefix="flowillower-demo-")) / ".flowillower"
        make_demo_store(store_root, runs=12, steps=400)
    else:
        store_root = open_store(store_dir, must_exist=False).root
    loopback = is_loopback(host)
    if not loopback and not token:
        token = secrets.token_urlsafe(24)
    port = _free_port(host, port)
    app = create_app(store_root, token, loopback_only=loopback)
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    url = f"http://{shown_host if ':' not in shown_host else f'[{shown_host}]'}:{port}/"
    if token:
        url += f"?token={token}"
    click.echo(f"flowillower UI for {store_root}")
    click.echo(f"    {url}")
    if not loopback:
        click.echo("Listening beyond this machine: the token above is required.")
    click.echo("Ctrl-C to stop.")
    if not no_browser:
        threading.Timer(1.0, lambda: webbrowser.open(url)).start()
    uvicorn.run(app, host=host, port=port, log_level="warning")


@click.command("export")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--runs", "runs_filter", default=None,
              help="Only runs matching this filter (any filter syntax).")
@dir_option
@click.option("--points", default=300, show_default=True,
              help="Values kept per series (min/max downsampling).")
@click.option("--hidden", is_flag=True, help="Include hidden runs.")
@click.option("--no-media", is_flag=True, help="Do not copy images and artifacts.")
@friendly_errors
def export_command(out_dir: str, runs_filter: str | None, store_dir: str | None, points: int,
                   hidden: bool, no_media: bool) -> None:
    """Write the UI as a static site to OUT_DIR (serve it with any static host)."""
    from ..server.export import export_site

    store = open_store(store_dir)
    result = export_site(store.root, out_dir, runs_filter, points=points,
                         include_hidden=hidden, media=not no_media)
    click.echo(f"exported {result['runs']} runs to {result['out']} "
               f"({result['bytes'] / 1e6:.1f} MB, {result['seconds']:.1f} s)")
    click.echo(f"open {result['out']}/index.html, or serve it: {result['serve']}  "
               f"then {result['url']}")
    if result.get("file") is not True:
        click.echo(f"opening index.html from the file system won't work: {result.get('file')}")


@click.command("deploy")
@click.argument("target")
@click.option("--site", type=click.Path(file_okay=False, exists=True), default=None,
              help="An exported site to push (default: export the store now).")
@click.option("--runs", "runs_filter", default=None, help="Only runs matching this filter.")
@dir_option
@click.option("--branch", default="main", show_default=True)
@click.option("--message", "-m", default="flowillower: update site", show_default=True)
@click.option("--lfs/--no-lfs", default=None,
              help="Binary and large files through Git LFS (default: for Spaces and "
                   "studios).")
@click.option("--no-data", is_flag=True,
              help="Only the viewer: leave the runs' data refs out.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@friendly_errors
def deploy_command(target: str, site: str | None, runs_filter: str | None,
                   store_dir: str | None, branch: str, message: str, lfs: bool | None,
                   no_data: bool, as_json: bool) -> None:
    """Push the static UI to TARGET: hf:USER/SPACE (a static Space), ms:USER/STUDIO (a
    ModelScope studio), or a git URL / path.

    From a store, the runs' data refs go along (teammates `flowillower pull` them). A
    token comes from HF_TOKEN / MODELSCOPE_API_TOKEN or your git credential helper and is
    never written anywhere; the Space or studio must exist.
    """
    from ..server.deploy import deploy
    from .remote import report_deploy

    source = Path(site) if site else open_store(store_dir).root
    report_deploy(deploy(source, target, runs_filter=runs_filter, branch=branch,
                         message=message, lfs=lfs, runs=not no_data), as_json)
