"""What machine and software a run ran on (captured off the training thread)."""

from __future__ import annotations

import getpass
import os
import platform
import socket
import sys
from typing import Any

# Versions worth recording; asking importlib.metadata for every installed package is slow.
INTERESTING_PACKAGES = (
    "torch", "numpy", "pandas", "scipy", "scikit-learn", "transformers", "datasets",
    "accelerate", "jax", "tensorflow", "lightning", "pytorch-lightning", "torchvision",
    "flowillower",
)


def package_versions() -> dict[str, str]:
    """Versions of the interesting packages that are installed."""
    from importlib import metadata

    found = {}
    for name in INTERESTING_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def gpu_info() -> list[dict[str, Any]] | None:
    """GPUs seen by torch, only if the user's script already imported torch."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_available():
            return None
        return [
            {"name": torch.cuda.get_device_name(i),
             "memory": torch.cuda.get_device_properties(i).total_memory}
            for i in range(torch.cuda.device_count())
        ]
    except Exception:  # a broken CUDA setup must not break logging
        return None


def environment() -> dict[str, Any]:
    """Host, user, Python and package facts for run.json."""
    try:
        user = getpass.getuser()
    except Exception:
        user = None
    return {
        "host": socket.gethostname(),
        "user": user,
        "pid": os.getpid(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "executable": sys.executable,
        "argv": list(sys.argv),
        "cwd": os.getcwd(),
        # The entry script, so a replay knows what to run inside the code snapshot.
        "script": os.path.abspath(sys.argv[0]) if sys.argv and os.path.isfile(sys.argv[0])
        else None,
        "packages": package_versions(),
        "gpu": gpu_info(),
    }


def rank() -> int:
    """This process's rank in a distributed job (0 when not distributed)."""
    dist = sys.modules.get("torch.distributed")
    try:
        if dist is not None and dist.is_available() and dist.is_initialized():
            return int(dist.get_rank())
    except Exception:
        pass
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        value = os.environ.get(var)
        if value and value.isdigit():
            return int(value)
    return 0
