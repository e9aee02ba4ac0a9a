"""Reading replay values out of frame files, through the store's one decoder.

A worker writes its values to a scratch store in the run format; `read_rows` picks the
wanted metric values (with their loop coordinates) out of one of its files,
`original_times` gives the original run's iteration timestamps so replayed values sit on
the run's own timeline. Decoding lives in the store (`store.reader.decode_values`, the
decoder every reader uses), and so does writing the merged rows back into the run
(`store.format.write_replay_file`).
"""

from __future__ import annotations

from pathlib import Path

from ..store.format import Row
from ..store.reader import decode_values


def read_rows(path: Path, wanted: set[str]) -> list[Row]:
    """(name, role, kind, coords, step, time, value) of the wanted metric values in a file,
    in file order; an unreadable file raises OSError."""
    decoded = decode_values(path.read_bytes())
    return list(decoded.rows(lambda name, role: role == "metric" and name in wanted))


def original_times(run_dir: Path) -> dict[tuple, float]:
    """Loop coordinates -> when the original run finished that iteration (from the
    `time/<loop>` values), so replayed values sit on the run's own timeline."""
    out: dict[tuple, float] = {}
    for path in sorted(run_dir.glob("data*.fwl")):
        try:
            decoded = decode_values(path.read_bytes())
        except OSError:
            continue
        for _name, _role, kind, coords, _step, when, _value in decoded.rows(
                lambda name, role: role == "sys" and name.startswith("time/")):
            if kind == "float":
                out[tuple(coords.items())] = when
    return out

