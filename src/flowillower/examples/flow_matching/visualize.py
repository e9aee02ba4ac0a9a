"""Pictures from a finished demo run: rebuild the model from the run, sample, draw, save.

    flowillower demo visualize                       # the newest demo run
    flowillower demo visualize --run train-1a2b visualization.sampler=midpoint

The run's recorded configuration rebuilds the network and its `velocity_net` artifact
gives the weights, so this works on any machine the run was pulled to. Only
`visualization.*` settings may be changed here (the rest describes the trained model).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ...errors import FlowillowerError
from .config import Config, ConfigError, from_dict, parse_overrides

PROJECT = "flow-matching"
GIF_FRAMES = 25  # GIF frames after the first, evenly spaced in t
GIF_TIMES = [i / GIF_FRAMES for i in range(GIF_FRAMES + 1)]


def pictures(model: Any, cfg: Config, target: Any, generated: Any, frames: dict[float, Any],
             title: str) -> dict[str, bytes]:
    """Comparison, trajectory and vector-field PNGs of `model` as it is now.

    `generated` and `frames` come from `integrate(..., keep=cfg.visualization.times)`;
    used by the training script (during and after training) and by `visualize`.
    """
    from . import plots
    from .model import velocity_grid

    times = sorted(cfg.visualization.times)
    device = next(model.parameters()).device
    fields = [(t, *(a.numpy() for a in velocity_grid(model, t, cfg.visualization.grid_size,
                                                       device=device))) for t in times]
    target_np = target.cpu().numpy()
    return {
        "comparison": plots.comparison(target_np, generated.cpu().numpy(), title),
        "trajectory": plots.trajectory({t: frames[t].numpy() for t in times}, target_np, title),
        "vector_field": plots.vector_field(fields, target_np, title),
    }


def find_run(store: Any, ref: str | None, project: str = PROJECT) -> str:
    """The run id for `ref` (id, prefix or name), else the newest run with saved weights."""
    if ref:
        return store.resolve(ref)
    for row in store.runs():
        if row.get("project") == project and row.get("status") != "running":
            if _weights_path(store.run_dir(row["id"])) is not None:
                return row["id"]
    raise FlowillowerError(f"no finished {project!r} run with saved weights in {store.root}; "
                           "train one first: flowillower demo train")


def _weights_path(run_dir: Path) -> Path | None:
    found = sorted((run_dir / "artifacts").glob("velocity_net-*/*/velocity_net.pt"))
    return found[-1] if found else None


def load_run(store: Any, run_id: str) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    """(config, state dict, run meta) of a recorded demo run."""
    import torch

    reader = store.reader(run_id)
    data = reader.load()
    recorded = {s.name: s.last() for s in data.series.values() if s.role == "arg"}
    try:
        cfg = from_dict(recorded)
    except ConfigError as exc:
        raise FlowillowerError(f"run {run_id} was not recorded by the demo: {exc}") from None
    weights = _weights_path(store.run_dir(run_id))
    if weights is None:
        raise FlowillowerError(f"run {run_id} has no saved weights (velocity_net artifact); "
                               "it did not finish, or tracking was off")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    return cfg, state, reader.meta


def visualize(run: str | None = None, overrides: Sequence[str] = (),
              store_dir: str | os.PathLike[str] | None = None,
              output_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Write comparison.png, trajectory.png, vector_field.png and flow.gif; return paths."""
    import torch

    from ...store.catalog import Store
    from . import plots
    from .data import make_dataset
    from .metrics import chamfer_distance, energy_distance
    from .model import VelocityNet, integrate, noise

    wrong = [o for o in overrides if not o.lstrip("+~").startswith("visualization.")]
    if wrong:
        raise ConfigError(f"only visualization.* settings can change after training, got "
                          f"{', '.join(wrong)}")
    store = Store(store_dir, must_exist=True)
    run_id = find_run(store, run)
    recorded, state, meta = load_run(store, run_id)
    cfg = parse_overrides(overrides, base=recorded)
    model = VelocityNet(cfg.model.data_dim, cfg.model.time_embed_dim, cfg.model.hidden_dims)
    model.load_state_dict(state)
    vis = cfg.visualization
    target = torch.from_numpy(make_dataset(cfg.data.name, cfg.data.n_samples, cfg.data.noise,
                                           cfg.training.seed))[:vis.n_samples]
    x0 = noise(vis.n_samples, cfg.model.data_dim, cfg.training.seed + 2)
    generated, frames = integrate(model, x0, vis.n_sampling_steps, vis.sampler,
                                  keep=[*vis.times, *GIF_TIMES])
    title = (f"{meta.get('name', run_id)}: {vis.sampler} x {vis.n_sampling_steps}, "
             f"energy distance {energy_distance(generated, target):.4f}, "
             f"Chamfer {chamfer_distance(generated, target):.4f}")
    files = {f"{name}.png": png for name, png in
             pictures(model, cfg, target, generated, frames, title).items()}
    if vis.gif:
        files["flow.gif"] = plots.gif([frames[t].numpy() for t in GIF_TIMES], target.numpy())
    out = Path(output_dir or vis.output_dir) / (meta.get("name") or run_id)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, data in files.items():
        path = out / name
        path.write_bytes(data)
        paths.append(path)
    return paths
