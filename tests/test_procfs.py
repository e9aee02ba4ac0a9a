"""The one `/proc` reader (flowillower.procfs): start times, zombies, reused pids, odd names."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flowillower import procfs
from flowillower.store import layout

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux /proc only")


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_store_layout_reexports_the_one_reader():
    assert layout.pid_alive is procfs.pid_alive
    assert layout.process_start_ticks is procfs.process_start_ticks


def test_start_time_of_this_process_is_in_the_past_and_stable():
    started = procfs.process_start_time()
    assert started is not None and started <= time.time()
    # Started before this test ran, and not before the machine booted a day ago-ish.
    assert time.time() - started < 24 * 3600 * 365
    assert procfs.process_start_ticks(os.getpid()) == procfs.process_start_ticks("self")


def test_a_command_name_with_parens_and_spaces_does_not_shift_the_fields(tmp_path: Path):
    # The kernel writes the name in parentheses unescaped: `x) Z 1 2` would fool a parser
    # that splits at the first `)` into reading state `Z` and a wrong start time.
    exe = tmp_path / "x) Z 1 2 3"
    shutil.copy(shutil.which("sleep"), exe)
    proc = subprocess.Popen([str(exe), "30"])
    try:
        assert _wait_for(lambda: procfs.process_state(proc.pid) in (b"S", b"R"))
        ticks = procfs.process_start_ticks(proc.pid)
        assert ticks is not None and ticks >= procfs.process_start_ticks("self")
        assert procfs.pid_alive(proc.pid, ticks)
    finally:
        proc.kill()
        proc.wait()


def test_zombie_and_reused_pid_count_as_dead():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = procfs.process_start_ticks(proc.pid)
    # Not reaped yet: it lingers as a zombie, which is dead for our purposes.
    assert _wait_for(lambda: procfs.process_state(proc.pid) == b"Z")
    assert not procfs.pid_alive(proc.pid)
    proc.wait()
    assert not procfs.pid_alive(proc.pid, ticks)
    # A live pid with another start time is a different process that reused the number.
    me = procfs.process_start_ticks(os.getpid())
    assert procfs.pid_alive(os.getpid(), me)
    assert not procfs.pid_alive(os.getpid(), me + 1)
    assert not procfs.pid_alive(0) and not procfs.pid_alive(-1)


def test_unreadable_entries_answer_none():
    assert procfs.stat_fields(2**22 + 12345) is None
    assert procfs.process_start_ticks(2**22 + 12345) is None
    assert procfs.process_state(2**22 + 12345) is None
