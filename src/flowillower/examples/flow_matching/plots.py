"""Pictures of a flow: target vs generated, the cloud along t, the velocity field, a GIF.

Each function takes numpy arrays and returns PNG (or GIF) bytes of a known pixel size:
`PANEL` inches per panel at `dpi` dots per inch, so a 2-panel comparison at dpi=80 is
480 x 240 pixels. Matplotlib's object API is used (no pyplot), which keeps it free of
global figure state and usable from any thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

PANEL = 3.0  # inches per panel side
LIMIT = 1.6  # axes span [-LIMIT, LIMIT]: noise at t=0 reaches past the data's [-1, 1]
TARGET_COLOR = "#9aa0a6"
SAMPLE_COLOR = "#e8710a"


def _figure(n_panels: int):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(PANEL * n_panels, PANEL))
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.03, top=0.88, wspace=0.06)
    for ax in axes:
        ax.set_xlim(-LIMIT, LIMIT)
        ax.set_ylim(-LIMIT, LIMIT)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _png(fig, dpi: int) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # no bbox="tight": the pixel size stays exact
    return buf.getvalue()


def comparison(target: np.ndarray, generated: np.ndarray, title: str = "",
               dpi: int = 80) -> bytes:
    """Two panels: the target cloud and the generated one, same axes."""
    fig, (left, right) = _figure(2)
    left.scatter(target[:, 0], target[:, 1], s=1, c=TARGET_COLOR, linewidths=0)
    left.set_title("target", fontsize=10)
    right.scatter(generated[:, 0], generated[:, 1], s=1, c=SAMPLE_COLOR, linewidths=0)
    right.set_title("generated", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return _png(fig, dpi)


def trajectory(frames: Mapping[float, np.ndarray], target: np.ndarray | None = None,
               title: str = "", dpi: int = 80) -> bytes:
    """One panel per time t: the cloud as it moves from noise (t=0) to data (t=1)."""
    times = sorted(frames)
    fig, axes = _figure(len(times))
    for ax, t in zip(axes, times):
        if target is not None:
            ax.scatter(target[:, 0], target[:, 1], s=1, c="#e3e5e8", linewidths=0)
        pts = np.asarray(frames[t])
        ax.scatter(pts[:, 0], pts[:, 1], s=1, c=SAMPLE_COLOR, linewidths=0)
        ax.set_title(f"t = {t:.2f}", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return _png(fig, dpi)


def vector_field(fields: Sequence[tuple[float, np.ndarray, np.ndarray]],
                 target: np.ndarray | None = None, title: str = "", dpi: int = 80) -> bytes:
    """One panel per time: arrows of the learned velocity (colour = speed) on a grid."""
    fig, axes = _figure(len(fields))
    for ax, (t, points, velocity) in zip(axes, fields):
        if target is not None:
            ax.scatter(target[:, 0], target[:, 1], s=1, c="#e3e5e8", linewidths=0)
        v = np.asarray(velocity)
        speed = np.linalg.norm(v, axis=1)
        ax.quiver(points[:, 0], points[:, 1], v[:, 0], v[:, 1], speed, cmap="viridis",
                  angles="xy", pivot="mid", width=0.006)
        ax.set_title(f"v(x, t = {t:.2f})", fontsize=10)
    if title:
        fig.suptitle(title, fontsize=9, y=0.995)
    return _png(fig, dpi)


def raster(points: np.ndarray, size: int = 240, target: np.ndarray | None = None
           ) -> np.ndarray:
    """A fast size x size RGB picture of a cloud (no matplotlib): one GIF frame."""
    image = np.full((size, size, 3), 255, np.uint8)
    for pts, color in ((target, (220, 223, 227)), (points, (232, 113, 10))):
        if pts is None:
            continue
        ij = np.round((np.asarray(pts) / LIMIT * 0.5 + 0.5) * (size - 1)).astype(int)
        ok = ((ij >= 0) & (ij < size)).all(1)
        ij = ij[ok]
        image[size - 1 - ij[:, 1], ij[:, 0]] = color
    return image


def gif(frames: Sequence[np.ndarray], target: np.ndarray | None = None, size: int = 240,
        frame_ms: int = 60) -> bytes:
    """An animated GIF of the cloud's journey (one frame per stored step, then a pause)."""
    from PIL import Image

    pictures = [Image.fromarray(raster(f, size, target)) for f in frames]
    durations = [frame_ms] * len(pictures)
    durations[-1] = 1200  # hold the final shape
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=durations, loop=0, optimize=False)
    return buf.getvalue()
