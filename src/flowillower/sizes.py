"""Sizes given by users (`max_buffer=`, `max_disk=`, `max_memory=`, env vars) in bytes."""

from __future__ import annotations

import os
import re
from collections.abc import Callable

_SIZE = re.compile(r"\s*((?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?)\s*([kmgt]i?b?|b)?\s*",
                   re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
          "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(value: int | float | str) -> int:
    """Bytes from a number or a size such as ``"500MB"``, ``"2 GiB"``, ``"1.5GB"``, ``"1e9"``.

    Decimal units (kB, MB, GB, TB) are powers of 1000, binary ones (KiB ... TiB) of 1024.
    """
    if isinstance(value, bool):
        raise ValueError(f"a size must be a number of bytes or a string like '2GB', "
                         f"not {value!r}")
    if isinstance(value, (int, float)):
        if value != value or value < 0 or value == float("inf"):
            raise ValueError(f"a size must be a finite number of bytes >= 0, not {value!r}")
        return int(value)
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match:
            unit = (match.group(2) or "").lower().removesuffix("b")
            return int(float(match.group(1)) * _UNITS[unit])
    raise ValueError(f"a size must be a number of bytes or a string like '500MB' or "
                     f"'2GiB', not {value!r}")


def size_from_env(var: str, default: int, say: Callable[[str], None]) -> int:
    """The size in environment variable `var`, else `default`; a value that is not a size
    is said through `say` (one line) and the default used, never an exception."""
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        return parse_size(text)
    except ValueError as exc:
        say(f"flowillower: ignoring {var}: {exc}; using {default:,} bytes")
        return default
