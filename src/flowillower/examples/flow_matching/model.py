"""The velocity network, the conditional flow-matching loss and ODE sampling.

Flow matching learns a velocity field v(x, t) whose flow carries noise x0 ~ N(0, I) at
t = 0 to data x1 at t = 1. On the straight path x_t = t*x1 + (1-t)*x0 the velocity is
x1 - x0, so the loss is a plain regression onto that target at a random time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class VelocityNet(nn.Module):
    """v(x, t): an MLP over [x, embed(t)], SiLU activations.

    The time embedding is Linear(1, time_embed_dim) - SiLU - Linear on the raw t.
    """

    def __init__(self, data_dim: int = 2, time_embed_dim: int = 64,
                 hidden_dims: Sequence[int] = (128, 256, 256, 128)) -> None:
        super().__init__()
        self.time_embed = nn.Sequential(nn.Linear(1, time_embed_dim), nn.SiLU(),
                                        nn.Linear(time_embed_dim, time_embed_dim))
        layers: list[nn.Module] = []
        width = data_dim + time_embed_dim
        for size in hidden_dims:
            layers += [nn.Linear(width, size), nn.SiLU()]
            width = size
        layers.append(nn.Linear(width, data_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Velocity at points x (n, d) and times t (n, 1)."""
        return self.net(torch.cat([x, self.time_embed(t)], dim=-1))


def flow_matching_loss(model: nn.Module, x1: torch.Tensor) -> torch.Tensor:
    """Conditional flow-matching MSE for a batch of data points (draws from torch's RNG)."""
    x0 = torch.randn_like(x1)
    t = torch.rand(len(x1), 1, device=x1.device, dtype=x1.dtype)
    xt = t * x1 + (1 - t) * x0
    return ((model(xt, t) - (x1 - x0)) ** 2).mean()


@torch.no_grad()
def integrate(model: nn.Module, x0: torch.Tensor, n_steps: int = 100, method: str = "euler",
              keep: Sequence[float] | None = None) -> tuple[torch.Tensor, dict[float, torch.Tensor]]:
    """Carry x0 from t=0 to t=1 along the learned field; Euler or midpoint (RK2) steps.

    Returns the end points and, for each time in `keep`, the cloud at the step nearest to
    it (as CPU tensors), which is what the trajectory plot draws.
    """
    if method not in ("euler", "midpoint"):
        raise ValueError(f"unknown sampler {method!r}: use euler or midpoint")
    was_training = model.training
    model.eval()
    x = x0.clone()
    h = 1.0 / n_steps
    wanted: dict[int, list[float]] = {}
    for t in keep or ():
        wanted.setdefault(round(t * n_steps), []).append(t)
    frames: dict[float, torch.Tensor] = {}
    ones = torch.ones(len(x), 1, device=x.device, dtype=x.dtype)
    for i in range(n_steps + 1):
        if i in wanted:
            snapshot = x.detach().cpu().clone()
            frames.update((t, snapshot) for t in wanted[i])
        if i == n_steps:
            break
        t = ones * (i * h)
        if method == "euler":
            x = x + h * model(x, t)
        else:
            mid = x + (h / 2) * model(x, t)
            x = x + h * model(mid, t + h / 2)
    model.train(was_training)
    return x, frames


def noise(n: int, dim: int = 2, seed: int = 0, device: str | torch.device = "cpu"
          ) -> torch.Tensor:
    """Fixed starting noise (its own generator: sampling never disturbs training's RNG)."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=gen).to(device)


@torch.no_grad()
def velocity_grid(model: nn.Module, t: float, grid_size: int = 20, extent: float = 1.5,
                  device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The field on a grid_size x grid_size grid over [-extent, extent]^2 at time t.

    Returns (points (g*g, 2), velocities (g*g, 2)) on the CPU.
    """
    axis = torch.linspace(-extent, extent, grid_size)
    gx, gy = torch.meshgrid(axis, axis, indexing="xy")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    was_training = model.training
    model.eval()
    v = model(points.to(device), torch.full((len(points), 1), float(t), device=device))
    model.train(was_training)
    return points, v.cpu()
