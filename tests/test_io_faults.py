"""No silent loss on I/O errors (issue 13, item 3): a full disk, failing and short
writes, a bounded pending buffer, and readers that skip a corrupt frame in mid-file."""

from __future__ import annotations

import errno
import math
import os
import signal
from array import array
from pathlib import Path
from typing import Any

import pytest

import flowillower as fw
from flowillower.sizes import parse_size
from flowillower.store.format import frame_spans, valid_length
from flowillower.store.reader import RunReader
from flowillower.store.writer import DEFAULT_MAX_PENDING, FrameWriter
from tests.conftest import fill_disk, wait_for


def value(i: int) -> float:
    """A value per step that compresses badly (frames stay large)."""
    return math.sin(i) * 1e3 + i


class Batches:
    """The writer's source: hands out prepared batches in `RecordBuffer.drain()` shape."""

    def __init__(self) -> None:
        self.queue: list[dict[str, Any]] = []

    def put(self, start: int, n: int, *, define: bool = False,
            events: list[dict[str, Any]] | None = None, objects: list | None = None) -> None:
        """Queue steps start..start+n of key 0 ("loss"), one float call per step."""
        steps = range(start, start + n)
        self.queue.append({
            "call_cols": [array("I", [0] * n), array("q", steps),
                          array("d", [1000.0 + s for s in steps]), array("I", [1] * n)],
            "float_cols": [array("I", [0] * n), array("d", map(value, steps))],
            "ints": [], "objects": objects or [],
            "keys": {0: ("loss", "metric"), 1: ("note", "metric")} if define else {},
            "contexts": {}, "events": events or []})

    def drain(self) -> dict[str, Any] | None:
        return self.queue.pop(0) if self.queue else None


class Faults:
    """`os.pwrite` / `os.ftruncate` wrappers that fail for one file only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
        self.path = str(path)
        self.code: int | None = None
        self.mode = "raise"  # | "short" (returns half, then raises) | "partial" (writes half, raises)
        self.truncate_fails = False
        self.writes_failed = 0
        self._halfway = False
        real_pwrite, real_ftruncate = os.pwrite, os.ftruncate

        def pwrite(fd: int, data, offset: int) -> int:
            if self.code is None or not self._ours(fd):
                return real_pwrite(fd, data, offset)
            if self.mode != "raise" and not self._halfway and len(data) > 1:
                half = real_pwrite(fd, bytes(data[: len(data) // 2]), offset)
                if self.mode == "short":
                    self._halfway = True
                    return half
            self._halfway = False
            self.writes_failed += 1
            raise OSError(self.code, os.strerror(self.code), self.path)

        def ftruncate(fd: int, length: int) -> None:  # fails for good once told to
            if self.truncate_fails and self._ours(fd):
                raise OSError(errno.EIO, os.strerror(errno.EIO), self.path)
            real_ftruncate(fd, length)

        monkeypatch.setattr(os, "pwrite", pwrite)
        monkeypatch.setattr(os, "ftruncate", ftruncate)

    def _ours(self, fd: int) -> bool:
        try:
            mine, theirs = os.stat(self.path), os.fstat(fd)
        except OSError:
            return False
        return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def assert_whole_frames(path: Path) -> None:
    """The file is a gapless sequence of intact frames: nothing torn, anywhere."""
    data = path.read_bytes()
    spans = list(frame_spans(data))
    assert spans, "no frame in the file"
    assert spans[0][0] == 0 and spans[-1][1] == len(data)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))


def loss_values(run_dir: Path) -> tuple[list[int], list[float]]:
    series = RunReader(run_dir).load(["loss"]).series["loss"]
    return series.step.tolist(), series.values.tolist()


# -- (b) injected faults ----------------------------------------------------------------------

FAULTS = [(errno.ENOSPC, "raise", False), (errno.EIO, "raise", False),
          (errno.EROFS, "raise", False), (errno.ENOSPC, "short", False),
          (errno.ENOSPC, "partial", False), (errno.ENOSPC, "short", True)]


@pytest.mark.parametrize(("code", "mode", "truncate_fails"), FAULTS,
                         ids=["ENOSPC", "EIO", "EROFS", "short-write", "partial-write",
                              "short-write-and-truncate-fails"])
def test_failed_writes_are_kept_retried_and_reported_once(tmp_path, monkeypatch, capsys,
                                                         code, mode, truncate_fails):
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0)  # flushes only when told
    faults = Faults(monkeypatch, path)
    source.put(0, 100, define=True)
    writer.flush()
    faults.code, faults.mode, faults.truncate_fails = code, mode, truncate_fails

    source.put(100, 100)
    writer.flush(sync=False)
    err = capsys.readouterr().err
    assert faults.writes_failed == 1
    assert err.count("\n") == 1, err  # at the first failure, one line
    assert str(path) in err and os.strerror(code) in err
    assert writer.failure is not None and writer.failure.errno == code
    if not truncate_fails:  # cut back to the last good frame at once
        assert_whole_frames(path)

    for start in (200, 300):  # every flush retries; none repeats the warning
        source.put(start, 100)
        writer.flush()
    assert faults.writes_failed == 3
    assert capsys.readouterr().err == ""

    faults.code = None
    source.put(400, 100)
    writer.flush()
    err = capsys.readouterr().err
    assert "resumed" in err and "4 frame(s), 400 value(s)" in err and err.count("\n") == 1
    assert writer.failure is None
    writer.close()
    if truncate_fails:  # torn bytes can only be left after the last intact frame
        data = path.read_bytes()
        assert valid_length(data) == list(frame_spans(data))[-1][1]
    else:
        assert_whole_frames(path)
    assert writer.dropped == 0 and writer.error is None
    steps, values = loss_values(tmp_path)
    assert steps == list(range(500))
    assert values == [value(i) for i in range(500)]


def test_close_on_a_failing_disk_counts_what_is_lost(tmp_path, monkeypatch, capsys):
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0)
    source.put(0, 10, define=True)
    writer.flush()
    Faults(monkeypatch, path).code = errno.EIO
    source.put(10, 25)
    writer.close()
    assert writer.dropped == 25
    assert isinstance(writer.error, OSError) and writer.error.errno == errno.EIO
    assert "25 value(s) could not be recorded" in capsys.readouterr().err
    assert loss_values(tmp_path)[0] == list(range(10))


def test_an_unencodable_value_is_reported_at_once_and_the_rest_kept(tmp_path, capsys):
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0)
    source.put(0, 50, define=True, objects=[(1, 0, 0, 1000.0, object())],
               events=[{"event": "start", "time": 1000.0}])
    writer.flush()
    err = capsys.readouterr().err
    assert "could not encode" in err and "TypeError" in err and err.count("\n") == 1
    assert writer.dropped == 1 and isinstance(writer.error, TypeError)
    source.put(50, 50)
    writer.close()
    assert loss_values(tmp_path) == (list(range(100)), [value(i) for i in range(100)])
    assert [e["event"] for e in RunReader(tmp_path).load().events] == ["start"]


class Broken(Batches):
    """A source whose first drain fails, as a bug in the buffer would."""

    def drain(self) -> dict[str, Any] | None:
        if not hasattr(self, "failed"):
            self.failed = True
            raise RuntimeError("drain exploded")
        return super().drain()


def test_an_error_on_the_writer_thread_is_said_when_it_happens(tmp_path, capsys):
    source = Broken()
    writer = FrameWriter(tmp_path / "data.fwl", source, interval=0.02)
    said = wait_for(lambda: capsys.readouterr().err, what="a line on stderr")
    assert "the writer thread failed" in said and "drain exploded" in said
    assert isinstance(writer.error, RuntimeError)
    source.put(0, 10, define=True)  # the thread lives on and writes the next batch
    wait_for(lambda: not source.queue, what="the next flush")
    writer.close()
    assert loss_values(tmp_path)[0] == list(range(10))


class Interrupting(dict):
    """A logged dict whose encoding is interrupted by a signal (once)."""

    fired = False

    def items(self):
        if not Interrupting.fired:
            Interrupting.fired = True
            signal.raise_signal(signal.SIGUSR1)  # the handler runs inside this flush
        return super().items()


def test_a_signal_handler_closing_mid_flush_is_done_after_that_flush(tmp_path):
    """SIGTERM -> finish() -> close() can interrupt a flush on the main thread."""
    source = Batches()
    writer = FrameWriter(tmp_path / "data.fwl", source, interval=3600.0)
    previous = signal.signal(signal.SIGUSR1, lambda *_: writer.close())
    try:
        source.put(0, 10, define=True, objects=[(1, 0, 0, 1000.0, Interrupting(a=1))])
        writer.flush(sync=False)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert Interrupting.fired
    source.put(10, 10)
    writer.flush()  # closed by the deferred close: nothing more is written
    assert loss_values(tmp_path) == (list(range(10)), [value(i) for i in range(10)])
    assert RunReader(tmp_path).load(["note"]).series["note"].values.tolist() == [{"a": 1}]
    assert_whole_frames(tmp_path / "data.fwl")


# -- (c) the bounded buffer ------------------------------------------------------------------

def test_past_the_bound_the_oldest_values_are_dropped_and_counted(tmp_path, monkeypatch,
                                                                 capsys):
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0, max_pending_bytes=10_000)
    faults = Faults(monkeypatch, path)
    faults.code = errno.ENOSPC  # failing from the very first frame
    # The first batch defines the key and carries an event: both must survive its values.
    source.put(0, 100, define=True, events=[{"event": "start", "time": 1000.0}])
    writer.flush()
    for start in range(100, 1000, 100):
        source.put(start, 100)
        writer.flush()
    dropped = writer.dropped
    assert 0 < dropped < 1000 and dropped % 100 == 0  # whole oldest batches went
    err = capsys.readouterr().err
    assert "over 10000 bytes" in err and err.count("dropped") == 1

    faults.code = None
    writer.close()
    err = capsys.readouterr().err
    assert f"{dropped} value(s) were dropped" in err  # the exact total, when resuming
    assert f"{dropped} value(s) could not be recorded" in err  # ... and at the end
    assert writer.dropped == dropped
    steps, values = loss_values(tmp_path)
    assert steps == list(range(dropped, 1000))  # everything kept is there, newest last
    assert values == [value(i) for i in steps]
    assert [e["event"] for e in RunReader(tmp_path).load().events] == ["start"]


def test_the_bound_counts_what_logged_objects_hold(tmp_path, monkeypatch):
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0, max_pending_bytes=200_000)
    faults = Faults(monkeypatch, path)
    faults.code = errno.ENOSPC
    small = [(1, 0, 0, 1000.0, [0.5] * 10)]
    big = [(1, 0, 1, 1000.0, [float(i) for i in range(50_000)])]  # ~1.6 MB in memory
    source.put(0, 10, define=True, objects=small)
    writer.flush()
    assert writer.dropped == 0  # 10 floats and a short list: well under the bound
    source.put(10, 10, objects=big)
    writer.flush()
    assert writer.dropped == 11 + 11  # oldest first, then the big list itself (over alone)
    faults.code = None
    source.put(20, 10)
    writer.close()
    assert loss_values(tmp_path)[0] == list(range(20, 30))


@pytest.mark.parametrize(("text", "size"), [("300MB", 300_000_000), ("1GiB", 2**30),
                                            ("268435456", 268435456), ("1.5KiB", 1536), ("1.5k", 1500),
                                            ("64 MiB", 64 * 2**20)])
def test_the_bound_comes_from_flowillower_max_buffer(tmp_path, monkeypatch, text, size):
    assert parse_size(text) == size
    monkeypatch.setenv("FLOWILLOWER_MAX_BUFFER", text)
    writer = FrameWriter(tmp_path / "data.fwl", Batches())
    writer.close()
    assert writer.max_pending_bytes == size


def test_a_bad_flowillower_max_buffer_is_said_and_the_default_used(tmp_path, monkeypatch,
                                                                   capsys):
    monkeypatch.setenv("FLOWILLOWER_MAX_BUFFER", "lots")
    writer = FrameWriter(tmp_path / "data.fwl", Batches())
    writer.close()
    assert writer.max_pending_bytes == DEFAULT_MAX_PENDING == 256 * 2**20
    assert "FLOWILLOWER_MAX_BUFFER" in capsys.readouterr().err


# -- (d) reading past a corrupt frame ------------------------------------------------------

def three_frames(tmp_path: Path) -> tuple[Path, list[tuple[int, int]]]:
    path = tmp_path / "data.fwl"
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0)
    for start in (0, 100, 200):
        source.put(start, 100, define=start == 0)
        writer.flush()
    writer.close()
    spans = list(frame_spans(path.read_bytes()))
    assert len(spans) == 3
    return path, spans


@pytest.mark.parametrize("where", ["magic", "length", "checksum", "payload"])
def test_the_reader_skips_a_corrupt_frame_in_mid_file(tmp_path, where):
    path, spans = three_frames(tmp_path)
    start, stop = spans[1]
    offset = {"magic": start, "length": start + 5, "checksum": start + 9,
              "payload": (start + stop) // 2}[where]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    steps, values = loss_values(tmp_path)
    expected = list(range(100)) + list(range(200, 300))
    assert steps == expected and values == [value(i) for i in expected]


def test_reopening_cuts_only_a_torn_tail_not_frames_after_a_corrupt_one(tmp_path):
    path, spans = three_frames(tmp_path)
    data = bytearray(path.read_bytes())
    data[(spans[1][0] + spans[1][1]) // 2] ^= 0xFF  # frame 2 damaged in the middle
    good_end = len(data)
    torn = bytes(data[spans[2][0] : spans[2][0] + 20])  # half a frame at the tail
    path.write_bytes(bytes(data) + torn)

    assert valid_length(path.read_bytes()) == spans[1][0]  # the strict check sees damage
    source = Batches()
    writer = FrameWriter(path, source, interval=3600.0)
    assert path.stat().st_size == good_end  # the tail went, frame 3 stayed
    source.put(300, 100)
    writer.close()
    expected = list(range(100)) + list(range(200, 400))
    assert loss_values(tmp_path) == (expected, [value(i) for i in expected])


# -- (a) a real full disk -----------------------------------------------------------------

def test_a_full_disk_loses_nothing_and_says_so_while_it_happens(tiny_disk, capsys):
    run = fw.init(project="disk", dir=str(tiny_disk / "store"), snapshot=False)
    fw.log_metrics({"loss": value(0)}, step=0)
    run.flush()  # the run exists on disk: run.json and the first frame
    data_file = next(run.dir.glob("data*.fwl"))
    ballast = fill_disk(tiny_disk)
    for step in range(1, 20_001):  # ~300 kB of frame: cannot fit
        fw.log_metrics({"loss": value(step)}, step=step)
    said: list[str] = []
    # The periodic flush (every 0.5 s) hits the full disk and says so right then.
    wait_for(lambda: said.append(capsys.readouterr().err) or "cannot write" in "".join(said),
             what="the warning of the first failed write")
    err = "".join(said)
    assert err.count("\n") == 1, err
    assert str(data_file) in err and os.strerror(errno.ENOSPC) in err
    step = 20_001
    for _ in range(5):  # well past the first failure, still full, still quiet
        for _ in range(10_000):
            fw.log_metrics({"loss": value(step)}, step=step)
            step += 1
        run.flush()
    assert "cannot write" not in capsys.readouterr().err

    ballast.unlink()
    fw.finish()
    assert "resumed" in capsys.readouterr().err
    steps, values = loss_values(run.dir)
    assert len(steps) == step
    assert steps == list(range(step)) and values == [value(i) for i in range(step)]


def test_run_json_on_a_full_disk_warns_and_the_summary_error_is_loud(tiny_disk):
    """Completing run.json at set-up end or finish on a full disk warns (the first
    run.json stays); the summary that cannot be written is an error the caller sees."""
    from flowillower.run import Run

    run = Run("disk", "meta", dir=tiny_disk / "store", snapshot=False)
    run.log_metrics({"loss": 1.0}, 0)
    run.flush()
    first = (run.dir / "run.json").read_text()
    fill_disk(tiny_disk)
    with pytest.warns(UserWarning, match="could not complete run.json"):
        with pytest.raises(OSError):
            run.finish()
    assert (run.dir / "run.json").read_text() == first  # never a torn run.json
