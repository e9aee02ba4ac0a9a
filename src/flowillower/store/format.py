"""The record-frame format of `*.fwl` files.

A file is a sequence of frames::

    b"FWL1" | u32 payload length | u32 crc32 of payload | zlib(payload)

and a payload is::

    u32 header length | header JSON | float columns | int columns

The header JSON holds new key and context definitions, lifecycle events, JSON-typed
values (bools, strings, lists, ...) and the row counts of the two binary column blocks.
Each block stores its columns one after the other (key ids, context ids, steps, times,
values) so that zlib sees long runs of similar bytes. A reader stops at the first
truncated or corrupt frame: a process killed mid-write loses only that frame.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAGIC = b"FWL1"
_FRAME_HEAD = struct.Struct("<4sII")
_U32 = struct.Struct("<I")
# zlib level 1: ~4x faster than the default level and only ~10% bigger on our columns.
_LEVEL = 1

FloatRow = tuple[int, int, int, float, float]  # key, ctx, step, time, value
IntRow = tuple[int, int, int, float, int]
ObjRow = tuple[int, int, int, float, Any]


@dataclass
class Frame:
    """One decoded frame."""

    keys: dict[int, tuple[str, str]] = field(default_factory=dict)
    contexts: dict[int, dict[str, int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    floats: tuple[array, array, array, array, array] | None = None
    ints: tuple[array, array, array, array, array] | None = None
    objects: list[ObjRow] = field(default_factory=list)


def _encode_obj(value: Any) -> Any:
    """JSON-encodable form of a value, keeping what plain JSON would lose."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$float": repr(value)}
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**53) < value < 2**53:
        return {"$int": str(value)}
    if isinstance(value, tuple):
        return {"$tuple": [_encode_obj(v) for v in value]}
    if isinstance(value, list):
        return [_encode_obj(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_obj(v) for k, v in value.items()}
    return value


def _decode_obj(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, inner),) = value.items()
            if tag == "$float":
                return float(inner)
            if tag == "$int":
                return int(inner)
            if tag == "$tuple":
                return tuple(_decode_obj(v) for v in inner)
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
    float_cols: list[array] | None = None,
    int_cols: list[array] | None = None,
    objects: list[ObjRow] | None = None,
) -> bytes:
    """Encode one frame (header, checksum, compressed payload).

    `float_cols` / `int_cols` come from `columns()`.
    """
    header: dict[str, Any] = {"nf": len(float_cols[0]) if float_cols else 0,
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
    for cols in (float_cols, int_cols):
        if cols:
            parts.extend(col.tobytes() for col in cols)
    payload = zlib.compress(b"".join(parts), _LEVEL)
    return _FRAME_HEAD.pack(MAGIC, len(payload), zlib.crc32(payload)) + payload


def _split_columns(buf: memoryview, offset: int, n: int, value_code: str):
    cols = []
    for code, size in (("I", 4), ("I", 4), ("q", 8), ("d", 8), (value_code, 8)):
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
    if header["nf"]:
        frame.floats, offset = _split_columns(buf, offset, header["nf"], "d")
    if header["ni"]:
        frame.ints, offset = _split_columns(buf, offset, header["ni"], "q")
    return frame


def iter_frames(data: bytes) -> Iterator[Frame]:
    """Yield the frames of a file's bytes, stopping quietly at a damaged tail."""
    offset, end = 0, len(data)
    while offset + _FRAME_HEAD.size <= end:
        magic, length, crc = _FRAME_HEAD.unpack_from(data, offset)
        start = offset + _FRAME_HEAD.size
        if magic != MAGIC or start + length > end:
            return
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            return
        try:
            yield decode_payload(zlib.decompress(payload))
        except (zlib.error, ValueError, struct.error):
            return
        offset = start + length


def valid_length(data: bytes) -> int:
    """Number of leading bytes that form whole, intact frames (to truncate a torn tail)."""
    offset, end = 0, len(data)
    while offset + _FRAME_HEAD.size <= end:
        magic, length, crc = _FRAME_HEAD.unpack_from(data, offset)
        start = offset + _FRAME_HEAD.size
        if magic != MAGIC or start + length > end or zlib.crc32(data[start : start + length]) != crc:
            break
        offset = start + length
    return offset
