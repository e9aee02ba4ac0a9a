"""2-D target point clouds, generated in code (nothing is downloaded).

Every data set is returned as a float32 array of shape (n, 2), centred and scaled so that
its largest coordinate is 1 in absolute value (all points lie in [-1, 1]^2), with
`noise`-sized Gaussian jitter added before scaling. The same (name, n, noise, seed) always
gives the same points.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

# A T-Rex facing right, drawn as filled shapes: ellipses (cx, cy, rx, ry, tilt in degrees)
# and tapered capsules (x0, y0, x1, y1, radius at start, radius at end). Points are spread
# over the union in proportion to each shape's area, so the density is even.
_TREX_ELLIPSES = {
    "body": (0.0, 0.02, 0.44, 0.25, 18.0),
    "head": (0.66, 0.60, 0.22, 0.12, 6.0),
    "thigh": (-0.08, -0.12, 0.17, 0.23, -10.0),
}
_TREX_CAPSULES = {
    "neck": (0.30, 0.18, 0.52, 0.52, 0.12, 0.09),
    "jaw": (0.52, 0.45, 0.84, 0.40, 0.045, 0.03),
    "tail": (-0.36, 0.06, -1.30, -0.22, 0.18, 0.02),
    "back shin": (-0.12, -0.28, -0.02, -0.66, 0.07, 0.05),
    "back foot": (-0.05, -0.68, 0.16, -0.70, 0.035, 0.025),
    "front shin": (0.10, -0.25, 0.20, -0.62, 0.06, 0.045),
    "front foot": (0.18, -0.64, 0.36, -0.66, 0.03, 0.02),
    "upper arm": (0.36, 0.12, 0.47, 0.00, 0.035, 0.03),
    "forearm": (0.47, 0.00, 0.56, 0.04, 0.028, 0.018),
}


def _ellipse(rng: np.random.Generator, k: int, cx: float, cy: float, rx: float, ry: float,
             tilt: float) -> np.ndarray:
    r = np.sqrt(rng.uniform(0, 1, k))  # sqrt: uniform over the area, not bunched at the centre
    a = rng.uniform(0, 2 * math.pi, k)
    x, y = rx * r * np.cos(a), ry * r * np.sin(a)
    c, s = math.cos(math.radians(tilt)), math.sin(math.radians(tilt))
    return np.stack([cx + c * x - s * y, cy + s * x + c * y], 1)


def _capsule(rng: np.random.Generator, k: int, x0: float, y0: float, x1: float, y1: float,
             r0: float, r1: float) -> np.ndarray:
    """Points inside a segment thickened by a radius going linearly from r0 to r1."""
    start, end = np.array([x0, y0]), np.array([x1, y1])
    length = float(np.linalg.norm(end - start))
    along = (end - start) / length
    normal = np.array([-along[1], along[0]])
    # Draw more than needed from the bounding strip and keep the ones inside (rejection).
    out = np.empty((0, 2))
    rmax = max(r0, r1)
    while len(out) < k:
        m = 2 * (k - len(out)) + 16
        u = rng.uniform(-rmax, length + rmax, m)
        v = rng.uniform(-rmax, rmax, m)
        s = np.clip(u / length, 0, 1)
        radius = r0 + (r1 - r0) * s
        inside = (u - s * length) ** 2 + v**2 <= radius**2
        pts = start + u[inside, None] * along + v[inside, None] * normal
        out = np.concatenate([out, pts])
    return out[:k]


def _capsule_area(x0: float, y0: float, x1: float, y1: float, r0: float, r1: float) -> float:
    return math.dist((x0, y0), (x1, y1)) * (r0 + r1) + math.pi * (r0**2 + r1**2) / 2


def trex(n: int, rng: np.random.Generator) -> np.ndarray:
    """Points inside a T-Rex silhouette (body, head, jaw, neck, tail, legs, arms)."""
    makers: list[tuple[float, Callable[[int], np.ndarray]]] = []
    for cx, cy, rx, ry, tilt in _TREX_ELLIPSES.values():
        makers.append((math.pi * rx * ry,
                       lambda k, p=(cx, cy, rx, ry, tilt): _ellipse(rng, k, *p)))
    for params in _TREX_CAPSULES.values():
        makers.append((_capsule_area(*params),
                       lambda k, p=params: _capsule(rng, k, *p)))
    areas = np.array([a for a, _ in makers])
    counts = rng.multinomial(n, areas / areas.sum())
    points = np.concatenate([make(int(k)) for (_, make), k in zip(makers, counts) if k])
    return points[rng.permutation(len(points))]


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two interleaved half circles."""
    upper = rng.uniform(size=n) < 0.5
    a = rng.uniform(0, math.pi, n)
    x = np.where(upper, np.cos(a), 1 - np.cos(a))
    y = np.where(upper, np.sin(a), 0.5 - np.sin(a))
    return np.stack([x, y], 1)


def spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    """Two arms winding out from the centre."""
    arm = rng.integers(0, 2, n)
    r = np.sqrt(rng.uniform(0.02, 1, n))
    a = 3 * math.pi * r + math.pi * arm
    return np.stack([r * np.cos(a), r * np.sin(a)], 1)


def checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform points on the 8 dark squares of a 4x4 board."""
    dark = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
    cells = dark[rng.integers(0, len(dark), n)]
    return cells + rng.uniform(0, 1, (n, 2))


def gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    """Eight Gaussian blobs on a circle."""
    k = rng.integers(0, 8, n)
    centres = np.stack([np.cos(k * math.pi / 4), np.sin(k * math.pi / 4)], 1)
    return centres + rng.normal(0, 0.08, (n, 2))


GENERATORS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "trex": trex,
    "moons": moons,
    "spirals": spirals,
    "checkerboard": checkerboard,
    "gaussians": gaussians,
}


def make_dataset(name: str = "trex", n_samples: int = 10_000, noise: float = 0.02,
                 seed: int = 42) -> np.ndarray:
    """`n_samples` points of the named data set, float32, shape (n, 2), inside [-1, 1]^2.

    >>> make_dataset("moons", 100, 0.0, seed=0).shape
    (100, 2)
    """
    if name not in GENERATORS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(GENERATORS)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    rng = np.random.default_rng(seed)
    points = GENERATORS[name](int(n_samples), rng).astype(np.float64)
    if noise > 0:
        points = points + rng.normal(0, noise, points.shape)
    # Centre on the bounding box (not the mean) so the figure sits in the middle.
    points -= (points.max(0) + points.min(0)) / 2
    scale = np.abs(points).max()
    if scale > 0:
        points /= scale
    return points.astype(np.float32)
