"""One frame decoder and one writer of replay files, both in `flowillower.store`.

Readers (queries, the UI) and hindsight replay decode frame files through
`store.reader.decode_values`; a replay hands its merged rows to
`store.format.write_replay_file`, which writes `replays/<id>.fwl` all or nothing (a full
disk, an unencodable value or a kill -9 leaves no partial file that readers would see).
"""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys
import textwrap
import time
from array import array
from pathlib import Path

import pytest

import flowillower as fw
from flowillower.store.format import encode_frame, valid_length, write_replay_file
from flowillower.store.reader import RunReader, decode_values

SRC = Path(fw.__file__).resolve().parent
T0 = 1732360000.0


def _everything(_name: str, _role: str) -> bool:
    return True


def test_reader_and_replay_rows_decode_the_same_values(store_dir):
    fw.init(snapshot=False)
    for epoch in fw.loop("epoch", range(3)):
        fw.log("loss", 1.0 / (epoch + 1))
        fw.log("count", epoch * 10)
        fw.log("note", f"epoch {epoch}")
    fw.finish()
    (run_dir,) = (store_dir / "runs").iterdir()
    (data_file,) = run_dir.glob("data*.fwl")
    rows = list(decode_values(data_file.read_bytes()).rows(
        lambda name, role: role == "metric"))
    by_name: dict[str, list] = {}
    for name, _role, _kind, coords, step, _when, value in rows:
        by_name.setdefault(name, []).append((coords.get("epoch"), step, value))
    assert by_name["loss"] == [(0, 0, 1.0), (1, 1, 0.5), (2, 2, 1.0 / 3)]
    assert by_name["count"] == [(0, 0, 0), (1, 1, 10), (2, 2, 20)]
    assert by_name["note"] == [(0, 0, "epoch 0"), (1, 1, "epoch 1"), (2, 2, "epoch 2")]
    data = RunReader(run_dir).load()
    for name, expected in by_name.items():
        series = data.series[name]
        assert series.values.tolist() == [v for _e, _s, v in expected]
        assert series.step.tolist() == [s for _e, s, _v in expected]


def _frame(key: int, value: float, step: int, *, define: bool) -> bytes:
    return encode_frame(keys={key: ("x", "metric")} if define else None,
                        call_cols=[array("I", [0]), array("q", [step]),
                                   array("d", [T0 + step]), array("I", [1])],
                        float_cols=[array("I", [key]), array("d", [value])])


def test_damaged_frame_and_torn_tail_cost_the_same_values_everywhere(tmp_path):
    first, second, third = (_frame(0, 1.0, 0, define=True), _frame(0, 2.0, 1, define=False),
                            _frame(0, 3.0, 2, define=False))
    damaged = bytearray(second)
    damaged[-1] ^= 0xFF  # its checksum no longer holds
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "data.fwl").write_bytes(first + bytes(damaged) + third + third[:9])
    decoded = decode_values((run_dir / "data.fwl").read_bytes())
    assert [r[6] for r in decoded.rows(_everything)] == [1.0, 3.0]
    assert RunReader(run_dir).load().series["x"].values.tolist() == [1.0, 3.0]


def _names(tree: ast.AST) -> tuple[set[str], set[str]]:
    """(modules and names a file imports, names and attributes it uses)."""
    imported, used = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or "", *(a.name for a in node.names)}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.Attribute):
            used.add(node.attr)
        elif isinstance(node, ast.Name):
            used.add(node.id)
    return imported, used | imported


def test_only_the_store_decodes_or_writes_frames():
    decoders = {"iter_frames", "decode_payload", "frame_spans"}
    writers = {"encode_frame", "encode_rows", "FrameWriter", "RecordBuffer", "store.writer",
               "flowillower.store.writer", "store.buffer", "flowillower.store.buffer"}
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        imported, used = _names(ast.parse(path.read_text(encoding="utf-8")))
        if rel not in ("store/format.py", "store/reader.py", "store/decode.py") and used & decoders:
            offenders.append(f"{rel} decodes frames: {sorted(used & decoders)}")
        if rel.startswith("hindsight/") and imported & writers:
            offenders.append(f"{rel} writes frames itself: {sorted(imported & writers)}")
    assert offenders == []


def test_replay_file_round_trip_read_as_replayed(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [("grad", "metric", "float", {"epoch": 0}, 0, T0, 0.5),
            ("grad", "metric", "float", {"epoch": 1}, 1, T0 + 1, 0.25),
            ("hits", "metric", "int", {"epoch": 1}, 1, T0 + 1, 2**40),
            ("tag", "metric", "object", {}, 0, T0 + 2, ("a", 1.5, float("nan")))]
    final = write_replay_file(run_dir, "r1", rows, [{"event": "replay", "names": ["grad"]}])
    assert final == run_dir / "replays" / "r1.fwl"
    assert sorted(p.name for p in final.parent.iterdir()) == ["r1.fwl"]
    data = RunReader(run_dir).load()
    grad = data.series["grad"]
    assert grad.values.tolist() == [0.5, 0.25]
    assert grad.replayed.tolist() == [True, True]
    assert [int(data.ctx_coords[c][0]) for c in grad.ctx] == [0, 1]
    assert data.series["hits"].values.tolist() == [2**40]
    tag = data.series["tag"].last()
    assert tag[:2] == ("a", 1.5) and tag[2] != tag[2]  # the tuple and its NaN survive
    assert data.events == [{"event": "replay", "names": ["grad"], "replayed": True}]


def test_unencodable_value_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rows = [("grad", "metric", "float", {}, 0, T0, 0.5),
            ("bad", "metric", "object", {}, 0, T0, object())]
    with pytest.raises(TypeError):
        write_replay_file(run_dir, "r1", rows, [])
    assert list(run_dir.rglob("*")) == []


@pytest.mark.parametrize("replay_id", ["../escape", "a/b", ".hidden", ""])
def test_replay_id_that_is_a_path_is_refused(tmp_path, replay_id):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(ValueError):
        write_replay_file(run_dir, replay_id, [("x", "metric", "float", {}, 0, T0, 1.0)], [])
    assert list(tmp_path.rglob("*")) == [run_dir]


def _noise_rows(n: int) -> list:
    # Incompressible JSON values: the file is as big as the values.
    return [("blob", "metric", "object", {"epoch": i}, i, T0 + i, os.urandom(512).hex())
            for i in range(n)]


def test_full_disk_leaves_no_file_and_says_so(tiny_disk):
    run_dir = tiny_disk / "run"
    run_dir.mkdir()
    with pytest.raises(OSError):
        write_replay_file(run_dir, "r1", _noise_rows(2000), [])  # ~2 MB on a 1 MiB disk
    assert list((run_dir / "replays").iterdir()) == []
    # The disk is usable again: a small replay file still goes in whole.
    write_replay_file(run_dir, "r2", [("x", "metric", "float", {}, 0, T0, 1.0)], [])
    assert RunReader(run_dir).load().series["x"].values.tolist() == [1.0]


def test_kill_9_mid_write_leaves_only_whole_replay_files(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = textwrap.dedent(f"""
        import os
        from pathlib import Path
        from flowillower.store.format import write_replay_file
        rows = [("blob", "metric", "object", {{}}, i, 0.0, os.urandom(256).hex())
                for i in range(20000)]
        for k in range(1000):
            write_replay_file(Path({str(run_dir)!r}), f"r{{k:04d}}", rows, [])
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    replays = run_dir / "replays"
    try:
        deadline = time.monotonic() + 60
        while len(list(replays.glob("*.fwl"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the writer ended before it could be killed"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finals = sorted(replays.glob("*.fwl"))
    assert len(finals) >= 2
    for path in finals:
        data = path.read_bytes()
        assert valid_length(data) == len(data)
        (_events, blocks), = decode_values(data).frames
        assert sum(len(b.step) for b in blocks) == 20000
    # What a kill leaves behind is a hidden temp file, which readers never glob.
    assert all(p.name.startswith(".") for p in replays.iterdir() if p not in finals)
