"""The filter engine shared by `fw.dataframe(runs=...)`, the CLI and the web UI.

Three forms are accepted, all turned into a predicate over a run row
(`Store.runs()` / `Index.run_rows()` dicts; `Store.runs(row_filter(text))` applies one):

* fitlog's syntax: ``${'hyper-lr':'<0.3', 'hyper-lr':[0.1,0.3], 'hyper-x':'0.1<&&<0.3',
  'and_filters':0}$`` -- a list means "any of"; ``< > <= >= !=`` may stand on either side
  of the number; ``'a<&&<b'`` is a range; columns are AND-ed unless ``and_filters`` is 0.
* an expression: ``lr < 0.3 and status == "finished"`` (Python comparison syntax; names
  joined by ``-`` such as ``hyper-lr`` are one name; write subtraction with spaces).
* plain text: every word must appear in the run's id, name, tags, notes or args.

Names resolve as: run fields (id, name, project, status, created, ended, duration, tags,
notes, host, author, origin, branch, hidden; `created` / `ended` compare with dates written
as text, ``created > '2026-11-01'``, local time unless a zone is given), ``hyper-X`` /
``args.X`` (an arg), ``metric-X`` / ``metrics.X`` (a metric's last value), ``X.min`` /
``X.max`` / ``X.last`` / ``X.count``, and a bare ``X`` (an arg if the run has one by that
name, else a metric's last value). A value the run lacks fails every comparison but ``!=``.

`compile_filter(text, rows)` (the CLI and the UI) resolves each name once against the runs
being filtered (`queries.names`): it reports how each name resolved and rejects an unknown
or ambiguous name with "did you mean" spellings, never matching nothing silently.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import FilterSyntaxError
from .names import (
    FIELDS,
    TIME_FIELDS,
    NameUse,
    Timestamp,
    Vocabulary,
    as_time,
    parse_time,
    resolve_name,
)
from .names import MISSING as _MISSING

Row = dict[str, Any]
Predicate = Callable[[Row], bool]
Getter = Callable[[str], Callable[[Row], Any]]  # filter name -> `row -> value`

_FIELDS = FIELDS
_FIELD_ALIASES = {"branch": "git_branch", "head": "git_head", "run": "id", "run_id": "id"}
_STATUS_ALIASES = {"finished": "success", "done": "success", "crashed": "failed"}
_STATS = {"min", "max", "last", "count"}


def lookup(row: Row, name: str) -> Any:
    """The value a filter name refers to in a run row, or `_MISSING`."""
    name = _FIELD_ALIASES.get(name, name)
    if name in _FIELDS and name in row:
        return as_time(row[name]) if name in TIME_FIELDS else row[name]
    args, metrics = row.get("args", {}), row.get("metrics", {})
    for prefix in ("hyper-", "hyper.", "args.", "arg.", "config."):
        if name.startswith(prefix):
            return args.get(name[len(prefix):], _MISSING)
    for prefix in ("metric-", "metric.", "metrics.", "loss-"):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            for candidate in (rest, rest.replace("-", "/"), rest.replace("-", ".")):
                if candidate in metrics:
                    return metrics[candidate]["last"]
            return _MISSING
    if name in args:
        return args[name]
    if name in metrics:
        return metrics[name]["last"]
    base, _, stat = name.rpartition(".")
    if stat in _STATS and base in metrics:
        return metrics[base].get(stat, _MISSING)
    return _MISSING


def _coerce(left: Any, right: Any) -> tuple[Any, Any]:
    """Compare numbers with numbers even when one side came in as text, and a run's time
    with a date written as text (``created > '2026-11-01'``)."""
    if type(left) is Timestamp and isinstance(right, str):
        when = parse_time(right)
        return (left, when) if when is not None else (left, right)
    if type(right) is Timestamp and isinstance(left, str):
        when = parse_time(left)
        return (when, right) if when is not None else (left, right)
    if isinstance(left, str) and isinstance(right, (int, float)) and not isinstance(right, bool):
        try:
            return float(left), right
        except ValueError:
            return left, right
    if isinstance(right, str) and isinstance(left, (int, float)) and not isinstance(left, bool):
        try:
            return left, float(right)
        except ValueError:
            return left, right
    return left, right


def _compare(op: Callable[[Any, Any], bool], left: Any, right: Any) -> bool:
    if left is _MISSING or right is _MISSING:
        return op is operator.ne
    left, right = _coerce(left, right)
    if isinstance(left, str) and isinstance(right, str) and op in (operator.eq, operator.ne):
        left, right = _STATUS_ALIASES.get(left, left), _STATUS_ALIASES.get(right, right)
    try:
        return bool(op(left, right))
    except TypeError:
        return op is operator.ne


# -- fitlog syntax -------------------------------------------------------------------
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
        "!=": operator.ne, "==": operator.eq, "=": operator.eq}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!=", "==": "==", "=": "="}
_COND = re.compile(r"^\s*(<=|>=|!=|==|<|>|=)?\s*([^<>=!]*?)\s*(<=|>=|!=|==|<|>|=)?\s*$")


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _plain(name: str) -> Callable[[Row], Any]:
    return lambda row: lookup(row, name)


def _fitlog_condition(column: str, spec: Any, getter: Getter = _plain) -> Predicate:
    value_of = getter(column)
    if isinstance(spec, (list, tuple)):
        parts = [_fitlog_condition(column, item, getter) for item in spec]
        return lambda row: any(p(row) for p in parts)
    if not isinstance(spec, str):
        return lambda row: _compare(operator.eq, value_of(row), spec)
    if "&&" in spec:
        parts = [_fitlog_condition(column, piece, getter) for piece in spec.split("&&")]
        return lambda row: all(p(row) for p in parts)
    match = _COND.match(spec)
    if not match or (match.group(1) and match.group(3)):
        raise FilterSyntaxError(f"cannot read condition {spec!r} for {column!r}; write e.g. "
                                "'<0.3', '0.1<&&<0.3' or '!=0.4'")
    before, value_text, after = match.groups()
    value = _literal(value_text)
    if before:  # '<0.3' means column < 0.3
        op = _OPS[before]
        return lambda row: _compare(op, value_of(row), value)
    if after:  # '0.3>' means 0.3 > column, i.e. column < 0.3
        op = _OPS[_FLIP[after]]
        return lambda row: _compare(op, value_of(row), value)
    return lambda row: _compare(operator.eq, value_of(row), value)


def _parse_fitlog(text: str, getter: Getter = _plain) -> Predicate:
    body = text.strip()[1:-1].strip()  # drop the $ ... $
    try:
        tree = ast.parse(body, mode="eval").body
    except SyntaxError as exc:
        raise FilterSyntaxError(f"cannot parse fitlog filter {text!r}: {exc.msg}") from None
    if not isinstance(tree, ast.Dict):
        raise FilterSyntaxError("a fitlog filter is a dict between ${ and }$")
    conditions: list[Predicate] = []
    use_and = True
    # Read the ast.Dict pairs one by one: fitlog filters may repeat a key.
    for key_node, value_node in zip(tree.keys, tree.values):
        try:
            key = ast.literal_eval(key_node) if key_node is not None else None
            value = ast.literal_eval(value_node)
        except ValueError:
            raise FilterSyntaxError(f"only literal keys and values are allowed in {text!r}"
                                    ) from None
        if key == "and_filters":
            use_and = bool(value)
            continue
        conditions.append(_fitlog_condition(str(key), value, getter))
    if not conditions:
        return lambda row: True
    if use_and:
        return lambda row: all(c(row) for c in conditions)
    return lambda row: any(c(row) for c in conditions)


# -- expressions ---------------------------------------------------------------------
_AST_OPS = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt,
            ast.GtE: operator.ge, ast.Eq: operator.eq, ast.NotEq: operator.ne}
# Dashed names (`my-arg`) are protected before parsing; a quoted string is skipped
# whole, so a hyphen inside it ('ml-runs') stays text.
_QUOTED_OR_DASHED = re.compile(r"""('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
                               r"""|(?<![\w.'"])([A-Za-z_][\w.]*(?:-[A-Za-z_][\w.]*)+)""")
_PLACEHOLDER = "__fwname{}__"


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _compile_expr(node: ast.AST, names: dict[str, str], getter: Getter = _plain
                  ) -> Callable[[Row], Any]:
    if isinstance(node, ast.BoolOp):
        parts = [_compile_expr(v, names, getter) for v in node.values]
        if isinstance(node.op, ast.And):
            return lambda row: all(_truth(p(row)) for p in parts)
        return lambda row: any(_truth(p(row)) for p in parts)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _compile_expr(node.operand, names, getter)
        return lambda row: not _truth(inner(row))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = ast.literal_eval(node)
        return lambda row: value
    if isinstance(node, ast.Compare):
        left = _compile_expr(node.left, names, getter)
        steps = [(op, _compile_expr(c, names, getter)) for op, c in zip(node.ops, node.comparators)]

        def compare(row: Row) -> bool:
            current = left(row)
            for op, right_fn in steps:
                right = right_fn(row)
                if isinstance(op, (ast.In, ast.NotIn)):
                    ok = _contains(right, current)
                    ok = ok if isinstance(op, ast.In) else not ok
                elif type(op) in _AST_OPS:
                    ok = _compare(_AST_OPS[type(op)], current, right)
                else:
                    raise FilterSyntaxError(f"operator {type(op).__name__} is not supported")
                if not ok:
                    return False
                current = right
            return True

        return compare
    if isinstance(node, (ast.Constant, ast.List, ast.Tuple, ast.Set)):
        value = ast.literal_eval(node)
        return lambda row: value
    dotted = _dotted(node)
    if dotted is not None:
        return getter(names.get(dotted, dotted))
    raise FilterSyntaxError(f"unsupported syntax in filter: {ast.dump(node)[:60]}")


def _truth(value: Any) -> bool:
    return value is not _MISSING and bool(value)


def _contains(container: Any, item: Any) -> bool:
    if container is _MISSING or item is _MISSING:
        return False
    if isinstance(container, str):
        return str(item) in container
    try:
        return any(_compare(operator.eq, item, c) for c in container)
    except TypeError:
        return False


def _parse_expression(text: str, getter: Getter = _plain) -> Predicate:
    names: dict[str, str] = {}

    def protect_name(name: str) -> str:
        key = _PLACEHOLDER.format(len(names))
        names[key] = name
        return key

    source = re.sub(r"`([^`]+)`", lambda m: protect_name(m.group(1)), text)
    source = _QUOTED_OR_DASHED.sub(lambda m: m.group(1) or protect_name(m.group(2)), source)
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise FilterSyntaxError(f"cannot parse filter {text!r}: {exc.msg}") from None
    fn = _compile_expr(tree, names, getter)
    return lambda row: _truth(fn(row))


def _text_search(text: str) -> Predicate:
    words = text.lower().split()

    def haystack(row: Row) -> str:
        parts = [str(row.get(k, "")) for k in ("id", "name", "notes", "project", "status")]
        parts += [str(t) for t in row.get("tags", [])]
        parts += [f"{k}={v}" for k, v in row.get("args", {}).items()]
        return " ".join(parts).lower()

    return lambda row: all(w in haystack(row) for w in words)


_EXPRESSION_HINT = re.compile(r"[<>=!]|\b(and|or|not|in)\b")


def parse_filter(text: str) -> Predicate:
    """Compile a filter in any of the three forms into `predicate(row) -> bool`."""
    stripped = (text or "").strip()
    if not stripped:
        return lambda row: True
    if stripped.startswith("${") and stripped.endswith("}$"):
        return _parse_fitlog(stripped)
    if _EXPRESSION_HINT.search(stripped):
        return _parse_expression(stripped)
    return _text_search(stripped)


def row_filter(text: str | None) -> Predicate | None:
    """The predicate `Store.runs(where=...)` takes for filter `text`: None (every run) when
    there is no filter or only an empty one, else `parse_filter(text)`."""
    return parse_filter(text) if text else None


# -- names resolved against the runs (what the CLI and the UI use) ------------------
class FilterNameError(FilterSyntaxError):
    """A filter names something no run has, or something two ways (arg and metric)."""

    def __init__(self, message: str, uses: list[NameUse]) -> None:
        super().__init__(message)
        self.uses = uses


@dataclass
class CompiledFilter:
    """A filter compiled against some runs: the predicate and how each name resolved."""

    predicate: Predicate
    uses: list[NameUse] = field(default_factory=list)

    def describe(self) -> list[str]:
        """One line per name: ``learning_rate → args.training.learning_rate (arg)``."""
        return [use.describe() for use in self.uses]


def compile_filter(text: str | None, rows: Iterable[Row],
                   vocab: Vocabulary | None = None) -> CompiledFilter:
    """Compile filter `text` with each name resolved against `rows` (see `names`): unlike
    `parse_filter`, a bare name means the same thing in every run, and an unknown or
    ambiguous name raises `FilterNameError` listing the spellings to use instead.
    `vocab`, when given, is `Vocabulary.from_rows(rows)` already built."""
    stripped = (text or "").strip()
    is_fitlog = stripped.startswith("${") and stripped.endswith("}$")
    if not stripped or not (is_fitlog or _EXPRESSION_HINT.search(stripped)):
        return CompiledFilter(parse_filter(stripped))  # plain words name nothing
    vocab = vocab if vocab is not None else Vocabulary.from_rows(rows)
    uses: dict[str, NameUse] = {}

    def getter(name: str) -> Callable[[Row], Any]:
        use = uses.setdefault(name, resolve_name(name, vocab))
        return use.getter() if use.ok else (lambda row: _MISSING)

    predicate = (_parse_fitlog(stripped, getter) if is_fitlog
                 else _parse_expression(stripped, getter))
    bad = [u for u in uses.values() if not u.ok]
    if bad:
        raise FilterNameError("; ".join(u.describe() for u in bad), list(uses.values()))
    return CompiledFilter(predicate, list(uses.values()))


def _short_arg_name(key: str, vocab: Vocabulary) -> str:
    """The shortest spelling of arg `key` that resolves back to it."""
    parts = key.split(".")
    for i in range(len(parts) - 1, -1, -1):
        name = ".".join(parts[i:])
        use = resolve_name(name, vocab)
        if use.kind == "arg" and use.key == key and re.fullmatch(r"[A-Za-z_][\w.]*", name):
            return name
    return f"`args.{key}`"


def example_filter(rows: list[Row]) -> str | None:
    """A filter that works on `rows` and keeps some but not all of them, built from an arg
    whose value varies (``learning_rate <= 0.001``); None when no arg varies."""
    vocab = Vocabulary.from_rows(rows)
    numeric: dict[str, set] = {}
    text: dict[str, set] = {}
    for row in rows:
        for key, value in (row.get("args") or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                numeric.setdefault(key, set()).add(value)
            elif isinstance(value, str) and len(value) < 40:
                text.setdefault(key, set()).add(value)
    candidates = [f"{_short_arg_name(k, vocab)} <= {min(v)!r}"
                  for k, v in sorted(numeric.items()) if len(v) > 1]
    candidates += [f"{_short_arg_name(k, vocab)} == {min(v)!r}"
                   for k, v in sorted(text.items()) if len(v) > 1]
    for candidate in candidates:  # check it: a placeholder that fails would mislead
        try:
            predicate = compile_filter(candidate, rows, vocab).predicate
        except FilterSyntaxError:
            continue
        seen: set[bool] = set()
        for row in rows:  # stop once it has kept one run and dropped another
            seen.add(predicate(row))
            if len(seen) == 2:
                return candidate
    return None
