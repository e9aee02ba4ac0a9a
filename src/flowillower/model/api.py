"""Run integration: `log_model` and `watch` on top of three Run methods.

Only ``run.write_json(relpath, obj)``, ``run.log_metrics(values, step)`` and
``run.on_step(callback) -> handle with .remove()`` are used, so any object providing them
works (tests use a fake run). torch is imported only when these functions are called.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .watcher import Watcher

__all__ = ["log_model", "watch", "unwatch", "graph_relpath"]

_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")


def graph_relpath(name: str | None = None) -> str:
    """Where `log_model` stores the graph inside a run: `model/graph.json` or
    `model/<name>/graph.json` for an extra named model (e.g. a GAN's discriminator)."""
    if name is None:
        return "model/graph.json"
    if not _NAME_OK.match(name) or name in (".", ".."):
        raise ValueError(f"model name {name!r} must match [A-Za-z0-9_.-]+")
    return f"model/{name}/graph.json"


def log_model(run: Any, model: Any, example_input: Any = None, *,
              kwargs: Mapping[str, Any] | None = None, name: str | None = None,
              export: bool = False, export_timeout: float = 30.0) -> dict[str, Any]:
    """Record `model`'s module tree and, with an example input, its data-flow graph.

    Stores the graph document (format ``flowillower.graph/1``, see docs/model.md; the
    module tree is always in its ``"tree"``) with ``run.write_json`` at
    ``graph_relpath(name)`` and returns it. A model that raises during the probe is still
    recorded, with the error in ``"error"``; ``log_model`` itself does not raise for it.
    """
    from .graph import capture_graph

    relpath = graph_relpath(name)
    graph = capture_graph(model, example_input, kwargs=kwargs, export=export,
                          export_timeout=export_timeout)
    run.write_json(relpath, graph)
    return graph


def watch(model: Any, every: int = 1,
          what: Iterable[str] = ("activations", "gradients", "parameters"),
          run: Any = None, **options: Any) -> Watcher:
    """Watch `model` every `every` steps of `run`'s innermost `fw.loop`.

    Statistics go to ``run.log_metrics(stats, step)`` (see `Watcher` for the keys); the
    watcher is driven by ``run.on_step``. Without a run, pass ``sink=`` or drive
    ``watcher.on_step(step)`` yourself (results then collect in ``watcher.records``).
    Other keyword options go to `Watcher` (``modules``, ``should_record``, ``sample``,
    ``bins``, ``max_calls``, ``auto_step``). Watching a model again replaces the previous
    watcher (hooks are never doubled); ``unwatch(model)`` removes everything.
    """
    from .watcher import Watcher

    sink = options.pop("sink", None)
    if run is not None and sink is None:
        def sink(stats: dict[str, Any], step: int) -> None:
            run.log_metrics(stats, step=step)
    watcher = Watcher(model, every=every, what=what, sink=sink, **options)
    if run is not None:
        handle = run.on_step(watcher.on_step)
        watcher.add_close_callback(handle.remove)
    return watcher


def unwatch(model: Any) -> bool:
    """Flush and remove all hooks of the Watcher on `model` (False if none)."""
    from .watcher import unwatch as _unwatch

    return _unwatch(model)
