"""flowillower: a local-first, git-powered experiment tracker with hindsight logging.

    import flowillower as fw
    fw.init(project="demo")
    for epoch in fw.loop("epoch", range(10)):
        fw.log("loss", train_one_epoch())

Importing this package is cheap: pandas, torch and git are only loaded by the functions
that need them.
"""

from __future__ import annotations

import os
from typing import Any

from . import args as _args
from .errors import FlowillowerError
from .runhooks import on_run_created

__version__ = "0.1.0"

# Our `--kwargs` pairs leave sys.argv before the script's own parser runs.
_args.install_from_sys_argv()


def _join_replay(run: Any) -> None:
    """Inside a hindsight replay worker, the run follows the replay's plan. The logging
    core knows nothing of replays: the replay plugs in here, from above. The variable is
    `hindsight.session.REPLAY_ENV`, read here without importing hindsight (import cost)."""
    if os.environ.get("FLOWILLOWER_REPLAY"):
        from .hindsight.session import join_replay

        join_replay(run)


def _attach_heartbeat(run: Any) -> None:
    """Every live run beats ($FLOWILLOWER_HEARTBEAT)."""
    from .heartbeat import attach

    attach(run)


def _attach_system_metrics(run: Any) -> None:
    """$FLOWILLOWER_SYSTEM_METRICS=<seconds> samples system metrics for every run."""
    from .sysmetrics import attach_from_env

    attach_from_env(run)


on_run_created(_join_replay)
on_run_created(_attach_heartbeat)
on_run_created(_attach_system_metrics)

# Resolved on first use, name -> "module:attribute": the store, the CLI and the UI import
# this package without loading the logging core (api, run, writer), nor pandas, torch, git.
_API = ("arg", "config", "current_run", "debug", "finish", "flush", "init", "iteration",
        "log", "log_artifact", "log_image", "log_metrics", "log_model", "loop", "unwatch",
        "watch")
_LAZY = {
    **{name: f"flowillower.api:{name}" for name in _API},
    "Run": "flowillower.run:Run",
    "dataframe": "flowillower.queries.dataframe:dataframe",
    "query": "flowillower.queries.sql:query",
    "runs": "flowillower.queries.dataframe:runs",
    "push": "flowillower.server.share:push",
    "show": "flowillower.integrations.jupyter:show",
    "pull": "flowillower.remote:pull",
    "replay": "flowillower.hindsight.replay:replay",
    "checkpointing": "flowillower.hindsight.checkpointing:checkpointing",
    "alert": "flowillower.alerts:alert",
    "alert_rules": "flowillower.alerts:alert_rules",
    "system_metrics": "flowillower.monitoring:system_metrics",
    "use_artifact": "flowillower.lineage:use_artifact",
    "best": "flowillower.lineage:best",
    "register": "flowillower.registry:register",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'flowillower' has no attribute {name!r}")
    import importlib

    module_name, attr = target.split(":")
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))


__all__ = ["FlowillowerError", *_LAZY]
