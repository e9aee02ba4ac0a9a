"""The one reader of Linux's `/proc`: a process's start time, state and liveness.

Everything that asks the kernel about a process (is the writer of a run still alive, when
did this process start) goes through here, so the `/proc/<pid>/stat` layout is parsed in
one place. Off Linux (no `/proc`) every reader answers None and callers fall back.
"""

from __future__ import annotations

import os
import time

__all__ = ["stat_fields", "process_start_ticks", "process_state", "process_start_time",
           "pid_alive"]

# Index of `starttime` among the fields after the command name ("state" is index 0):
# field 22 of proc(5), counted from 1 with pid and comm as fields 1 and 2.
_START_TIME = 19


def stat_fields(pid: int | str = "self") -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` after the command name, or None if unreadable.

    The command name sits in parentheses and may itself hold spaces or `)`: splitting
    after the *last* `)` is the only safe way to find the fields that follow it.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except OSError:
        return None
    _, sep, rest = data.rpartition(b")")
    fields = rest.split()
    return fields if sep and fields else None


def process_start_ticks(pid: int | str) -> int | None:
    """A process's start time in clock ticks since boot, to tell reused pids apart."""
    fields = stat_fields(pid)
    try:
        return int(fields[_START_TIME]) if fields else None
    except (ValueError, IndexError):
        return None


def process_state(pid: int | str) -> bytes | None:
    """The one-letter state of a process (`R`, `S`, `Z` for a zombie...), or None."""
    fields = stat_fields(pid)
    return fields[0] if fields else None


def process_start_time() -> float | None:
    """Unix time this process started, or None where `/proc` cannot tell."""
    ticks = process_start_ticks("self")
    if ticks is None:
        return None
    try:
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def pid_alive(pid: int, start_ticks: int | None = None) -> bool:
    """Whether the process `pid` (started at `start_ticks`, if known) is still running on
    this host; zombies and a new process that reused the pid count as dead."""
    if pid <= 0:
        return False
    if start_ticks is not None:
        current = process_start_ticks(pid)
        if current is not None and current != start_ticks:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is dead for our purposes; unreadable state: trust kill(0).
    return process_state(pid) != b"Z"
