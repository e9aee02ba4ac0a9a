"""What the Hydra callback and the Jupyter extension cost, against the same work without
them, in one process.

Hydra (per job): a job logging `--steps` steps of 3 floats with `fw.log_metrics`, started
and ended by `FlowillowerCallback.on_job_start` / `on_job_end` with a config composed by
Hydra's compose API (the composed config with its `hydra` node, as Hydra hands it over),
against the same job started by `fw.init(config=<the flat config>)` and ended by
`fw.finish()`. Neither touches the logging call itself: the difference is per job.

Jupyter (per cell): an IPython shell (`InteractiveShell`, no kernel) runs a one-line
cell while a run is open and on disk, in a folder holding the notebook (`--cells` code
cells); with the extension loaded, each cell updates the run's notebook.json (cells so
far) and checks the notebook copy. Baseline: the same cell with the extension unloaded.
Rows alternate (`--repeats` rounds); the median round is reported.
Run: python benchmarks/bench_sweeps.py [--steps 2000] [--jobs 10] [--cells 40] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import flowillower as fw


def _hydra_rows(tmp: Path, steps: int, jobs: int, repeats: int) -> dict[str, float]:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    from flowillower.args import flatten_config
    from flowillower.integrations.hydra import FlowillowerCallback

    (tmp / "config.yaml").write_text(
        "training:\n  lr: 0.1\n  epochs: 3\n  label: lr-${training.lr}\n"
        "model:\n  width: 64\n  depth: 4\n")
    with initialize_config_dir(config_dir=str(tmp), version_base=None):
        cfg = compose("config", overrides=["training.lr=0.2"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
        cfg.hydra.job.name = "bench"
        cfg.hydra.sweep.dir = str(tmp / "multirun")
    HydraConfig.instance().set_config(cfg)
    task = cfg.copy()
    with open_dict(task):
        del task["hydra"]
    plain = flatten_config(OmegaConf.to_container(task, resolve=True))
    callback = FlowillowerCallback(dir=str(tmp / "store"))
    done = JobReturn()
    done.status = JobStatus.COMPLETED

    def log() -> None:
        for i in range(steps):
            fw.log_metrics({"loss": 1.0 / (i + 1), "lr": 0.2, "acc": 0.5}, step=i)

    def baseline() -> None:
        fw.init(config=plain, dir=str(tmp / "store"))
        log()
        fw.finish()

    def hydra() -> None:
        callback.on_job_start(config=cfg)
        log()
        callback.on_job_end(config=cfg, job_return=done)

    times: dict[str, list[float]] = {"fw.init(config) + fw.finish (baseline)": [],
                                     "FlowillowerCallback job start + end": []}
    for _ in range(repeats):
        for name, job in zip(times, (baseline, hydra)):
            start = time.perf_counter()
            for _ in range(jobs):
                job()
            times[name].append((time.perf_counter() - start) / jobs)
    return {name: statistics.median(t) for name, t in times.items()}


def _jupyter_rows(tmp: Path, cells: int, repeats: int) -> dict[str, float]:
    import nbformat
    from IPython.core.interactiveshell import InteractiveShell

    from flowillower.integrations import jupyter

    folder = tmp / "nb"
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"x_{i} = {i} * 2\ny_{i} = x_{i} + 1")
                for i in range(cells)]
    nbformat.write(nb, folder / "analysis.ipynb")
    os.chdir(folder)
    shell = InteractiveShell.instance()
    for cell in nb.cells[:cells // 2]:  # history the search can match the notebook by
        shell.run_cell(cell.source, store_history=True)
    run = fw.init(dir=str(tmp / "nbstore"))
    jupyter.attach(run)  # what the creation hook does in a kernel
    fw.log("x", 1.0)
    run.flush()

    def extension(on: bool) -> None:
        if on:
            jupyter.load_ipython_extension(shell)
        else:
            jupyter.unload_ipython_extension(shell)

    times: dict[str, list[float]] = {"cell without the extension (baseline)": [],
                                     "cell with the extension (notebook.json)": []}
    rounds = 20
    for _ in range(repeats):
        for name, on in zip(times, (False, True)):
            extension(on)
            start = time.perf_counter()
            for i in range(rounds):
                shell.run_cell(f"y = {i}", store_history=True)
            times[name].append((time.perf_counter() - start) / rounds)
            if on:
                extension(False)
    fw.finish()
    assert (run.dir / "notebook.json").is_file()
    os.chdir(tmp.parent)  # the shell's exit handler reads the working directory
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=10)
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=5)
    args, _ = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "project").mkdir()
        os.chdir(tmp / "project")  # each run snapshots the working directory: a small one
        try:
            rows = _hydra_rows(tmp, args.steps, args.jobs, args.repeats)
        except ImportError as exc:
            print(f"hydra not installed ({exc}): its rows are left out")
            rows = {}
        print(f"\nHydra: one job logging {args.steps} steps x 3 floats "
              f"(median of {args.repeats} rounds of {args.jobs} jobs)")
        print(f"{'row':45s} {'ms / job':>10s} {'vs baseline':>12s}")
        base = next(iter(rows.values()), None)
        for name, seconds in rows.items():
            print(f"{name:45s} {seconds * 1e3:10.2f} {seconds / base:11.2f}x")
        try:
            rows = _jupyter_rows(tmp, args.cells, args.repeats)
        except ImportError as exc:
            print(f"IPython / nbformat not installed ({exc}): the Jupyter rows are left out")
            return
        print(f"\nJupyter: one cell, a run open, a notebook of {args.cells} cells "
              f"(median of {args.repeats} rounds of 20 cells)")
        print(f"{'row':45s} {'ms / cell':>10s} {'vs baseline':>12s}")
        base = next(iter(rows.values()))
        for name, seconds in rows.items():
            print(f"{name:45s} {seconds * 1e3:10.2f} {seconds / base:11.2f}x")


if __name__ == "__main__":
    main()
