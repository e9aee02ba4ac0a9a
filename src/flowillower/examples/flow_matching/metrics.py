"""How close generated points are to the target cloud (lower is better for both)."""

from __future__ import annotations

import torch


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2E|X-Y| - E|X-X'| - E|Y-Y'| (V-statistic); 0 iff the clouds match.

    Sensitive to the whole distribution (mass in the wrong place, missing modes), unlike
    a nearest-neighbour distance.
    """
    x, y = x.double(), y.double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def chamfer_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Symmetric Chamfer distance: mean nearest-neighbour distance, both directions, averaged.

    Low when every generated point lies on the target and every target point is covered.
    """
    d = torch.cdist(x.double(), y.double())
    return float((d.min(1).values.mean() + d.min(0).values.mean()) / 2)
