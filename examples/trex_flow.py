"""Flow matching on a 2-D T-Rex, tracked with flowillower (our showcase workload).

A velocity MLP learns to carry Gaussian noise onto a T-Rex-shaped point cloud. The two
flowillower lines that matter are `fw.init(...)` and `fw.log(...)`; the rest shows off
hindsight checkpoints, the model graph and activation statistics.

    python examples/trex_flow.py --kwargs epochs=300 lr=0.003
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import flowillower as fw


def trex_points(n: int, noise: float, seed: int) -> np.ndarray:
    """A T-Rex silhouette from hand-made curves (ellipses and segments), in [-1, 1]^2."""
    rng = np.random.default_rng(seed)

    def ellipse(cx, cy, rx, ry, k, t0=0.0, t1=2 * math.pi):
        t = rng.uniform(t0, t1, k)
        return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], 1)

    def segment(x0, y0, x1, y1, k):
        s = rng.uniform(0, 1, k)[:, None]
        return np.array([x0, y0]) * (1 - s) + np.array([x1, y1]) * s

    # (generator, share of the points): body first, then head, tail, legs and arms.
    parts = [
        (lambda k: ellipse(0.0, 0.0, 0.55, 0.32, k), 0.26),          # body
        (lambda k: ellipse(0.62, 0.55, 0.22, 0.13, k), 0.12),        # head
        (lambda k: segment(0.45, 0.48, 0.84, 0.45, k), 0.05),        # jaw
        (lambda k: segment(0.35, 0.22, 0.48, 0.5, k), 0.06),         # neck
        (lambda k: segment(-0.5, 0.05, -1.25, 0.35, k), 0.10),       # tail top
        (lambda k: segment(-0.5, -0.15, -1.25, 0.35, k), 0.08),      # tail bottom
        (lambda k: segment(-0.12, -0.28, -0.22, -0.85, k), 0.07),    # back leg
        (lambda k: segment(-0.22, -0.85, -0.05, -0.9, k), 0.03),     # back foot
        (lambda k: segment(0.15, -0.28, 0.1, -0.85, k), 0.07),       # front leg
        (lambda k: segment(0.1, -0.85, 0.28, -0.9, k), 0.03),        # front foot
        (lambda k: segment(0.42, 0.05, 0.6, -0.1, k), 0.03),         # arm
        (lambda k: ellipse(0.66, 0.6, 0.03, 0.03, k), 0.02),         # eye
    ]
    counts = [int(n * share) for _, share in parts]
    counts[0] += n - sum(counts)
    points = np.concatenate([make(k) for (make, _), k in zip(parts, counts)])
    points += rng.normal(0, noise, points.shape)
    points -= points.mean(0)
    points /= np.abs(points).max()
    return points.astype(np.float32)


class VelocityNet(nn.Module):
    """v(x, t): an MLP on [x, embed(t)] (the Flow Visualizer architecture)."""

    def __init__(self, hidden: list[int], time_dim: int = 64) -> None:
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(1, time_dim), nn.SiLU(),
                                        nn.Linear(time_dim, time_dim))
        layers: list[nn.Module] = []
        width = 2 + time_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        layers.append(nn.Linear(width, 2))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, self.time_embed(t)], dim=-1))


@torch.no_grad()
def sample(model: nn.Module, n: int, steps: int, seed: int) -> np.ndarray:
    """Euler-integrate the learned velocity field from noise (t=0) to data (t=1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=gen)
    for i in range(steps):
        t = torch.full((n, 1), i / steps)
        x = x + model(x, t) / steps
    return x.numpy()


def scatter_image(points: np.ndarray, target: np.ndarray, size: int = 160) -> np.ndarray:
    """A small RGB picture of generated (orange) over target (grey) points."""
    image = np.full((size, size, 3), 255, np.uint8)
    for pts, color in ((target, (200, 200, 200)), (points, (230, 110, 20))):
        ij = np.clip(((pts * 0.45 + 0.5) * (size - 1)).round().astype(int), 0, size - 1)
        image[size - 1 - ij[:, 1], ij[:, 0]] = color
    return image


def main() -> None:
    fw.init(project="trex-flow", tags=["demo"])
    epochs = fw.arg("epochs", 60)
    lr = fw.arg("lr", 0.003)
    batch_size = fw.arg("batch_size", 256)
    hidden = fw.arg("hidden", [128, 256, 256, 128])
    n_samples = fw.arg("n_samples", 10_000)
    noise = fw.arg("noise", 0.02)
    seed = fw.arg("seed", 42)
    image_every = fw.arg("image_every", 20)

    torch.manual_seed(seed)
    data = torch.from_numpy(trex_points(n_samples, noise, seed))
    model = VelocityNet(hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    fw.log_model(model, (data[:4], torch.zeros(4, 1)))
    fw.watch(model, every=50)

    n_batches = math.ceil(len(data) / batch_size)
    with fw.checkpointing(model=model, optimizer=optimizer):
        for epoch in fw.loop("epoch", range(epochs)):
            order = torch.randperm(len(data))
            total = 0.0
            for b in fw.loop("batch", range(n_batches)):
                x1 = data[order[b * batch_size:(b + 1) * batch_size]]
                x0 = torch.randn_like(x1)
                t = torch.rand(len(x1), 1)
                xt = t * x1 + (1 - t) * x0
                loss = ((model(xt, t) - (x1 - x0)) ** 2).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += fw.log("loss", loss.item())
            fw.log("epoch_loss", total / n_batches)
            if (epoch + 1) % image_every == 0 or epoch + 1 == epochs:
                generated = sample(model, 2000, 100, seed)
                fw.log_image("samples", scatter_image(generated, data[:2000].numpy()))
    generated = sample(model, 4000, 100, seed)
    # How far generated points land from the T-Rex: mean distance to the nearest target.
    dist = torch.cdist(torch.from_numpy(generated), data[:4000]).min(1).values.mean()
    fw.log("nearest_distance", dist.item())
    fw.finish()


if __name__ == "__main__":
    main()
