"""The demo's configuration: one typed tree, changed from the command line Hydra-style.

    flowillower demo train training.n_epochs=500 model.hidden_dims=[256,512,512,256]

Overrides are parsed and type-checked by OmegaConf against the dataclasses below (the same
grammar as Hydra: `[1,2]` lists, `null`, quoted strings), then checked for sense (positive
sizes, known data sets). Every problem is reported at once, with the key, the value and
what would be accepted. Importing this module needs omegaconf only (no torch), so the CLI
can refuse a bad override before it starts a training process.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ...errors import FlowillowerError
from ...sizes import parse_size

DATASETS = ("trex", "moons", "spirals", "checkerboard", "gaussians")
SWEEP_FLAGS = ("--multirun", "-m")  # Hydra's: the command runs a sweep (see sweep.py)
SAMPLERS = ("euler", "midpoint")
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(FlowillowerError, ValueError):
    """An override names an unknown key, has a value of the wrong type or makes no sense."""


@dataclass
class DataConfig:
    """The target point cloud."""

    name: str = "trex"  # one of DATASETS
    n_samples: int = 10_000
    noise: float = 0.02  # standard deviation of the Gaussian noise added to each point


@dataclass
class ModelConfig:
    """The velocity network v(x, t)."""

    data_dim: int = 2
    time_embed_dim: int = 64
    hidden_dims: list[int] = field(default_factory=lambda: [128, 256, 256, 128])


@dataclass
class TrainingConfig:
    """The optimisation loop."""

    n_epochs: int = 300
    batch_size: int = 256
    learning_rate: float = 0.003
    lr_schedule: str = "cosine"  # cosine (decays to 0 over n_epochs) | constant
    seed: int = 42
    device: str = "auto"  # auto = cuda when available, else cpu
    log_interval: int = 50  # print a progress line every N epochs (0: never)
    threads: int = 0  # torch CPU threads (0: torch's default)


@dataclass
class EvaluationConfig:
    """The sample-quality metrics logged after each epoch."""

    every: int = 1  # epochs between evaluations (0: none; the final_* distances remain)
    n_samples: int = 512
    n_steps: int = 6  # ODE steps of the cheap per-epoch sampler
    sampler: str = "midpoint"


@dataclass
class VisualizationConfig:
    """Sampling for pictures, and what is drawn."""

    n_sampling_steps: int = 100
    sampler: str = "euler"  # euler | midpoint (RK2)
    n_samples: int = 2000
    grid_size: int = 20  # vector-field arrows per side
    times: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    image_every: int = 50  # epochs between images logged into the run (0: only at the end)
    gif: bool = True  # also log an animated GIF of the final sampling trajectory
    output_dir: str = "outputs/visualizations"  # where `demo visualize` writes its files


@dataclass
class TrackingConfig:
    """What flowillower records (enabled=false runs the same loop untracked)."""

    enabled: bool = True
    project: str = "flow-matching"
    name: str = ""  # run name ("" : flowillower's default)
    watch_every: int = 10  # fw.watch statistics every N steps (0: off)
    log_model: bool = True  # the model graph in the UI's model page
    # fw.checkpointing's time budget (fraction of the loop's time). The library's default
    # is 0.02; this net's epochs are short and each capture writes 2.3 MB, whose kernel
    # writeback the budget cannot see, so the demo asks for less. A replay of an inner-
    # loop value re-runs every step anyway: checkpoints are its parallel entry points.
    checkpoint_overhead: float = 0.005
    # fw.checkpointing's disk budget for the run ("" : only the library's free-space floor).
    # 300 epochs write ~70-140 MB; the cap keeps a long run from writing gigabytes.
    checkpoint_disk: str = "1GB"


@dataclass
class Config:
    """The whole demo configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    visualization: VisualizationConfig = field(default_factory=VisualizationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)


_OVERRIDE = re.compile(r"^(?P<key>[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)=(?P<value>.*)$",
                       re.DOTALL)


def all_keys(cfg: Any = None, prefix: str = "") -> list[str]:
    """Every settable dotted key, e.g. `training.learning_rate`."""
    cfg = Config() if cfg is None else cfg
    keys: list[str] = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        full = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            keys += all_keys(value, full + ".")
        else:
            keys.append(full)
    return keys


def lookup(cfg: Config, key: str) -> Any:
    """The value of a dotted key, e.g. `lookup(cfg, "training.seed")`."""
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=3, cutoff=0.6)
    hint = f"; did you mean {' or '.join(close)}?" if close else (
        f"; keys are: {', '.join(all_keys())}")
    return f"{key}: no such setting{hint}"


def parse_overrides(overrides: Sequence[str], base: Config | None = None) -> Config:
    """Apply `key=value` overrides to the defaults (or `base`); raise ConfigError on any problem.

    >>> parse_overrides(["training.n_epochs=5", "model.hidden_dims=[8,8]"]).model.hidden_dims
    [8, 8]
    """
    import yaml  # omegaconf's own dependency: it reads each value as YAML
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    problems: list[str] = []
    pairs: list[tuple[str, str]] = []
    for token in overrides:
        match = _OVERRIDE.match(token.strip())
        if token.startswith(("+", "~")):
            problems.append(f"{token!r}: adding or deleting keys is not supported; "
                            "set an existing key as key=value")
        elif match is None:
            problems.append(f"{token!r}: expected key=value, e.g. training.n_epochs=500")
        elif match["key"] not in all_keys():
            problems.append(_unknown_key(match["key"]))
        else:
            pairs.append((match["key"], match["value"]))
    if problems:
        raise ConfigError(_message(problems))

    merged = OmegaConf.structured(base if base is not None else Config())
    for key, raw in pairs:
        # One key at a time, so each message names the override that caused it.
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([f"{key}={raw}"]))
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            expected = type(lookup(Config(), key)).__name__
            detail = str(exc).splitlines()[0].replace("AnyNode", "a single value")
            problems.append(f"{key}={raw}: expected {_type_word(expected)} ({detail})")
    if problems:
        raise ConfigError(_message(problems))
    cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    problems = validate(cfg)
    if problems:
        raise ConfigError(_message(problems))
    return cfg


def _type_word(name: str) -> str:
    return {"int": "an integer", "float": "a number", "bool": "true or false",
            "str": "a string", "list": "a list like [1,2]"}.get(name, name)


def _message(problems: list[str]) -> str:
    head = "invalid demo configuration" if len(problems) > 1 else "invalid demo setting"
    return head + ":\n  " + "\n  ".join(problems)


def validate(cfg: Config) -> list[str]:
    """Sense checks OmegaConf's types cannot express; one message per problem."""
    problems: list[str] = []

    def need(ok: bool, key: str, text: str) -> None:
        if not ok:
            problems.append(f"{key}={lookup(cfg, key)!r}: {text}")

    need(cfg.data.name in DATASETS, "data.name", f"choose one of {', '.join(DATASETS)}")
    need(cfg.data.n_samples >= 2, "data.n_samples", "needs at least 2 points")
    need(0 <= cfg.data.noise < float("inf"), "data.noise", "must be a finite number >= 0")
    need(cfg.model.data_dim == 2, "model.data_dim", "the demo's data sets are 2-D")
    need(cfg.model.time_embed_dim >= 1, "model.time_embed_dim", "must be >= 1")
    need(len(cfg.model.hidden_dims) >= 1 and all(d >= 1 for d in cfg.model.hidden_dims),
         "model.hidden_dims", "give one or more layer widths >= 1, e.g. [128,256,128]")
    need(cfg.training.n_epochs >= 1, "training.n_epochs", "must be >= 1")
    need(cfg.training.batch_size >= 1, "training.batch_size", "must be >= 1")
    need(0 < cfg.training.learning_rate < float("inf"), "training.learning_rate",
         "must be a positive number")
    need(cfg.training.lr_schedule in LR_SCHEDULES, "training.lr_schedule",
         f"choose one of {', '.join(LR_SCHEDULES)}")
    need(cfg.training.log_interval >= 0, "training.log_interval", "must be >= 0")
    need(cfg.training.threads >= 0, "training.threads", "must be >= 0 (0: torch's default)")
    need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.training.device) is not None,
         "training.device", "use auto, cpu, cuda, cuda:N or mps")
    need(cfg.evaluation.every >= 0, "evaluation.every", "must be >= 0")
    need(cfg.evaluation.n_samples >= 2, "evaluation.n_samples", "needs at least 2 points")
    need(cfg.evaluation.n_steps >= 1, "evaluation.n_steps", "must be >= 1")
    need(cfg.evaluation.sampler in SAMPLERS, "evaluation.sampler",
         f"choose one of {', '.join(SAMPLERS)}")
    need(cfg.visualization.n_sampling_steps >= 1, "visualization.n_sampling_steps",
         "must be >= 1")
    need(cfg.visualization.sampler in SAMPLERS, "visualization.sampler",
         f"choose one of {', '.join(SAMPLERS)}")
    need(cfg.visualization.n_samples >= 2, "visualization.n_samples", "needs at least 2")
    need(2 <= cfg.visualization.grid_size <= 200, "visualization.grid_size",
         "must be between 2 and 200")
    need(len(cfg.visualization.times) >= 1
         and all(0.0 <= t <= 1.0 for t in cfg.visualization.times),
         "visualization.times", "give one or more times in [0, 1]")
    need(cfg.visualization.image_every >= 0, "visualization.image_every", "must be >= 0")
    need(cfg.visualization.output_dir.strip() != "", "visualization.output_dir",
         "must name a directory")
    need(cfg.tracking.watch_every >= 0, "tracking.watch_every", "must be >= 0 (0: off)")
    need(0 < cfg.tracking.checkpoint_overhead < 1, "tracking.checkpoint_overhead",
         "must be a fraction in (0, 1), e.g. 0.02")
    need(cfg.tracking.project.strip() != "", "tracking.project", "must not be empty")
    if cfg.tracking.checkpoint_disk.strip():
        try:
            parse_size(cfg.tracking.checkpoint_disk)
        except ValueError:
            need(False, "tracking.checkpoint_disk",
                 "must be a size like 500MB or 2GiB (or '' for no cap)")
    return problems


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested plain dicts (what is recorded in the run)."""
    return dataclasses.asdict(cfg)


def from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a Config from recorded flat (`a.b`) or nested values; unknown keys are ignored.

    Used by `demo visualize` to rebuild a finished run's model from its recorded args.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    known = set(all_keys())
    flat = _flatten(values)
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        if key in known:
            group, _, name = key.partition(".")
            nested.setdefault(group, {})[name] = value
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config()), OmegaConf.create(nested))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the recorded configuration does not fit the demo's: {exc}") from None
    cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    problems = validate(cfg)
    if problems:
        raise ConfigError(_message(problems))
    return cfg


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
