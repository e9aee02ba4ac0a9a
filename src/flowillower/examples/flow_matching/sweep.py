"""The demo's training as a Hydra app: `flowillower demo train --multirun a=1,2 ...`.

    flowillower demo train --multirun training.learning_rate=0.001,0.003
    python -m flowillower.examples.flow_matching.train -m training.learning_rate=0.001,0.003

Hydra composes the demo's `Config` (registered as a structured config, so Hydra checks
types) with the overrides and runs one job per combination, one after another in this
process, writing its usual `multirun/<date>/<time>/<job>` folders. The
`flowillower.integrations.hydra.FlowillowerCallback` makes each job a run tagged with the
sweep; the job itself is `train.main` with the job's overrides (validated as
`demo train` does), so a job's run is the run
`flowillower demo train <its overrides>` would record (and what a replay re-runs).
Needs hydra-core (the `integrations` extra); imported only for a sweep.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig

import flowillower as fw
from flowillower.examples.flow_matching.config import Config

CONFIG_NAME = "flow_matching_demo"
CALLBACK = "flowillower.integrations.hydra.FlowillowerCallback"


def _register() -> None:
    store = ConfigStore.instance()
    store.store(name=f"{CONFIG_NAME}_schema", node=Config)
    store.store(name=CONFIG_NAME, node={
        "defaults": [f"{CONFIG_NAME}_schema", "_self_"],
        "hydra": {"callbacks": {"flowillower": {"_target_": CALLBACK}},
                  "job": {"name": "flow_matching"}}})


_register()


def run(train: Callable[[list[str]], int]) -> None:
    """Run the sweep that `sys.argv` describes; each job is `train(<job's overrides>)`
    (`train.main`, passed in: this module is imported by train.py's entry point)."""

    @hydra.main(version_base=None, config_name=CONFIG_NAME)
    def app(cfg: Any) -> None:
        overrides = [str(o) for o in HydraConfig.get().overrides.task]
        # tracking.enabled=false turns flowillower off for its own job only, not the next.
        fw.debug(False)
        code = train(overrides)
        if code:
            raise RuntimeError(f"the job {' '.join(overrides)} failed (exit code {code})")

    app()
