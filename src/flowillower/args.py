"""Hyper-parameters from the command line: `python train.py --kwargs lr=5e-4 hidden=250`.

Our tokens are taken out of `sys.argv` when flowillower is imported, so the script's own
argparse / click / Hydra parser never sees them, and unknown flags stay for that parser.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from .errors import ArgCastError

FLAG = "--kwargs"

# name -> raw string from the command line, filled once by `extract_kwargs`.
cli_kwargs: dict[str, str] = {}
# Set by a hindsight replay: `arg()` returns the replayed run's recorded values.
replay_overrides: dict[str, Any] | None = None


def extract_kwargs(argv: list[str]) -> dict[str, str]:
    """Remove `--kwargs k=v ...` (and `--kwargs=k=v`) from `argv` in place; return the pairs.

    Pairs continue until a token that does not look like `name=value` (e.g. the next
    `--flag`), so the script's own flags before or after ours keep working.
    """
    found: dict[str, str] = {}
    i = 1
    while i < len(argv):
        token = argv[i]
        if token == FLAG or token.startswith(FLAG + "="):
            del argv[i]
            pending = [token[len(FLAG) + 1:]] if token != FLAG else []
            while i < len(argv) and _is_pair(argv[i]):
                pending.append(argv.pop(i))
            for pair in pending:
                if pair:
                    name, _, raw = pair.partition("=")
                    found[name.strip()] = raw
            continue
        i += 1
    return found


def _is_pair(token: str) -> bool:
    return "=" in token and not token.startswith("-") and token.partition("=")[0].strip() != ""


_TRUE = {"1", "true", "yes", "y", "on", "t"}
_FALSE = {"0", "false", "no", "n", "off", "f"}


def cast(name: str, raw: str, default: Any) -> Any:
    """Cast a command-line string to the type of `default`, with a clear error."""
    try:
        return _cast(raw, default)
    except (ValueError, TypeError) as exc:
        raise ArgCastError(
            f"--kwargs {name}={raw!r}: cannot be read as {type(default).__name__} "
            f"(the type of the default {default!r}): {exc}"
        ) from None


def _cast(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError("expected one of true/false/1/0/yes/no")
    if isinstance(default, int):
        text = raw.strip().replace("_", "")
        try:
            return int(text)
        except ValueError:
            as_float = float(text)  # accept 1e3, refuse 1.5
            if not as_float.is_integer():
                raise ValueError("not a whole number") from None
            return int(as_float)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, str):
        return raw
    if isinstance(default, (list, tuple)):
        text = raw.strip()
        if text.startswith("["):
            items = json.loads(text)
            if not isinstance(items, list):
                raise ValueError("expected a JSON list")
        else:
            items = [part.strip() for part in text.split(",")] if text else []
        if default:  # cast elements like the default's first element
            items = [_cast(str(i), default[0]) if isinstance(i, str) else i for i in items]
        return tuple(items) if isinstance(default, tuple) else items
    if isinstance(default, dict):
        value = json.loads(raw)
        if not isinstance(value, dict):
            raise ValueError("expected a JSON object")
        return value
    if default is None:
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return type(default)(raw)


def resolve(name: str, default: Any) -> Any:
    """The value `fw.arg(name, default)` returns: replay value, CLI value or default."""
    if replay_overrides is not None and name in replay_overrides:
        return replay_overrides[name]
    if name in cli_kwargs:
        return cast(name, cli_kwargs[name], default)
    return default


def flatten_config(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a dict / Namespace / dataclass / OmegaConf config to dotted keys."""
    data = _as_mapping(obj)
    flat: dict[str, Any] = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) or _is_structured(value):
            nested = flatten_config(value, full)
            if nested:
                flat.update(nested)
                continue
        flat[full] = value
    return flat


def _is_structured(value: Any) -> bool:
    import dataclasses

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return True
    module = type(value).__module__
    return module.startswith("omegaconf") or type(value).__name__ == "Namespace"


def _as_mapping(obj: Any) -> dict[str, Any]:
    import dataclasses

    if isinstance(obj, dict):
        return obj
    if type(obj).__module__.startswith("omegaconf"):
        from omegaconf import OmegaConf  # only present when the user passes one

        return OmegaConf.to_container(obj, resolve=True)  # type: ignore[return-value]
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "__dict__") and not callable(obj):
        return dict(vars(obj))
    raise TypeError(f"fw.config expects a dict, argparse Namespace, dataclass or OmegaConf "
                    f"object, got {type(obj).__name__}")


def install_from_sys_argv() -> None:
    """Called once at import: take our pairs out of sys.argv before any user parser."""
    cli_kwargs.update(extract_kwargs(sys.argv))
