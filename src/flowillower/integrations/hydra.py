"""Hydra: a callback that makes each Hydra job a flowillower run.

    # config.yaml
    hydra:
      callbacks:
        flowillower:
          _target_: flowillower.integrations.hydra.FlowillowerCallback
          project: my-project        # optional, like the other settings below

Each job (one with `python app.py`, one per combination with `--multirun`) records the
composed config, resolved, as args, plus `hydra.overrides` (the job's own overrides),
`hydra.job.name`, `hydra.job.num` and, in a sweep, `sweep` (the sweep directory) as an
arg and a `sweep:<dir>` tag, so the runs table shows it and charts can group by it.
Jobs that Hydra runs one after another in the same process each get their own run. The
task function logs with `fw.log` as usual; a `fw.init` inside the job joins the job's
settings (its own project / name / tags win). While a job runs, `sys.argv` reads
`[script, *Hydra flags, *job overrides]` (`--multirun` left out), so the run records the
command that re-runs that job alone (what `flowillower replay` executes). Hydra is
imported only by this module.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from hydra.experimental.callback import Callback

from .. import api
from ..store.layout import find_store_root

__all__ = ["FlowillowerCallback", "job_settings"]


def job_settings(config: Any) -> dict[str, Any]:
    """What a job records about Hydra: `hydra.overrides`, `hydra.job.name`, `.num`,
    `.id`, `hydra.mode`, and `sweep` (the sweep directory) in a multirun."""
    from omegaconf import OmegaConf

    hydra = config.hydra
    overrides = [str(o) for o in OmegaConf.to_container(hydra.overrides.task)]
    job = hydra.job
    values: dict[str, Any] = {
        "hydra.overrides": " ".join(overrides),
        "hydra.job.name": str(job.name),
    }
    mode = OmegaConf.select(hydra, "mode", default=None)
    values["hydra.mode"] = getattr(mode, "name", str(mode or ""))  # RUN or MULTIRUN
    num = OmegaConf.select(job, "num", default=None)
    if num is not None:
        values["hydra.job.num"] = int(num)
    job_id = OmegaConf.select(job, "id", default=None)
    if job_id is not None:
        values["hydra.job.id"] = str(job_id)
    if values["hydra.mode"] == "MULTIRUN":
        values["sweep"] = str(hydra.sweep.dir)
    return values


def _hydra_flags(argv: list[str]) -> list[str]:
    """The command line's Hydra flags (`--config-name x`, `-cd dir`, ...) without the
    sweep switch and without the overrides (a job has its own)."""
    return [arg for arg in argv if arg not in ("-m", "--multirun")
            and (arg.startswith("-") or "=" not in arg)]


class FlowillowerCallback(Callback):
    """Records every Hydra job as a flowillower run (see the module docstring).

    `project`, `name`, `tags`, `dir`: defaults for the job's runs (the job's own
    `fw.init` arguments win). `name` defaults to `<job name>-<job number>` in a sweep.
    """

    def __init__(self, project: str | None = None, name: str | None = None,
                 tags: Iterable[str] = (), dir: str | None = None) -> None:
        self.project, self.name, self.tags = project, name, list(tags or ())
        # Hydra may change directory per job (hydra.job.chdir): the store is the one of
        # the directory the command was started in.
        self.dir = str(find_store_root(dir))
        self._scope: api.JobScope | None = None
        self._argv: list[str] | None = None

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        """Open the job's scope: its runs get the resolved config and the job's facts."""
        from omegaconf import OmegaConf

        from ..args import flatten_config

        settings = job_settings(config)
        # The task's config (without Hydra's own node), resolved node by node in place:
        # copying the whole config first costs ~20 ms a job for Hydra's node alone.
        task = {key: OmegaConf.to_container(config[key], resolve=True)
                if OmegaConf.is_config(config[key]) else config[key]
                for key in config if key != "hydra"}
        resolved = flatten_config(task)
        tags = list(self.tags)
        name = self.name
        if "sweep" in settings:
            tags.append(f"sweep:{settings['sweep']}")
            name = name or f"{settings['hydra.job.name']}-{settings.get('hydra.job.num', 0)}"
        self._scope = api.begin_job(self.project, name, tags, {**resolved, **settings},
                                    self.dir)
        # The command that re-runs this job alone, for run.json (and replay).
        self._argv = list(sys.argv)
        overrides = [str(o) for o in OmegaConf.to_container(config.hydra.overrides.task)]
        sys.argv[:] = [self._argv[0], *_hydra_flags(self._argv[1:]), *overrides]

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        """Finish the job's runs: `success`, or `failed` (with the traceback) when the task
        raised. A job that logged nothing still leaves a run with its config, so every
        job of a sweep, failed ones included, is a row of the runs table."""
        from hydra.core.utils import JobStatus

        scope, self._scope = self._scope, None
        try:
            if scope is None:
                return
            failed = getattr(job_return, "status", None) == JobStatus.FAILED
            if not scope.runs and not api.is_debug():
                run = api.init()  # records the scope's args
                if failed:  # a job dying before it logs is still a row of the sweep
                    run.ensure_on_disk()
            if failed:
                # Hydra's `return_value` property re-raises a failed job's exception
                # (and prints to stderr): its stored value is read instead.
                error = getattr(job_return, "_return_value", None)
                for run in scope.runs:
                    if run.status is None and isinstance(error, BaseException):
                        run.fail(error)
            scope.close("failed" if failed else "success")
        finally:
            if self._argv is not None:
                sys.argv[:] = self._argv
                self._argv = None

