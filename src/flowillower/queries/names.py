"""How a filter's names resolve against the runs being filtered.

`resolve_name` turns a name as typed (``lr``, ``learning_rate``, ``args.lr``,
``metrics.val/acc``, ``loss.min``, ``status``) into a `NameUse`: what it refers to (a run
field, an arg, a metric's last value or statistic, a tag) or why it cannot be read
(unknown, with "did you mean" suggestions; ambiguous, with the explicit spellings). The
answer depends on the runs: a bare ``lr`` is an arg when only args have it, a metric when
only metrics do, and an error listing ``args.lr`` and ``metrics.lr`` when both do -- never a
silent pick per run.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Row = dict[str, Any]
MISSING = object()  # a value the run lacks

FIELDS = frozenset({"id", "name", "project", "status", "created", "ended", "duration", "tags",
                    "notes", "host", "author", "origin", "hidden", "git_branch", "git_head",
                    "snapshot"})
TIME_FIELDS = frozenset({"created", "ended"})


class Timestamp(float):
    """A run's time (seconds since the epoch, as the index keeps it) that a filter may
    compare with a date written as text: ``created > '2026-11-01'``."""

    __slots__ = ()


def as_time(value: Any) -> Any:
    """`value` as a `Timestamp` when it is a number (a run's `created` / `ended`)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timestamp(value)
    return value


def parse_time(text: str) -> float | None:
    """Seconds since the epoch of an ISO date or date-time (``2026-11-01``,
    ``2026-11-01 14:30``, ``2026-11-01T14:30:00+01:00``); without a zone it is local time,
    as `flowillower ls` shows times. None when `text` is not one."""
    import datetime as dt

    try:
        return dt.datetime.fromisoformat(text.strip()).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
FIELD_ALIASES = {"branch": "git_branch", "head": "git_head", "run": "id", "run_id": "id"}
STATS = ("last", "min", "max", "count")
ARG_PREFIXES = ("hyper-", "hyper.", "args.", "arg.", "config.")
METRIC_PREFIXES = ("metric-", "metric.", "metrics.", "loss-")
TAG_PREFIXES = ("tag.", "tags.", "tag-")


@dataclass
class Vocabulary:
    """Every arg, metric and tag name found in some runs."""

    args: set[str] = field(default_factory=set)
    metrics: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)

    @classmethod
    def from_rows(cls, rows: Iterable[Row]) -> Vocabulary:
        vocab = cls()
        for row in rows:
            vocab.args.update(row.get("args") or ())
            vocab.metrics.update(row.get("metrics") or ())
            vocab.tags.update(str(t) for t in row.get("tags") or ())
        return vocab


@dataclass
class NameUse:
    """One name of a filter and what it resolved to.

    `kind` is ``field``, ``arg``, ``metric``, ``tag``, ``unknown`` or ``ambiguous``;
    `key` the field / arg / metric / tag it reads; `stat` the metric statistic;
    `choices` the explicit spellings (ambiguous) or suggestions (unknown)."""

    name: str
    kind: str
    key: str = ""
    stat: str = "last"
    choices: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.kind not in ("unknown", "ambiguous")

    @property
    def spelling(self) -> str:
        """The explicit name this resolved to (``args.training.lr``, ``metrics.loss.min``)."""
        if self.kind == "arg":
            return f"args.{self.key}"
        if self.kind == "metric":
            return f"metrics.{self.key}" + ("" if self.stat == "last" else f".{self.stat}")
        if self.kind == "tag":
            return f"tag.{self.key}"
        return self.key

    def describe(self) -> str:
        """One line for people: how the name resolved, or why it did not."""
        quoted = " or ".join(", ".join(f"`{c}`" for c in self.choices).rsplit(", ", 1))
        if self.kind == "unknown":
            hint = f"; did you mean {quoted}?" if self.choices else ""
            return f"unknown name `{self.name}`{hint}"
        if self.kind == "ambiguous":
            return f"ambiguous name `{self.name}`: write {quoted}"
        what = {"field": "run field", "arg": "arg", "tag": "tag (true when the run has it)",
                "metric": f"metric, {self.stat} value"}[self.kind]
        return f"`{self.name}` → `{self.spelling}` ({what})"

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "key": self.key, "stat": self.stat,
                "as": self.spelling if self.ok else "", "choices": self.choices,
                "message": self.describe()}

    def getter(self) -> Callable[[Row], Any]:
        """`row -> value` (MISSING when the run lacks it) for a resolved name."""
        key, stat = self.key, self.stat
        if self.kind == "field" and key in TIME_FIELDS:
            return lambda row: as_time(row.get(key, MISSING))
        if self.kind == "field":
            return lambda row: row.get(key, MISSING)
        if self.kind == "arg":
            return lambda row: (row.get("args") or {}).get(key, MISSING)
        if self.kind == "tag":
            return lambda row: key in (row.get("tags") or ())
        if self.kind == "metric":
            return lambda row: ((row.get("metrics") or {}).get(key) or {}).get(stat, MISSING)
        raise ValueError(self.describe())


def _suffix_matches(name: str, keys: Iterable[str]) -> list[str]:
    """Keys whose last dotted (or slashed) component(s) are `name`."""
    return sorted(k for k in keys if k.endswith(("." + name, "/" + name)))


def _abbreviates(name: str, key: str) -> bool:
    """`lr` abbreviates `training.learning_rate`: the initials of its last component."""
    words = [w for w in re.split(r"[_\-]", key.rsplit(".", 1)[-1]) if w]
    return len(words) > 1 and len(name) > 1 and name == "".join(w[0] for w in words)


def _metric(name: str, rest: str, vocab: Vocabulary) -> NameUse | None:
    for candidate in (rest, rest.replace("-", "/"), rest.replace("-", ".")):
        if candidate in vocab.metrics:
            return NameUse(name, "metric", candidate)
    base, _, stat = rest.rpartition(".")
    if stat in STATS and base in vocab.metrics:
        return NameUse(name, "metric", base, stat)
    return None


def _suggest(name: str, vocab: Vocabulary, pool: str = "all") -> list[str]:
    """Explicit spellings close to `name` (by last component and by edit distance)."""
    if len(name) > 200:  # no name is that long; don't spend edit distances on it
        return []
    spellings: dict[str, str] = {}  # a comparable short form -> the explicit spelling
    if pool in ("all", "args"):
        for k in sorted(vocab.args):
            spellings.setdefault(k, f"args.{k}")
            spellings.setdefault(k.rsplit(".", 1)[-1], f"args.{k}")
    if pool in ("all", "metrics"):
        for k in sorted(vocab.metrics):
            spellings.setdefault(k, f"metrics.{k}")
            spellings.setdefault(k.replace("/", ".").rsplit(".", 1)[-1], f"metrics.{k}")
    if pool == "all":
        for f in sorted(FIELDS):
            spellings.setdefault(f, f)
    bare = name.lower()
    out = [s for short, s in spellings.items() if bare and (bare in short.lower())]
    out += [spellings[m] for m in difflib.get_close_matches(name, list(spellings), n=5,
                                                            cutoff=0.6)]
    return list(dict.fromkeys(out))[:5]


def resolve_name(name: str, vocab: Vocabulary) -> NameUse:
    """What filter name `name` reads in runs whose names are `vocab` (see module doc)."""
    bare = FIELD_ALIASES.get(name, name)
    if bare in FIELDS:
        return NameUse(name, "field", bare)
    for prefix in ARG_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if rest in vocab.args:
                return NameUse(name, "arg", rest)
            found = _suffix_matches(rest, vocab.args)
            if len(found) == 1:
                return NameUse(name, "arg", found[0])
            if found:
                return NameUse(name, "ambiguous", rest, choices=[f"args.{k}" for k in found])
            return NameUse(name, "unknown", rest, choices=_suggest(rest, vocab, "args"))
    for prefix in METRIC_PREFIXES:
        if name.startswith(prefix):
            rest = name[len(prefix):]
            return _metric(name, rest, vocab) or NameUse(
                name, "unknown", rest, choices=_suggest(rest, vocab, "metrics"))
    for prefix in TAG_PREFIXES:
        if name.startswith(prefix) and name[len(prefix):]:
            return NameUse(name, "tag", name[len(prefix):])
    in_args, in_metrics = name in vocab.args, name in vocab.metrics
    if in_args and in_metrics:
        return NameUse(name, "ambiguous", name,
                       choices=[f"args.{name}", f"metrics.{name}"])
    if in_args:
        return NameUse(name, "arg", name)
    # An arg that ends in `name` or abbreviates to it: the demo's `lr` is both the metric
    # `lr` and (as people write it) the arg `training.learning_rate`.
    like_args = [f"args.{k}" for k in sorted(vocab.args)
                 if k.endswith(("." + name, "/" + name)) or _abbreviates(name, k)]
    metric = _metric(name, name, vocab)
    if metric is not None:
        if like_args:
            return NameUse(name, "ambiguous", name, choices=[metric.spelling, *like_args])
        return metric
    found = like_args + [f"metrics.{k}" for k in _suffix_matches(name, vocab.metrics)]
    if len(found) == 1:
        kind, _, key = found[0].partition(".")
        return NameUse(name, "arg" if kind == "args" else "metric", key)
    if found:
        return NameUse(name, "ambiguous", name, choices=found)
    if name in vocab.tags:
        return NameUse(name, "tag", name)
    return NameUse(name, "unknown", name, choices=_suggest(name, vocab))
