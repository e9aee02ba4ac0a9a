"""Train a flow-matching model on a 2-D point cloud, tracked end to end with flowillower.

    flowillower demo train training.n_epochs=500 training.learning_rate=0.005
    python -m flowillower.examples.flow_matching.train data.name=moons   # the same
    flowillower demo train --multirun training.learning_rate=0.001,0.003  # Hydra sweep

What gets recorded: the whole resolved configuration; the loss at every step and per
epoch; energy and Chamfer distances between generated and target points after each epoch;
comparison / trajectory / vector-field pictures every `visualization.image_every` epochs
and at the end, with a GIF of the final sampling; the model's data-flow graph
(`fw.log_model`) and its activation / gradient statistics every `tracking.watch_every`
steps (`fw.watch`); checkpoints for hindsight replay (`fw.checkpointing`); the weights.

This file is the script `flowillower replay` transplants new `fw.log` lines into, so the
training loop lives here, in plain sight, and the helpers live in sibling modules.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import torch

import flowillower as fw
from flowillower.examples.flow_matching import plots
from flowillower.examples.flow_matching.config import (
    SWEEP_FLAGS,
    ConfigError,
    parse_overrides,
    to_dict,
)
from flowillower.examples.flow_matching.data import make_dataset
from flowillower.examples.flow_matching.metrics import chamfer_distance, energy_distance
from flowillower.examples.flow_matching.model import (
    VelocityNet,
    flow_matching_loss,
    integrate,
    noise,
)
from flowillower.examples.flow_matching.visualize import GIF_TIMES, pictures
from flowillower.model.watcher import Watcher


def resolve_device(name: str) -> torch.device:
    """`auto` is cuda when available, else cpu; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training.device={name}: CUDA is not available on this machine; "
                          "use training.device=cpu (or auto)")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("training.device=mps: MPS is not available on this machine")
    return torch.device(name)


def watch(model: VelocityNet, every: int) -> Watcher:
    """`fw.watch` as the demo uses it (benchmarks/bench_demo.py reuses it).

    Activations after each SiLU and at the output (a Linear's output is the next SiLU's
    input: watching both doubles the cost of a watched step for little), a 1,024-point
    histogram sample, weight norms and update ratios every 50 steps.
    """
    return fw.watch(model, every=every, sample=1024, param_every=50,
                    modules=lambda path, module: isinstance(module, torch.nn.SiLU)
                    or path == f"net.{len(model.net) - 1}")


def main(argv: list[str] | None = None) -> int:
    """Train with `key=value` overrides; return the process exit code."""
    try:
        cfg = parse_overrides(sys.argv[1:] if argv is None else argv)
        device = resolve_device(cfg.training.device)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cfg.training.device = str(device)  # record what was used, not "auto"
    if not cfg.tracking.enabled:
        fw.debug(True)  # the same loop with every flowillower call turned into a no-op
    if cfg.training.threads:
        torch.set_num_threads(cfg.training.threads)
    run = fw.init(project=cfg.tracking.project, name=cfg.tracking.name or None,
                  config=to_dict(cfg), tags=["demo", cfg.data.name])

    torch.manual_seed(cfg.training.seed)
    points = make_dataset(cfg.data.name, cfg.data.n_samples, cfg.data.noise, cfg.training.seed)
    data = torch.from_numpy(points).to(device)
    model = VelocityNet(cfg.model.data_dim, cfg.model.time_embed_dim,
                        cfg.model.hidden_dims).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.training.learning_rate)
    n_epochs = cfg.training.n_epochs
    # A constant rate leaves the samples wandering between epochs; decaying it settles them.
    if cfg.training.lr_schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=n_epochs)
    else:
        scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.tracking.log_model:
        fw.log_model(model, (data[:4], torch.zeros(4, 1, device=device)))
    watcher = watch(model, cfg.tracking.watch_every) if cfg.tracking.watch_every else None

    # Fixed noise and target points, so the distance curves measure the model, not the draw.
    eval_x0 = noise(cfg.evaluation.n_samples, cfg.model.data_dim, cfg.training.seed + 1, device)
    eval_target = data[:cfg.evaluation.n_samples]
    batch_size = cfg.training.batch_size
    n_batches = math.ceil(len(data) / batch_size)
    started, started_cpu = time.perf_counter(), time.process_time()
    # A smaller time budget than the library's 2% (tracking.checkpoint_overhead, see
    # config.py): this net's epochs are short, so captures would be frequent.
    with fw.checkpointing(model=model, optimizer=optimizer, scheduler=scheduler,
                          max_overhead=cfg.tracking.checkpoint_overhead,
                          max_disk=cfg.tracking.checkpoint_disk.strip() or None):
        for epoch in fw.loop("epoch", range(n_epochs)):
            order = torch.randperm(len(data), device=device)
            total = 0.0
            for batch in fw.loop("batch", range(n_batches)):
                x1 = data[order[batch * batch_size:(batch + 1) * batch_size]]
                loss = flow_matching_loss(model, x1)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += fw.log("loss", loss.item())
            epoch_loss = fw.log("epoch_loss", total / n_batches)
            fw.log("lr", scheduler.get_last_lr()[0])
            scheduler.step()
            last = epoch + 1 == n_epochs
            if watcher is not None:
                watcher.pause()  # sampling below is not training: keep it out of the statistics
            every = cfg.visualization.image_every
            images_now = cfg.tracking.enabled and every and (epoch + 1) % every == 0 and not last
            if images_now or (cfg.evaluation.every and
                              ((epoch + 1) % cfg.evaluation.every == 0 or last)):
                generated, frames = integrate(model, eval_x0, cfg.evaluation.n_steps,
                                              cfg.evaluation.sampler,
                                              keep=cfg.visualization.times)
                fw.log("energy_distance", energy_distance(generated, eval_target))
                fw.log("chamfer_distance", chamfer_distance(generated, eval_target))
                if images_now:
                    # Drawn from the evaluation samples: the picture the distances measure.
                    for name, png in pictures(model, cfg, eval_target, generated, frames,
                                              f"epoch {epoch + 1}").items():
                        fw.log_image(name, png, caption=f"epoch {epoch + 1}")
            interval = cfg.training.log_interval
            if interval and ((epoch + 1) % interval == 0 or last):
                print(f"epoch {epoch + 1:4d}/{n_epochs}  loss {epoch_loss:.4f}  "
                      f"{time.perf_counter() - started:6.1f}s  "
                      f"(cpu {time.process_time() - started_cpu:.1f}s)", flush=True)

    if watcher is not None:
        watcher.pause()
    # Final pictures with the full sampler; the distances at its quality go in as well.
    final_x0 = noise(cfg.visualization.n_samples, cfg.model.data_dim, cfg.training.seed + 2,
                     device)
    target = data[:cfg.visualization.n_samples]
    generated, frames = integrate(model, final_x0, cfg.visualization.n_sampling_steps,
                                  cfg.visualization.sampler,
                                  keep=[*cfg.visualization.times, *GIF_TIMES])
    energy = fw.log("final_energy_distance", energy_distance(generated, target))
    chamfer = fw.log("final_chamfer_distance", chamfer_distance(generated, target))
    print(f"samples: energy distance {energy:.5f}, Chamfer distance {chamfer:.5f}", flush=True)
    if cfg.tracking.enabled:
        title = (f"{cfg.data.name}, {n_epochs} epochs, lr {cfg.training.learning_rate:g}, "
                 f"{cfg.visualization.sampler} x {cfg.visualization.n_sampling_steps}")
        # At the last epoch's step, after the pictures taken during training.
        caption = f"after training ({cfg.visualization.sampler} x {cfg.visualization.n_sampling_steps})"
        for name, png in pictures(model, cfg, target, generated, frames, title).items():
            fw.log_image(name, png, step=n_epochs - 1, caption=caption)
        if cfg.visualization.gif:
            fw.log_image("flow_gif", plots.gif([frames[t].numpy() for t in GIF_TIMES],
                                               target.cpu().numpy()), step=n_epochs - 1,
                         caption=caption)
        with tempfile.TemporaryDirectory() as tmp:
            weights = Path(tmp) / "velocity_net.pt"
            torch.save(model.state_dict(), weights)
            fw.log_artifact("velocity_net", weights)
    fw.finish()
    if cfg.tracking.enabled:
        print(f"run {run.id} ({run.name}) recorded in {run.store_root}", flush=True)
    return 0


if __name__ == "__main__":
    if any(arg in SWEEP_FLAGS for arg in sys.argv[1:]):  # a Hydra sweep: one run per job
        from flowillower.examples.flow_matching.sweep import run as sweep

        sys.exit(sweep(main))
    sys.exit(main())
