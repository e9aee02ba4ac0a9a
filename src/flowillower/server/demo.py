"""A small store of realistic runs written through the real logging API.

Used by the UI tests, the benchmark and `flowillower ui --demo` (try the UI with no
training script). Needs numpy only: images are encoded by the store's PNG writer and the
model graph is a hand-written document in the `flowillower.graph/1` format
(docs/model.md) with matching `fw.watch`-style statistic series.
"""

from __future__ import annotations

import math
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

from ..run import Run

# A 3-layer MLP with a residual add, as `capture_graph` would record it.
_LAYERS = [("fc1", "Linear", [8, 16], 16 * 8 + 16), ("act", "ReLU", [8, 16], 0),
           ("fc2", "Linear", [8, 16], 16 * 16 + 16), ("head", "Linear", [8, 4], 16 * 4 + 4)]


def demo_graph() -> dict[str, Any]:
    """A graph document of a small residual MLP (`model/graph.json` format)."""
    params = sum(p for *_, p in _LAYERS)
    nodes: list[dict[str, Any]] = [
        {"id": "in:x", "kind": "input", "path": None, "call": None, "name": "x",
         "type": "Tensor", "params": 0, "parent": None, "group": None, "in_shapes": [],
         "out_shapes": [[8, 16]], "dtype": "float32", "series": []},
        {"id": "m::0", "kind": "module", "path": "", "call": 0, "type": "ResMLP",
         "params": params, "parent": None, "group": None, "in_shapes": [[8, 16]],
         "out_shapes": [[8, 4]], "dtype": "float32", "series": []},
    ]
    edges: list[dict[str, Any]] = []
    prev = "in:x"
    for i, (path, typ, shape, n_params) in enumerate(_LAYERS):
        series = [f"act/{path}/{s}" for s in ("mean", "std", "min", "max", "norm", "zeros",
                                              "nan", "inf", "hist")]
        if n_params:
            series += [f"{k}/{path}.weight/{s}" for k, s in
                       (("grad", "norm"), ("param", "norm"), ("param", "update_ratio"))]
        nodes.append({"id": f"m:{path}:0", "kind": "module", "path": path, "call": 0,
                      "type": typ, "params": n_params, "parent": "", "group": "m::0",
                      "in_shapes": [[8, 16]], "out_shapes": [shape], "dtype": "float32",
                      "series": series})
        op = f"o{i}"
        nodes.append({"id": op, "kind": "op", "path": None, "call": None,
                      "type": "linear" if typ == "Linear" else "relu", "params": 0,
                      "parent": path, "group": f"m:{path}:0", "in_shapes": [[8, 16]],
                      "out_shapes": [shape], "dtype": "float32", "series": []})
        edges.append({"src": prev, "dst": op, "shape": [8, 16], "dtype": "float32"})
        prev = op
        if path == "fc2":  # the residual: fc2(relu(fc1(x))) + x
            nodes.append({"id": "o9", "kind": "op", "path": None, "call": None,
                          "type": "add", "params": 0, "parent": "", "group": "m::0",
                          "in_shapes": [[8, 16], [8, 16]], "out_shapes": [[8, 16]],
                          "dtype": "float32", "series": []})
            edges.append({"src": op, "dst": "o9", "shape": [8, 16], "dtype": "float32"})
            edges.append({"src": "in:x", "dst": "o9", "shape": [8, 16], "dtype": "float32"})
            prev = "o9"
    nodes.append({"id": "out:output", "kind": "output", "path": None, "call": None,
                  "name": "output", "type": "Tensor", "params": 0, "parent": None,
                  "group": None, "in_shapes": [[8, 4]], "out_shapes": [], "dtype": "float32",
                  "series": []})
    edges.append({"src": prev, "dst": "out:output", "shape": [8, 4], "dtype": "float32"})
    modules = [{"path": "", "type": "ResMLP", "depth": 0, "children": [p for p, *_ in _LAYERS],
                "params": params, "trainable": params, "own_params": 0, "parameters": [],
                "buffers": [], "extra": ""}]
    for path, typ, shape, n_params in _LAYERS:
        plist = []
        if n_params:
            out_f = shape[1]
            plist = [{"name": "weight", "shape": [out_f, 16], "numel": out_f * 16,
                      "dtype": "float32", "device": "cpu", "trainable": True},
                     {"name": "bias", "shape": [out_f], "numel": out_f, "dtype": "float32",
                      "device": "cpu", "trainable": True}]
        modules.append({"path": path, "type": typ, "depth": 1, "children": [],
                        "params": n_params, "trainable": n_params, "own_params": n_params,
                        "parameters": plist, "buffers": [],
                        "extra": "in_features=16" if typ == "Linear" else ""})
    return {"format": "flowillower.graph/1", "root": "ResMLP", "nodes": nodes, "edges": edges,
            "hierarchy": {"": [p for p, *_ in _LAYERS], **{p: [] for p, *_ in _LAYERS}},
            "tree": {"format": "flowillower.tree/1", "root": "ResMLP", "params": params,
                     "trainable": params, "frozen": 0, "param_bytes": params * 4,
                     "buffers": 0, "buffer_bytes": 0, "dtypes": ["float32"],
                     "devices": ["cpu"], "modules": modules},
            "probed": True, "truncated": False, "error": None, "error_path": None,
            "export": None, "seconds": 0.001}


def _image(step: int, size: int = 32) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / size
    phase = step / 25.0
    return np.stack([0.5 + 0.5 * np.sin(6 * xx + phase), 0.5 + 0.5 * np.cos(5 * yy - phase),
                     np.full_like(xx, (step % 50) / 50.0)], axis=-1)


def make_demo_store(root: str | os.PathLike[str], runs: int = 6, steps: int = 200, *,
                    epochs: int = 4, media: bool = True, model: bool = True,
                    seed: int = 0, finish: bool = True, names: list[str] | None = None
                    ) -> list[str]:
    """Write `runs` runs into the store at `root` and return their ids (oldest first).

    Each run has args (lr, batch_size, dropout, optimizer, seed), per-step `train/loss`
    and `train/lr`, per-epoch `val/acc` and `val/loss`, and with `media` an image every quarter
    of the run plus a text artifact; with `model` the first run also has a model graph and
    watch-style statistics (act/..., grad/..., a histogram series).
    """
    rng = random.Random(seed)
    ids = []
    per_epoch = max(1, steps // epochs)
    for r in range(runs):
        name = names[r] if names and r < len(names) else f"demo-{r}"
        run = Run("demo", name, dir=root, snapshot=False, tags=["demo"])
        lr = [0.1, 0.03, 0.01, 0.003][r % 4]
        args = {"lr": lr, "batch_size": [32, 64][r % 2], "dropout": round(rng.random() / 2, 2),
                "optimizer": "adam" if r % 3 else "sgd", "seed": r, "layers": 3}
        run.record_args(args)
        rate = 2.0 + 40 * lr
        step = 0
        for epoch in range(epochs):
            with run.iteration("epoch", epoch):
                for _ in range(per_epoch):
                    with run.iteration("step", step):
                        loss = 2.5 * math.exp(-rate * step / steps) + 0.1 + 0.05 * rng.random()
                        run.log_metrics({"train/loss": loss, "train/lr": lr * (1 - step / steps)},
                                        step)
                        if model and r == 0 and step % 5 == 0:
                            _log_watch_stats(run, step, rng)
                    step += 1
                acc = 1 - 0.9 * math.exp(-rate * step / steps) - 0.05 * rng.random()
                run.log_metrics({"val/acc": acc, "val/loss": 1.1 - acc}, step)
                if media and epoch % max(1, epochs // 4) == 0:
                    run.log_image("samples", _image(step), step, caption=f"epoch {epoch}")
        if media:
            art = Path(root) / f".demo-artifact-{r}.txt"
            art.parent.mkdir(parents=True, exist_ok=True)
            art.write_text(f"checkpoint notes for {name}\nfinal loss {loss:.4f}\n")
            run.log_artifact("notes", art, step)
            art.unlink()
        if model and r == 0:
            run.write_json("model/graph.json", demo_graph())
        ids.append(run.id)
        if finish:
            run.finish()
        else:
            run.flush()
    return ids


def _log_watch_stats(run: Run, step: int, rng: random.Random) -> None:
    stats: dict[str, Any] = {}
    for i, (path, _typ, _shape, n_params) in enumerate(_LAYERS):
        mean = 0.1 * (i + 1) * math.exp(-step / 300)
        std = 0.5 + 0.2 * i + 0.05 * rng.random()
        stats[f"act/{path}/mean"] = mean
        stats[f"act/{path}/std"] = std
        stats[f"act/{path}/min"] = mean - 3 * std
        stats[f"act/{path}/max"] = mean + 3 * std
        stats[f"act/{path}/norm"] = std * 11.3
        stats[f"act/{path}/zeros"] = 0.5 if path == "act" else 0.0
        counts = [int(200 * math.exp(-((b - 16 + 8 * mean) ** 2) / (2 * (4 + i) ** 2)))
                  for b in range(32)]
        stats[f"act/{path}/hist"] = {"min": mean - 3 * std, "max": mean + 3 * std,
                                     "counts": counts}
        if n_params:
            stats[f"grad/{path}.weight/norm"] = 1.0 / (1 + step / 50) + 0.01 * rng.random()
            stats[f"param/{path}.weight/norm"] = 3.0 + step / 500
    run.log_metrics(stats, step, role="watch")  # as fw.watch records them
