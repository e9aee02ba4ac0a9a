"""Turning whatever a user logs into a value we can store faithfully.

The hot path in `run.py` handles exact `float` and `int` itself; everything else comes
here. numpy and torch are recognised by duck typing so neither is imported for the user.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .errors import InvalidNameError, UnsupportedValueError

FLOAT, INT, OBJECT = 0, 1, 2
_INT64 = 2**63
# "small JSON-able values": a logged object is a record, not a blob; files go to
# log_artifact.
MAX_OBJECT_BYTES = 64 * 1024


class Checked(dict):
    """A small dict the library built itself from numbers (an `fw.watch` histogram).

    Logged as is: it skips the element-by-element conversion and JSON size check that a
    user's dict gets, which were a tenth of a watched step's cost on a small network.
    Only for values whose size is bounded by construction (well under `MAX_OBJECT_BYTES`).
    """

    __slots__ = ()


def _type_path(value: Any) -> str:
    cls = type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def normalize(name: str, value: Any) -> tuple[int, Any]:
    """Return `(kind, value)` for storage or raise `UnsupportedValueError` naming `name`."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return OBJECT, value
    if isinstance(value, int):
        return (INT, int(value)) if -_INT64 <= value < _INT64 else (OBJECT, int(value))
    if isinstance(value, float):
        return FLOAT, float(value)
    module = type(value).__module__
    if module == "numpy" or module.startswith("numpy."):
        return _numpy(name, value)
    if module.startswith("torch"):
        return _torch(name, value)
    if type(value) is Checked:
        return OBJECT, value
    if isinstance(value, (list, tuple, dict)):
        return OBJECT, _json_value(name, value)
    raise UnsupportedValueError(
        f"cannot log {name!r}: values of type {_type_path(value)} are not supported; "
        "log a number, bool, string or small list/dict, or use fw.log_artifact for files"
    )


def _numpy(name: str, value: Any) -> tuple[int, Any]:
    shape = getattr(value, "shape", ())
    if shape not in ((), (1,)) and getattr(value, "size", 2) != 1:
        raise UnsupportedValueError(
            f"cannot log {name!r}: a numpy array of shape {tuple(shape)} is not a scalar; "
            "log a reduction (e.g. .mean()), .tolist() for a small array, or fw.log_image"
        )
    scalar = value.item() if hasattr(value, "item") else value
    if isinstance(scalar, (bool, int, float, str)):
        return normalize(name, scalar)
    raise UnsupportedValueError(f"cannot log {name!r}: numpy value of dtype {value.dtype} "
                                "is not a number")


def _torch(name: str, value: Any) -> tuple[int, Any]:
    numel = getattr(value, "numel", None)
    if numel is None:
        raise UnsupportedValueError(f"cannot log {name!r}: {_type_path(value)} is not a tensor")
    if numel() != 1:
        raise UnsupportedValueError(
            f"cannot log {name!r}: a tensor of shape {tuple(value.shape)} is not a scalar; "
            "log .item() of a reduction, or .tolist() for a small tensor"
        )
    return normalize(name, value.detach().cpu().item())


_PLAIN_NUMBERS = {int, float}
_NUMBER_CHARS = 24  # the longest JSON of a float or an int64 ("-1.2345678901234567e-308")


def _json_value(name: str, value: Any) -> Any:
    # Converted and measured in one walk: `bound` is an upper bound of the JSON size, so
    # the exact (costly) json.dumps only runs for values that may be over the limit.
    bound = 0

    def convert(obj: Any) -> Any:
        nonlocal bound
        types = set(map(type, obj)) if type(obj) is list else None
        if types is not None and types <= _PLAIN_NUMBERS:
            # e.g. histogram counts: nothing to convert, element by element
            bound += 2 + len(obj) * (_NUMBER_CHARS + 2)
            if int in types:
                ints = obj if float not in types else [v for v in obj if type(v) is int]
                if not -_INT64 <= min(ints) <= max(ints) < _INT64:
                    bound += MAX_OBJECT_BYTES  # a huge int: let json.dumps measure it
            return list(obj)
        if isinstance(obj, (list, tuple)):
            bound += 2 + 2 * len(obj)
            out = [convert(v) for v in obj]
            return tuple(out) if isinstance(obj, tuple) else out
        if isinstance(obj, dict):
            bound += 2 + 4 * len(obj)
            converted = {}
            for k, v in obj.items():
                key = str(k)
                bound += 2 + 6 * len(key)  # every character escaped at worst (\uXXXX)
                converted[key] = convert(v)
            return converted
        if isinstance(obj, str):
            bound += 2 + 6 * len(obj)
            return obj
        if obj is None or isinstance(obj, (bool, float)):
            bound += _NUMBER_CHARS
            return obj
        if isinstance(obj, int):
            bound += _NUMBER_CHARS if -_INT64 <= obj < _INT64 else len(str(obj))
            return obj
        kind, norm = normalize(name, obj)
        bound += MAX_OBJECT_BYTES  # not measured here: json.dumps below
        return norm

    converted = convert(value)
    if bound > MAX_OBJECT_BYTES:
        size = len(json.dumps(converted, default=str))
        if size > MAX_OBJECT_BYTES:
            raise UnsupportedValueError(
                f"cannot log {name!r}: value is {size} bytes of JSON (limit "
                f"{MAX_OBJECT_BYTES}); save it with fw.log_artifact instead"
            )
    return converted


def check_name(name: Any) -> str:
    """Validate a key name: any non-empty string without NUL characters."""
    if not isinstance(name, str):
        raise InvalidNameError(f"a key name must be a string, got {_type_path(name)}: {name!r}")
    if not name or name.isspace():
        raise InvalidNameError("a key name must not be empty")
    if "\x00" in name:
        raise InvalidNameError(f"a key name must not contain NUL characters: {name!r}")
    return name


def is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
