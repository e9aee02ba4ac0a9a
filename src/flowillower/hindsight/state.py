"""Capturing and restoring registered state: what `fw.checkpointing` copies, and how.

A capture is an independent copy in host memory: CPU tensors are cloned, tensors on an
accelerator are copied to host memory without waiting (`copy_tree`'s `host` list and
`copies_landed` tell the writer when the copies are complete), other objects are
pickled or deep-copied. Restoring puts a state back into the live objects, in place.
"""

from __future__ import annotations

import copy
import pickle
import random
import sys
from typing import TYPE_CHECKING, Any

from ..threadstate import LoopPosition
from .ckpt_files import CheckpointError, is_tensor, torch_module

if TYPE_CHECKING:
    from ..run import Run

_torch = torch_module
_is_tensor = is_tensor


def _numpy() -> Any:
    return sys.modules.get("numpy")


def _copy_tensor(t: Any, host: list[Any] | None) -> Any:
    t = t.detach()
    if t.device.type in ("cpu", "meta"):
        return t.clone()
    # Device state goes straight to host memory: a clone on the device would hold a second
    # copy of the model in GPU memory until the writer got to it. non_blocking allocates
    # pinned memory and returns at once; the writer waits for the copies to land.
    out = t.to("cpu", non_blocking=True)
    if host is not None:
        host.append(t)
    return out


def copy_tree(x: Any, host: list[Any] | None = None) -> Any:
    """A deep, independent copy of a state tree; tensors are copied bit for bit.

    CPU tensors are cloned; tensors on an accelerator are copied to host memory with
    `.to("cpu", non_blocking=True)` and their source tensors appended to `host` (when
    given): the copies are only complete once the device's queue has run that far
    (see `copies_landed`).
    """
    if _is_tensor(x):
        return _copy_tensor(x, host)
    if isinstance(x, (int, float, str, bool, bytes, type(None))):
        return x
    if isinstance(x, dict):
        out = type(x)() if type(x) is not dict else {}
        for k, v in x.items():
            out[k] = copy_tree(v, host)
        return out
    if isinstance(x, list):
        return [copy_tree(v, host) for v in x]
    if isinstance(x, tuple) and not hasattr(x, "_fields"):
        return tuple(copy_tree(v, host) for v in x)
    np = _numpy()
    if np is not None and isinstance(x, np.ndarray):
        return x.copy()
    return copy.deepcopy(x)


class _Landed:
    """Waits for device-to-host copies: CUDA events (one per device involved, recorded
    on its current stream right after the copies) or a whole-device synchronize."""

    def __init__(self, waits: list[Any]) -> None:
        self.waits = waits

    def synchronize(self) -> None:
        for wait in self.waits:
            wait.synchronize()


def copies_landed(sources: list[Any]) -> Any:
    """Something whose `.synchronize()` returns once the host copies of `sources` are
    complete (the training thread does not wait). The copies were queued on each
    device's current stream, the stream the training's own work on that state uses, so
    they read the state as it was at the capture."""
    torch = _torch()
    waits: list[Any] = []
    cuda = {t.device for t in sources if getattr(t, "is_cuda", False)}
    for device in cuda:
        with torch.cuda.device(device):
            event = torch.cuda.Event()
            event.record()
        waits.append(event)
    for kind in {t.device.type for t in sources if not getattr(t, "is_cuda", False)}:
        waits.append(getattr(torch, kind))  # torch.mps / torch.xpu: .synchronize() waits
    return _Landed(waits)


def object_kind(obj: Any) -> str:
    """How an object's state is captured; raises `CheckpointError` when it can't be."""
    torch = _torch()
    np = _numpy()
    if torch is not None:
        if isinstance(obj, torch.nn.Module):
            return "module"
        if isinstance(obj, torch.Generator):
            return "torch_generator"
        if isinstance(obj, torch.Tensor):
            return "tensor"
    if callable(getattr(obj, "state_dict", None)) and callable(
            getattr(obj, "load_state_dict", None)):
        return "stateful"  # optimizers, LR schedulers, GradScalers, stateful loaders
    if np is not None:
        if isinstance(obj, np.ndarray):
            return "ndarray"
        if isinstance(obj, np.random.Generator):
            return "np_generator"
        if isinstance(obj, np.random.RandomState):
            return "np_randomstate"
    if isinstance(obj, random.Random):
        return "random"
    if isinstance(obj, (dict, list, set, bytearray)):
        return "container"
    if isinstance(obj, (int, float, str, bytes, tuple, frozenset, bool, type(None))):
        raise CheckpointError(
            f"cannot checkpoint an immutable {type(obj).__name__}: a replay restores state "
            "in place; register a mutable container (e.g. a dict) holding it instead")
    if hasattr(obj, "__dict__"):
        return "object"
    raise CheckpointError(
        f"cannot checkpoint {type(obj).__name__}: give it state_dict()/load_state_dict() "
        "or register a dict holding its state")


def capture_object(kind: str, obj: Any, host: list[Any] | None = None) -> Any:
    """The object's state right now, as an independent copy (in host memory; device
    tensors copied are appended to `host`, see `copy_tree`)."""
    if kind == "module":
        state = obj.state_dict()
        return {
            "state": copy_tree(state, host),
            # Per-module versions that load_state_dict consults (e.g. BatchNorm).
            "metadata": copy.deepcopy(getattr(state, "_metadata", None)),
            # Gradients and train/eval flags are not in state_dict but code after an inner
            # loop may read them (a gradient norm, dropout behaviour).
            "grads": {n: (None if p.grad is None else copy_tree(p.grad, host))
                      for n, p in obj.named_parameters()},
            "training": [m.training for m in obj.modules()],
        }
    if kind == "stateful":
        return copy_tree(obj.state_dict(), host)
    if kind == "torch_generator":
        return obj.get_state()
    if kind in ("tensor", "ndarray"):
        return copy_tree(obj, host)
    if kind == "np_generator":
        return copy.deepcopy(obj.bit_generator.state)
    if kind == "np_randomstate":
        return obj.get_state()
    if kind == "random":
        return obj.getstate()
    if kind == "container":
        return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if kind == "object":
        return pickle.dumps(obj.__dict__, protocol=pickle.HIGHEST_PROTOCOL)
    raise CheckpointError(f"unknown state kind {kind!r}")


def restore_object(kind: str, obj: Any, state: Any) -> None:
    """Put a captured state back into `obj`, in place."""
    if kind == "module":
        from collections import OrderedDict

        values = OrderedDict(state["state"])
        if state.get("metadata") is not None:
            values._metadata = state["metadata"]  # type: ignore[attr-defined]
        obj.load_state_dict(values)
        grads = state["grads"]
        for name, p in obj.named_parameters():
            grad = grads.get(name)
            # Checkpoints load on the CPU: put gradients back where the parameter lives.
            p.grad = None if grad is None else grad.to(p.device, copy=True)
        for m, flag in zip(obj.modules(), state["training"]):
            m.training = flag
    elif kind == "stateful":
        obj.load_state_dict(copy_tree(state))
    elif kind == "torch_generator":
        obj.set_state(state)
    elif kind in ("tensor", "ndarray"):
        if kind == "tensor":
            with _torch().no_grad():
                obj.copy_(state)
        else:
            obj[...] = state
    elif kind == "np_generator":
        obj.bit_generator.state = copy.deepcopy(state)
    elif kind == "np_randomstate":
        obj.set_state(state)
    elif kind == "random":
        obj.setstate(state)
    elif kind == "container":
        value = pickle.loads(state)
        if isinstance(obj, dict):
            obj.clear()
            obj.update(value)
        elif isinstance(obj, (list, bytearray)):
            obj[:] = value
        else:
            obj.clear()
            obj.update(value)
    elif kind == "object":
        obj.__dict__.clear()
        obj.__dict__.update(pickle.loads(state))
    else:
        raise CheckpointError(f"unknown state kind {kind!r}")


def capture_rng() -> dict[str, Any]:
    """Every global RNG state: python `random`, numpy, torch CPU and CUDA when in use."""
    state: dict[str, Any] = {"python": random.getstate()}
    np = _numpy()
    if np is not None:
        state["numpy"] = np.random.get_state()
    torch = _torch()
    if torch is not None:
        state["torch"] = torch.get_rng_state()
        try:
            if torch.cuda.is_available() and torch.cuda.is_initialized():
                state["cuda"] = torch.cuda.get_rng_state_all()
        except Exception:  # a broken CUDA install must not stop the CPU state
            pass
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the global RNGs back to a `capture_rng()` state."""
    random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "torch" in state:
        import torch

        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


def tree_stats(x: Any) -> tuple[int, bool]:
    """(bytes a captured tree takes at most on disk, whether it holds a tensor that is not
    on the CPU), in one walk. Tensors, arrays and pickled bytes count their size (de-
    duplication of unchanged tensors can only make the file smaller), scalars 8 bytes."""
    if _is_tensor(x):
        return x.nelement() * x.element_size(), x.device.type != "cpu"
    if isinstance(x, dict):
        x = x.values()
    elif not isinstance(x, (list, tuple)):
        if isinstance(x, (bytes, bytearray, str)):
            return len(x), False
        if isinstance(x, (int, float)) or x is None:
            return 8, False
        return getattr(x, "nbytes", 64), False  # numpy arrays; an allowance for the rest
    size, device = 0, False
    for v in x:
        if type(v) is int or type(v) is float:  # e.g. the 625 ints of Python's RNG state
            size += 8
            continue
        v_size, v_device = tree_stats(v)
        size += v_size
        device = device or v_device
    return size, device


def has_device_tensor(x: Any) -> bool:
    """Whether a captured tree holds a tensor that is not on the CPU."""
    return tree_stats(x)[1]


def restore_state(tree: dict[str, Any], objects: dict[str, Any], kinds: dict[str, str],
                  run: Run | None) -> None:
    """Put a captured state back: objects in place, RNGs, and the loop position."""
    missing = [name for name in tree["objects"] if name not in objects]
    if missing:
        raise CheckpointError(
            f"the replayed code registers no object named {', '.join(missing)} in "
            "fw.checkpointing(); it must register what the original run registered")
    for name, state in tree["objects"].items():
        restore_object(kinds[name], objects[name], state)
    restore_rng(tree["rng"])
    if run is not None:
        totals = {tuple(p): n for p, n in tree["pos"]["loop_totals"]}
        run.restore_loop_position(LoopPosition(tree["pos"]["step"], totals))
