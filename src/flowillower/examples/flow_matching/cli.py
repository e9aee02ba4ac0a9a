"""`flowillower demo ...`: train, visualize and tour the flow-matching showcase.

Importing this module is cheap (click only): torch, Pillow and omegaconf are loaded by
the commands that need them, so `flowillower --help` stays fast.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from ...cli.common import dir_option, friendly_errors

TRAIN_SCRIPT = Path(__file__).with_name("train.py")
NEEDS = ("torch", "PIL", "omegaconf")  # the `demo` extra


def _check_dependencies() -> None:
    import importlib.util

    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise click.ClickException(
            f"the demo needs {', '.join(missing)}: pip install torch==2.13.0 "
            "'flowillower[demo]' (pin torch first on a CPU-only machine)")


def _validate(overrides: tuple[str, ...]) -> None:
    from .config import ConfigError, parse_overrides

    try:
        parse_overrides(overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


def _train_command(overrides: list[str]) -> list[str]:
    # The script itself, not `-m`: the run records it as its entry point, which is what
    # `flowillower replay` later transplants new fw.log lines into.
    return [sys.executable, str(TRAIN_SCRIPT), *overrides]


def _env(store_dir: str | None, threads: int | None = None) -> dict[str, str]:
    env = dict(os.environ)
    if store_dir:
        env["FLOWILLOWER_DIR"] = str(Path(store_dir).resolve())
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _run_training(overrides: list[str], store_dir: str | None) -> str:
    """Train in a child process (output streams through); return the new run's id."""
    from ...store.catalog import Store

    store = Store(store_dir)
    before = {row["id"] for row in store.runs()} if (store.root / "runs").is_dir() else set()
    code = subprocess.call(_train_command(overrides), env=_env(store_dir))
    if code:
        raise click.exceptions.Exit(code)
    new = [row["id"] for row in store.runs() if row["id"] not in before]
    if not new:
        raise click.ClickException("training finished but recorded no run (tracking.enabled="
                                   "false?)")
    return new[0]


def _write_pictures(run_ref: str | None, overrides: Sequence[str], store_dir: str | None,
                    out_dir: str | None = None) -> None:
    """`visualize` a run and say which files it wrote; bad settings are usage errors."""
    from .config import ConfigError
    from .visualize import visualize

    try:
        paths = visualize(run_ref, overrides, store_dir, out_dir)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    for path in paths:
        click.echo(f"wrote {path}")


overrides_argument = click.argument("overrides", nargs=-1, type=click.UNPROCESSED)


@click.group("demo")
def demo_command() -> None:
    """The showcase: flow matching from noise to a 2-D T-Rex, tracked end to end.

    Settings are Hydra-style KEY=VALUE overrides, e.g.

    \b
        flowillower demo train training.n_epochs=500 model.hidden_dims=[256,512,512,256]
        flowillower demo train --multirun training.learning_rate=0.001,0.003

    See `flowillower demo keys` for every setting and its default.
    """


@demo_command.command("train", context_settings={"ignore_unknown_options": True})
@overrides_argument
@dir_option
@friendly_errors
def train_command(overrides: tuple[str, ...], store_dir: str | None) -> None:
    """Train one model and record it as a run.

    With --multirun (-m), Hydra sweeps comma-separated values, one run per combination,
    e.g. `flowillower demo train --multirun training.learning_rate=0.001,0.003`.
    """
    _check_dependencies()
    from .config import SWEEP_FLAGS

    if any(o in SWEEP_FLAGS for o in overrides):
        _sweep(list(overrides), store_dir)
        return
    _validate(overrides)
    _run_training(list(overrides), store_dir)


def _sweep(argv: list[str], store_dir: str | None) -> None:
    """A Hydra sweep in one child process (Hydra parses the overrides and reports their
    errors); says which runs it recorded."""
    import importlib.util

    from ...store.catalog import Store

    if importlib.util.find_spec("hydra") is None:
        raise click.ClickException("--multirun needs Hydra: pip install 'flowillower"
                                   "[integrations]' (or hydra-core)")
    store = Store(store_dir)
    before = {row["id"] for row in store.runs()} if (store.root / "runs").is_dir() else set()
    code = subprocess.call(_train_command(argv), env=_env(store_dir))
    new = [row for row in store.runs() if row["id"] not in before] \
        if (store.root / "runs").is_dir() else []
    names = ", ".join(str(row.get("name") or row["id"]) for row in new)
    click.echo(f"sweep recorded {len(new)} run{'s' if len(new) != 1 else ''}: {names}"
               if new else "sweep recorded no run")
    if code:
        raise click.exceptions.Exit(code)


@demo_command.command("visualize", context_settings={"ignore_unknown_options": True})
@overrides_argument
@click.option("--run", "run_ref", default=None, help="Run id, prefix or name (default: the "
              "newest demo run with saved weights).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Folder for the files (default: visualization.output_dir/<run name>).")
@dir_option
@friendly_errors
def visualize_command(overrides: tuple[str, ...], run_ref: str | None, out_dir: str | None,
                      store_dir: str | None) -> None:
    """Draw a trained run: comparison, trajectory and vector-field PNGs, and a GIF."""
    _check_dependencies()
    _write_pictures(run_ref, overrides, store_dir, out_dir)


@demo_command.command("all", context_settings={"ignore_unknown_options": True})
@overrides_argument
@dir_option
@friendly_errors
def all_command(overrides: tuple[str, ...], store_dir: str | None) -> None:
    """Train, then write the run's pictures (visualization.* overrides apply to both)."""
    _check_dependencies()
    _validate(overrides)
    run_id = _run_training(list(overrides), store_dir)
    _write_pictures(run_id, [o for o in overrides if o.startswith("visualization.")], store_dir)


@demo_command.command("keys")
def keys_command() -> None:
    """Every setting with its default value."""
    from .config import Config, all_keys, lookup

    defaults = Config()
    for key in all_keys():
        click.echo(f"{key}={lookup(defaults, key)!r}")


@demo_command.command("quickstart", context_settings={"ignore_unknown_options": True})
@overrides_argument
@click.option("--lrs", default="0.001,0.003", show_default=True,
              help="Learning rates to compare, one run each.")
@click.option("--epochs", default=120, show_default=True, type=click.IntRange(1),
              help="Epochs per run.")
@click.option("--parallel/--sequential", default=True, show_default=True,
              help="Train the runs side by side, one CPU thread each.")
@click.option("--no-ui", is_flag=True, help="Stop after training (for CI).")
@click.option("--port", default=8686, show_default=True, help="Port of the UI.")
@click.option("--no-browser", is_flag=True, help="Serve the UI without opening a browser.")
@dir_option
@click.pass_context
@friendly_errors
def quickstart_command(ctx: click.Context, overrides: tuple[str, ...], lrs: str, epochs: int,
                       parallel: bool, no_ui: bool, port: int, no_browser: bool,
                       store_dir: str | None) -> None:
    """Train one short run per learning rate, then open the UI on them.

    Extra KEY=VALUE overrides apply to every run.
    """
    _check_dependencies()
    try:
        rates = [float(x) for x in lrs.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {lrs!r}",
                                 param_hint="--lrs") from None
    if not rates:
        raise click.BadParameter("give at least one learning rate", param_hint="--lrs")
    common = [f"training.n_epochs={epochs}", f"visualization.image_every={max(1, epochs // 5)}",
              f"training.log_interval={max(1, epochs // 4)}", *overrides]
    jobs = {f"lr-{lr:g}": [*common, f"training.learning_rate={lr}", f"tracking.name=lr-{lr:g}"]
            for lr in rates}
    for job in jobs.values():
        _validate(tuple(job))
    cores = os.cpu_count() or 1
    width = max(1, min(len(jobs), cores)) if parallel else 1
    threads = max(1, cores // width)
    click.echo(f"training {len(jobs)} runs x {epochs} epochs, {width} at a time, "
               f"{threads} thread{'s' if threads > 1 else ''} each")
    started = time.perf_counter()
    failed = _train_many(jobs, width, threads, store_dir)
    click.echo(f"trained in {time.perf_counter() - started:.1f}s")
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(jobs)} runs failed: "
                                   + "; ".join(failed))
    from ...cli.runs import ls_command

    ctx.invoke(ls_command, store_dir=store_dir)  # unnamed options take their defaults
    if no_ui:
        return
    from ...cli.ui import ui_command

    ctx.invoke(ui_command, port=port, store_dir=store_dir, no_browser=no_browser)


def _train_many(jobs: dict[str, list[str]], width: int, threads: int,
                store_dir: str | None) -> list[str]:
    """Run the training jobs (label -> overrides), `width` at a time; their output lines
    are prefixed with the label."""
    import threading

    failed: list[str] = []
    lock = threading.Lock()
    pending = list(jobs.items())

    def worker() -> None:
        while True:
            with lock:
                if not pending:
                    return
                label, job = pending.pop(0)
            proc = subprocess.Popen(_train_command([*job, f"training.threads={threads}"]),
                                    env=_env(store_dir, threads), stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            tail: list[str] = []
            for line in proc.stdout:
                tail = (tail + [line.rstrip()])[-5:]
                click.echo(f"[{label}] {line.rstrip()}")
            if proc.wait():
                with lock:
                    failed.append(f"{label} (exit {proc.returncode}: {' | '.join(tail[-2:])})")

    threads_ = [threading.Thread(target=worker, daemon=True) for _ in range(width)]
    for t in threads_:
        t.start()
    for t in threads_:
        t.join()
    return failed
