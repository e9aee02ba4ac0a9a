"""The record-frame format of `*.fwl` files.

A file is a sequence of frames::

    b"FWL" codec | u32 payload length | u32 crc32 of payload | compressed payload

where codec is b"s" (zstd, the default) or b"z" (zlib, when zstandard is missing), and a
payload is::

    u32 header length | header JSON | call columns | float columns | int columns

Floats, the common case, are stored per *call*: one `log_metrics` call is a row of the
call columns (context id, step, time, value count) and its values are rows of the float
columns (key id, value). Int values keep their type in their own block of full rows
(key, context, step, time, value). The header JSON holds new key and context
definitions, lifecycle events, JSON-typed values (bools, strings, lists, ...) and the
row counts. Columns are stored one after another so the compressor sees long runs of
similar bytes. A reader skips a damaged frame (bad magic, length or checksum) and resumes
at the next intact one; a torn tail ends the file quietly: a process killed mid-write
loses only that frame. `write_replay_file` writes a whole file of given rows at once
(hindsight replay's values), all or nothing.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAGIC = b"FWL"
_FRAME_HEAD = struct.Struct("<3scII")
_U32 = struct.Struct("<I")
_CODECS = (b"s", b"z")


def _zstd():
    """The zstandard module, imported on first use (keeps `import flowillower` light)."""
    try:
        import zstandard
    except ImportError:  # pragma: no cover - zstandard is a declared dependency
        return None
    return zstandard


def warm_up() -> None:
    """Import the compressor now: the writer thread calls this when it starts, so a short
    run's finish does not pay for the import (tens of ms)."""
    _zstd()


def _compress(data: bytes) -> tuple[bytes, bytes]:
    # zstd level 1 compresses our columns ~8x faster than zlib level 1, at the same size.
    zstd = _zstd()
    if zstd is None:
        return b"z", zlib.compress(data, 1)
    return b"s", zstd.ZstdCompressor(level=1).compress(data)


def _decompress(codec: bytes, payload: bytes) -> bytes:
    if codec == b"z":
        return zlib.decompress(payload)
    if codec == b"s":
        zstd = _zstd()
        if zstd is None:
            raise ValueError("this file needs the zstandard package: pip install zstandard")
        return zstd.ZstdDecompressor().decompress(payload)
    raise ValueError(f"unknown codec {codec!r}")

FloatRow = tuple[int, int, int, float, float]  # key, ctx, step, time, value
IntRow = tuple[int, int, int, float, int]
ObjRow = tuple[int, int, int, float, Any]


@dataclass
class Frame:
    """One decoded frame."""

    keys: dict[int, tuple[str, str]] = field(default_factory=dict)
    contexts: dict[int, dict[str, int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: tuple[array, array, array, array] | None = None  # ctx, step, time, count
    floats: tuple[array, array] | None = None  # key, value (grouped by call)
    ints: tuple[array, array, array, array, array] | None = None
    objects: list[ObjRow] = field(default_factory=list)


def _encode_obj(value: Any) -> Any:
    """JSON-encodable form of a value, keeping what plain JSON would lose."""
    kind = type(value)
    # The commonest exact types first: the writer thread encodes every logged object
    # (e.g. each `fw.watch` histogram); subclasses take the general path below.
    if kind is float:
        return value if value - value == 0 else {"$float": repr(value)}
    if kind is str or kind is bool or value is None:
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**53) < value < 2**53:
        return {"$int": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_obj(v) for v in value]}
    if isinstance(value, list):
        # Plain number lists (e.g. histogram counts) need no tag when every float is
        # finite (a finite sum says so) and every int fits a double.
        kinds = set(map(type, value))
        if kinds == {int}:
            if -(2**53) < min(value) and max(value) < 2**53:
                return value
        elif kinds == {float}:
            total = sum(value)
            if total - total == 0:
                return value
        return [_encode_obj(v) for v in value]
    if isinstance(value, dict):
        out = {k if type(k) is str else str(k): _encode_obj(v) for k, v in value.items()}
        if len(out) == 1 and next(iter(out)).startswith("$"):
            # A user's one-key dict that looks like one of our tags ({"$float": "abc"})
            # is wrapped, or reading it back would misread it (or fail the whole frame).
            return {"$dict": out}
        return out
    return value


def _decode_obj(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            try:
                if tag == "$float":
                    return float(inner)
                if tag == "$int":
                    return int(inner)
                if tag == "$tuple":
                    return tuple(_decode_obj(v) for v in inner)
                if tag == "$dict" and isinstance(inner, dict):
                    return {k: _decode_obj(v) for k, v in inner.items()}
            except (TypeError, ValueError):
                pass  # not ours after all (a file of an older version): the dict as logged
        return {k: _decode_obj(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_obj(v) for v in value]
    return value


def columns(rows: list, value_code: str) -> list[array]:
    """Split `(key, ctx, step, time, value)` rows into typed column arrays."""
    keys, ctxs, steps, times, values = zip(*rows)
    return [array("I", keys), array("I", ctxs), array("q", steps), array("d", times),
            array(value_code, values)]


def encode_frame(
    *,
    keys: dict[int, tuple[str, str]] | None = None,
    contexts: dict[int, dict[str, int]] | None = None,
    events: list[dict[str, Any]] | None = None,
    call_cols: list[array] | None = None,
    float_cols: list[array] | None = None,
    int_cols: list[array] | None = None,
    objects: list[ObjRow] | None = None,
) -> bytes:
    """Encode one frame (header, checksum, compressed payload).

    `call_cols` = (ctx, step, time, count) and `float_cols` = (key, value) arrays;
    `int_cols` come from `columns()`.
    """
    header: dict[str, Any] = {"nc": len(call_cols[0]) if call_cols else 0,
                              "nf": len(float_cols[0]) if float_cols else 0,
                              "ni": len(int_cols[0]) if int_cols else 0}
    if keys:
        header["keys"] = {str(k): list(v) for k, v in keys.items()}
    if contexts:
        header["ctx"] = {str(k): v for k, v in contexts.items()}
    if events:
        header["ev"] = [_encode_obj(e) for e in events]
    if objects:
        header["obj"] = [[k, c, s, t, _encode_obj(v)] for k, c, s, t, v in objects]
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    parts = [_U32.pack(len(head)), head]
    for cols in (call_cols, float_cols, int_cols):
        if cols and len(cols[0]):
            parts.extend(col.tobytes() for col in cols)
    codec, payload = _compress(b"".join(parts))
    return _FRAME_HEAD.pack(MAGIC, codec, len(payload), zlib.crc32(payload)) + payload


_CALL_LAYOUT = (("I", 4), ("q", 8), ("d", 8), ("I", 4))
_FLOAT_LAYOUT = (("I", 4), ("d", 8))
_INT_LAYOUT = (("I", 4), ("I", 4), ("q", 8), ("d", 8), ("q", 8))


def _split_columns(buf: memoryview, offset: int, n: int, layout):
    cols = []
    for code, size in layout:
        col = array(code)
        col.frombytes(buf[offset : offset + n * size])
        offset += n * size
        cols.append(col)
    return tuple(cols), offset


def decode_payload(payload: bytes) -> Frame:
    """Decode a frame's (decompressed) payload."""
    buf = memoryview(payload)
    (head_len,) = _U32.unpack_from(buf, 0)
    header = json.loads(bytes(buf[4 : 4 + head_len]))
    frame = Frame()
    frame.keys = {int(k): (v[0], v[1]) for k, v in header.get("keys", {}).items()}
    frame.contexts = {int(k): v for k, v in header.get("ctx", {}).items()}
    frame.events = [_decode_obj(e) for e in header.get("ev", [])]
    frame.objects = [(k, c, s, t, _decode_obj(v)) for k, c, s, t, v in header.get("obj", [])]
    offset = 4 + head_len
    if header.get("nc"):
        frame.calls, offset = _split_columns(buf, offset, header["nc"], _CALL_LAYOUT)
    if header["nf"]:
        frame.floats, offset = _split_columns(buf, offset, header["nf"], _FLOAT_LAYOUT)
    if header["ni"]:
        frame.ints, offset = _split_columns(buf, offset, header["ni"], _INT_LAYOUT)
    return frame


def _frame_end(buf: memoryview, offset: int) -> int | None:
    """End offset of an intact frame (magic, length, checksum) at `offset`, else None."""
    end = len(buf)
    if offset + _FRAME_HEAD.size > end:
        return None
    magic, codec, length, crc = _FRAME_HEAD.unpack_from(buf, offset)
    start = offset + _FRAME_HEAD.size
    # The cheap tests first: when resyncing, most stray b"FWL" fail them, not the checksum.
    if magic != MAGIC or codec not in _CODECS or start + length > end:
        return None
    if zlib.crc32(buf[start : start + length]) != crc:
        return None
    return start + length


def frame_spans(data: bytes) -> Iterator[tuple[int, int]]:
    """(start, end) of every intact frame. After a damaged stretch (bad magic, length or
    checksum) the scan resumes at the next magic that starts an intact frame, so one
    corrupt frame in mid-file costs only itself; a torn tail yields nothing."""
    buf = memoryview(data)
    offset = 0
    while offset + _FRAME_HEAD.size <= len(buf):
        stop = _frame_end(buf, offset)
        if stop is None:
            offset = data.find(MAGIC, offset + 1)
            if offset < 0:
                return
            continue
        yield offset, stop
        offset = stop


def iter_frames(data: bytes) -> Iterator[Frame]:
    """Yield the intact frames of a file's bytes, skipping damaged ones (see
    `frame_spans`); a frame whose checksum holds but whose payload does not decode is
    skipped too."""
    for start, stop in frame_spans(data):
        codec = data[start + 3 : start + 4]
        payload = data[start + _FRAME_HEAD.size : stop]
        try:
            frame = decode_payload(_decompress(codec, payload))
        except Exception:  # zlib.error / zstd.ZstdError / ValueError / struct.error
            continue
        yield frame


def valid_length(data: bytes) -> int:
    """Number of leading bytes that form whole, intact frames, back to back (a strict
    check: `valid_length(data) == len(data)` means nothing in the file is damaged)."""
    buf, offset = memoryview(data), 0
    while (stop := _frame_end(buf, offset)) is not None:
        offset = stop
    return offset


def last_frame_end(data: bytes) -> int:
    """End of the last intact frame: what a writer keeps when it reopens a file. A torn
    tail is cut; a damaged frame followed by intact ones stays (readers skip it)."""
    end = 0
    for _start, stop in frame_spans(data):
        end = stop
    return end


# (name, role, kind, coords, step, time, value): one value with its key and loop coordinates.
Row = tuple[str, str, str, dict[str, int], int, float, Any]


def encode_rows(rows: list[Row], events: list[dict[str, Any]]) -> bytes:
    """One frame holding `rows` (kind "float", "int" or anything else for JSON values)
    and `events`; keys and contexts are numbered in order of first use."""
    key_ids: dict[tuple[str, str], int] = {}
    ctx_ids: dict[tuple, int] = {(): 0}
    contexts: dict[int, dict[str, int]] = {}
    calls = [array("I"), array("q"), array("d"), array("I")]  # ctx, step, time, count
    floats = [array("I"), array("d")]  # key, value
    ints: list[IntRow] = []
    objects: list[ObjRow] = []
    for name, role, kind, coords, step, when, value in rows:
        kid = key_ids.setdefault((name, role), len(key_ids))
        ckey = tuple(coords.items())
        cid = ctx_ids.get(ckey)
        if cid is None:
            cid = ctx_ids[ckey] = len(ctx_ids)
            contexts[cid] = dict(coords)
        if kind == "float":
            for col, item in zip(calls, (cid, int(step), float(when), 1)):
                col.append(item)
            floats[0].append(kid)
            floats[1].append(value)
        elif kind == "int":
            ints.append((kid, cid, int(step), float(when), int(value)))
        else:
            objects.append((kid, cid, int(step), float(when), value))
    keys = {kid: name_role for name_role, kid in key_ids.items()}
    return encode_frame(keys=keys, contexts=contexts, events=events, call_cols=calls,
                        float_cols=floats, int_cols=columns(ints, "q") if ints else None,
                        objects=objects)


def write_replay_file(run_dir: Path, replay_id: str, rows: list[Row],
                      events: list[dict[str, Any]]) -> Path:
    """Write `rows` and `events` as the run's `replays/<replay_id>.fwl`, all or nothing:
    a temporary file, synced, renamed into place (readers only glob `*.fwl`); on any
    error nothing is left behind and the error is raised."""
    if not replay_id or replay_id.startswith(".") or os.sep in replay_id or "/" in replay_id:
        raise ValueError(f"not a replay id: {replay_id!r}")
    data = encode_rows(rows, events)  # before touching the disk: a bad value writes nothing
    replays = Path(run_dir) / "replays"
    replays.mkdir(exist_ok=True)
    final = replays / f"{replay_id}.fwl"
    tmp = replays / f".{replay_id}.fwl.tmp"
    try:
        with open(tmp, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()
    return final
