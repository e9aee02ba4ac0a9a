"""Pictures of a flow: target vs generated, the cloud along t, the velocity field, a GIF.

Drawn with numpy and Pillow rather than matplotlib: a panel of 2,000 points or 400 arrows
takes about a millisecond, so logging pictures during training costs the loop next to
nothing (matplotlib took ~0.25 s per set, 5% of the demo's training time at one set per
50 epochs). Each function takes numpy arrays and returns PNG (or GIF) bytes of a known
size: `PANEL` pixels square per panel plus a `HEADER`-pixel title strip, so a 2-panel
comparison is 2*PANEL x (PANEL + HEADER).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

PANEL = 240  # pixels per panel side
HEADER = 34  # title strip above the panels
LIMIT = 1.6  # panels span [-LIMIT, LIMIT]: noise at t=0 reaches past the data's [-1, 1]
WHITE = (255, 255, 255)
TARGET = (190, 195, 201)  # the target cloud when it is the subject
BACKDROP = (228, 231, 235)  # the target behind other things
SAMPLE = (232, 113, 10)
FRAME = (170, 170, 170)
INK = (40, 40, 40)
# Viridis, sampled at 8 stops: arrow colour by speed.
_VIRIDIS = np.array([(68, 1, 84), (70, 50, 127), (54, 92, 141), (39, 127, 142),
                     (31, 161, 135), (74, 194, 109), (159, 218, 58), (253, 231, 37)], float)


def _to_pixels(points: np.ndarray, size: int = PANEL) -> np.ndarray:
    """(n, 2) data coordinates -> (n, 2) integer (column, row) pixels; y points up."""
    p = np.asarray(points, dtype=np.float64)
    cols = (p[:, 0] / LIMIT * 0.5 + 0.5) * (size - 1)
    rows = (0.5 - p[:, 1] / LIMIT * 0.5) * (size - 1)
    return np.stack([cols, rows], 1)


def _dots(canvas: np.ndarray, points: np.ndarray, color: tuple[int, int, int],
          radius: int = 1) -> None:
    """Square dots of side 2*radius (radius 1: 2x2 pixels) drawn into an HxWx3 array."""
    size = canvas.shape[0]
    px = _to_pixels(points, size)
    px = px[np.isfinite(px).all(1) & (np.abs(px) < 1e6).all(1)]  # safe to cast to int
    px = np.round(px).astype(np.int64)
    for dc in range(-radius + 1, radius + 1):
        for dr in range(-radius + 1, radius + 1):
            c, r = px[:, 0] + dc, px[:, 1] + dr
            ok = (c >= 0) & (c < size) & (r >= 0) & (r < size)
            canvas[r[ok], c[ok]] = color


def _panel(*layers: tuple[np.ndarray | None, tuple[int, int, int]]) -> np.ndarray:
    canvas = np.full((PANEL, PANEL, 3), 255, np.uint8)
    for points, color in layers:
        if points is not None and len(points):
            _dots(canvas, points, color)
    return canvas


def _compose(panels: Sequence[np.ndarray], labels: Sequence[str], title: str):
    """Panels side by side under a title strip, each with a frame and a label."""
    from PIL import Image, ImageDraw

    width = PANEL * len(panels)
    image = Image.new("RGB", (width, PANEL + HEADER), WHITE)
    draw = ImageDraw.Draw(image)
    for i, (panel, label) in enumerate(zip(panels, labels)):
        x0 = i * PANEL
        image.paste(Image.fromarray(panel), (x0, HEADER))
        draw.rectangle([x0, HEADER, x0 + PANEL - 1, HEADER + PANEL - 1], outline=FRAME)
        draw.text((x0 + PANEL // 2, HEADER - 4), label, fill=INK, anchor="ms")
    if title:
        draw.text((width // 2, 3), title, fill=INK, anchor="mt")
    return image


def _png(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # speed over a few kB
    return buf.getvalue()


def comparison(target: np.ndarray, generated: np.ndarray, title: str = "") -> bytes:
    """Two panels: the target cloud and the generated one, same axes."""
    panels = [_panel((target, TARGET)), _panel((generated, SAMPLE))]
    return _png(_compose(panels, ["target", "generated"], title))


def trajectory(frames: Mapping[float, np.ndarray], target: np.ndarray | None = None,
               title: str = "") -> bytes:
    """One panel per time t: the cloud as it moves from noise (t=0) to data (t=1)."""
    times = sorted(frames)
    panels = [_panel((target, BACKDROP), (frames[t], SAMPLE)) for t in times]
    return _png(_compose(panels, [f"t = {t:.2f}" for t in times], title))


def vector_field(fields: Sequence[tuple[float, np.ndarray, np.ndarray]],
                 target: np.ndarray | None = None, title: str = "") -> bytes:
    """One panel per time: arrows of the learned velocity (colour = speed) on a grid."""
    panels = []
    for _, points, velocity in fields:
        panel = _panel((target, BACKDROP))
        v = np.asarray(velocity, dtype=np.float64)
        speed = np.linalg.norm(v, axis=1)
        grid = max(2, int(round(np.sqrt(len(points)))))
        spacing = PANEL / grid
        # Longest arrow = 0.9 grid cells; colours span this panel's speeds.
        scale = 0.9 * spacing / max(float(speed.max(initial=0.0)), 1e-12)
        low, high = float(speed.min(initial=0.0)), float(speed.max(initial=0.0))
        shade = (speed - low) / (high - low) if high > low else np.zeros_like(speed)
        base = _to_pixels(points)
        tips = base + np.stack([v[:, 0], -v[:, 1]], 1) * scale
        keep = (np.isfinite(base).all(1) & np.isfinite(tips).all(1)
                & (np.abs(base) < 1e6).all(1))  # safe to cast to int
        _arrows(panel, base[keep], tips[keep], _viridis_array(shade[keep]))
        panels.append(panel)
    labels = [f"v(x, t = {t:.2f})" for t, _, _ in fields]
    return _png(_compose(panels, labels, title))


def _arrows(canvas: np.ndarray, base: np.ndarray, tips: np.ndarray,
            colors: np.ndarray) -> None:
    """Lines base -> tip with a 3x3 head, all arrows at once (a Pillow call per arrow
    was most of a picture set's time). Each line is sampled at least once per pixel of
    its length, which draws the same connected run of pixels as a 1-pixel line."""
    if not len(base):
        return
    size = canvas.shape[0]
    length = float(np.abs(tips - base).max(initial=0.0))
    t = np.linspace(0.0, 1.0, int(np.ceil(min(length, 2.0 * size))) + 2)
    line = base[:, None, :] + (tips - base)[:, None, :] * t[None, :, None]  # (n, k, 2)
    head = tips[:, None, :] + np.array([(dc, dr) for dc in (-1, 0, 1) for dr in (-1, 0, 1)])
    pixels = np.round(np.concatenate([line, head], 1)).astype(np.int64)
    color = np.broadcast_to(colors[:, None, :], (*pixels.shape[:2], 3))
    pixels, color = pixels.reshape(-1, 2), color.reshape(-1, 3)
    ok = ((pixels >= 0) & (pixels < size)).all(1)
    canvas[pixels[ok, 1], pixels[ok, 0]] = color[ok]


def _viridis_array(x: np.ndarray) -> np.ndarray:
    """(n,) values in [0, 1] -> (n, 3) uint8 colours."""
    pos = np.clip(np.nan_to_num(x), 0, 1) * (len(_VIRIDIS) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(_VIRIDIS) - 1)
    mix = (pos - lo)[:, None]
    return (_VIRIDIS[lo] * (1 - mix) + _VIRIDIS[hi] * mix).round().astype(np.uint8)


def gif(frames: Sequence[np.ndarray], target: np.ndarray | None = None,
        frame_ms: int = 80) -> bytes:
    """An animated GIF of the cloud's journey (one frame per stored step, then a pause)."""
    from PIL import Image

    pictures = [Image.fromarray(_panel((target, BACKDROP), (f, SAMPLE))) for f in frames]
    durations = [frame_ms] * len(pictures)
    durations[-1] = 1500  # hold the final shape
    buf = io.BytesIO()
    pictures[0].save(buf, format="GIF", save_all=True, append_images=pictures[1:],
                     duration=durations, loop=0)
    return buf.getvalue()
