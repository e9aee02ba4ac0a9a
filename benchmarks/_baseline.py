"""The previous version of the package, for benchmarks that measure it in the same run.

Two ways, both from git (nothing is checked out; the working tree is not touched):

* `previous_package(rev, folder)`: `src/flowillower` as of `rev` unpacked (`git archive`)
  under `folder`; run a child process with `env_running(src)` and it imports that
  version instead of this one.
* `previous_module(rev, path, name)`: one module's source as of `rev`, executed as a
  module of today's package (its relative imports resolve to today's modules), to time
  one class against its replacement in one process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def previous_package(rev: str, folder: Path) -> Path | None:
    """`src/` holding the package as of `rev`, unpacked under `folder` (None without git
    or without that revision)."""
    try:
        archive = subprocess.run(["git", "archive", rev, "src/flowillower"], cwd=ROOT,
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return folder / "src"


def env_running(src: Path | None) -> dict[str, str]:
    """This process's environment, with `src` (a `previous_package`) shadowing the
    installed package in child processes; unchanged when `src` is None."""
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(src), env.get("PYTHONPATH", "")])
    return env


def check_imported_from(src: Path | None) -> None:
    """Fail loudly when a child meant to run `src` imported another copy (a figure
    labelled 'previous' must come from the previous code)."""
    import flowillower

    where = Path(flowillower.__file__).resolve()
    if src is not None and not where.is_relative_to(Path(src).resolve()):
        raise SystemExit(f"expected flowillower from {src}, imported {where}")


def previous_module(rev: str, path: str, name: str) -> ModuleType | None:
    """`src/flowillower/<path>` as of `rev`, executed as module `name` inside today's
    package (so `from .x import y` gets today's `x`). None without git or that file."""
    try:
        source = subprocess.run(["git", "show", f"{rev}:src/flowillower/{path}"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    import flowillower  # noqa: F401  (the parent package must exist for relative imports)

    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    module.__package__ = name.rpartition(".")[0]
    exec(compile(source, f"{path}@{rev}", "exec"), module.__dict__)
    return module
