"""A table of odd values and names, each with a defined outcome: what is stored is read back
with the same value and the same type (through `RunReader` and `fw.dataframe`); what cannot
be stored raises at once and leaves nothing behind."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import pytest

import flowillower as fw
from flowillower.errors import InvalidNameError, UnsupportedValueError
from flowillower.store.reader import RunReader
from tests.conftest import only_run


@dataclass(frozen=True)
class Stored:
    """The value read back, and how the reader holds it: "float" (float64), "int" (int64)
    or "object" (the Python object itself)."""

    value: Any
    kind: str


@dataclass(frozen=True)
class Torch:
    """A torch value, built only when torch is installed (the case skips otherwise)."""

    make: Callable[[Any], Any]


# The data frame's column dtype for values the reader holds as float64 / int64.
DF_DTYPE = {"float": "float64", "int": "Int64"}

# (case id, name, value, expected outcome: Stored(...) or an exception type)
CASES = [
    ("nan", "v", float("nan"), Stored(float("nan"), "float")),
    ("inf", "v", float("inf"), Stored(float("inf"), "float")),
    ("-inf", "v", float("-inf"), Stored(float("-inf"), "float")),
    ("float overflow", "v", 1e308 * 10, Stored(float("inf"), "float")),
    ("negative zero", "v", -0.0, Stored(-0.0, "float")),
    ("smallest subnormal", "v", 5e-324, Stored(5e-324, "float")),
    ("none", "v", None, Stored(None, "object")),
    ("true", "v", True, Stored(True, "object")),
    ("false", "v", False, Stored(False, "object")),
    ("zero", "v", 0, Stored(0, "int")),
    ("huge int", "v", 10**30, Stored(10**30, "object")),
    ("negative huge int", "v", -(10**30), Stored(-(10**30), "object")),
    ("int64 max", "v", 2**63 - 1, Stored(2**63 - 1, "int")),
    ("int64 min", "v", -(2**63), Stored(-(2**63), "int")),
    ("int64 max + 1", "v", 2**63, Stored(2**63, "object")),
    ("numpy float32", "v", np.float32(0.5), Stored(0.5, "float")),
    ("numpy int64", "v", np.int64(-3), Stored(-3, "int")),
    ("numpy uint8", "v", np.uint8(200), Stored(200, "int")),
    ("numpy bool", "v", np.bool_(True), Stored(True, "object")),
    ("numpy 0-d array", "v", np.array(2.5), Stored(2.5, "float")),
    ("numpy nan", "v", np.float64("nan"), Stored(float("nan"), "float")),
    ("torch 0-d float", "v", Torch(lambda t: t.tensor(1.5)), Stored(1.5, "float")),
    ("torch 0-d int", "v", Torch(lambda t: t.tensor(4)), Stored(4, "int")),
    ("torch 1-element", "v", Torch(lambda t: t.tensor([3.0])), Stored(3.0, "float")),
    ("torch bool", "v", Torch(lambda t: t.tensor(True)), Stored(True, "object")),
    ("torch bfloat16", "v", Torch(lambda t: t.tensor(0.25, dtype=t.bfloat16)),
     Stored(0.25, "float")),
    ("empty string", "v", "", Stored("", "object")),
    ("unicode", "v", "résumé 学习 🚀", Stored("résumé 学习 🚀", "object")),
    ("small dict", "v", {"a": 1, "b": [1, 2]}, Stored({"a": 1, "b": [1, 2]}, "object")),
    ("nested non-finite", "v", {"x": [float("inf"), None]},
     Stored({"x": [float("inf"), None]}, "object")),
    ("empty list", "v", [], Stored([], "object")),
    ("tuple", "v", (1, "a"), Stored((1, "a"), "object")),
    ("name with symbols", "a/b.c$d%e!f#g@h i", 1.0, Stored(1.0, "float")),
    ("unicode name", "损失/训练", 1.0, Stored(1.0, "float")),
    ("10k-char name", "n" * 10_000, 1.0, Stored(1.0, "float")),
    ("multi-element tensor", "v", Torch(lambda t: t.ones(3)), UnsupportedValueError),
    ("numpy vector", "v", np.ones(4), UnsupportedValueError),
    ("arbitrary object", "v", object(), UnsupportedValueError),
    ("fraction", "v", Fraction(1, 3), UnsupportedValueError),
    ("set", "v", {1, 2}, UnsupportedValueError),
    ("huge dict", "v", {str(i): "x" * 100 for i in range(2000)}, UnsupportedValueError),
    # The JSON size limit (64 KiB) is exact whatever shortcut measures it:
    ("long list, short numbers", "v", [1] * 20_000, Stored([1] * 20_000, "object")),  # 60,002 B
    ("long list over the limit", "v", [0.1] * 20_000, UnsupportedValueError),
    ("huge ints over the limit", "v", [10**4000] * 20, UnsupportedValueError),
    ("escapes over the limit", "v", ["\x01" * 12_000], UnsupportedValueError),  # \u0001
    ("empty name", "", 1.0, InvalidNameError),
    ("blank name", "   ", 1.0, InvalidNameError),
    ("non-string name", 42, 1.0, InvalidNameError),
    ("NUL in name", "a\x00b", 1.0, InvalidNameError),
]


def _same(got: Any, want: Any) -> bool:
    """Equal and of exactly the same type, all the way down (NaN equals NaN, -0.0 is not
    0.0); `True` is not `1` and `(1, "a")` is not `[1, "a"]`."""
    if type(got) is not type(want):
        return False
    if isinstance(want, float):
        if math.isnan(want):
            return math.isnan(got)
        return got == want and math.copysign(1, got) == math.copysign(1, want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
    if isinstance(want, dict):
        return list(got) == list(want) and all(_same(got[k], want[k]) for k in want)
    return got == want


def _py(value: Any) -> Any:
    """A numpy / pandas scalar as the Python value it holds."""
    return value.item() if isinstance(value, np.generic) else value


@pytest.mark.parametrize(("case", "name", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_odd_value(case, name, value, expected, store_dir):
    if isinstance(value, Torch):
        value = value.make(pytest.importorskip("torch"))
    fw.init()
    fw.log("before", 1.0)
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected):
            fw.log(name, value)
    else:
        assert fw.log(name, value) is value  # returned unchanged
    fw.log("after", 2.0)
    fw.finish()
    series = RunReader(only_run(store_dir)).load().series
    # Nothing else lost, whatever happened to the odd value.
    assert series["before"].values.tolist() == [1.0]
    assert series["after"].values.tolist() == [2.0]
    if not isinstance(expected, Stored):
        # Refused at the call: no half-written trace of it in the run.
        assert sorted(series) == ["after", "before"]
        return
    stored = series[name]
    assert len(stored.values) == 1 and stored.step.tolist() == series["before"].step.tolist()
    assert stored.kind == expected.kind, (stored.kind, expected.kind)
    assert stored.values.dtype == {"float": np.float64, "int": np.int64}.get(expected.kind,
                                                                            object)
    assert _same(stored.last(), expected.value), (stored.last(), expected.value)

    # The same through the data frame users read: one row, one column, same value and type.
    frame = fw.dataframe(name, dir=store_dir)
    assert list(frame.columns) == ["run_id", "run_name", name] and len(frame) == 1
    cell = _py(frame[name].iloc[0])
    if expected.kind in DF_DTYPE:
        assert str(frame[name].dtype) == DF_DTYPE[expected.kind]
    elif type(expected.value) is bool:
        assert str(frame[name].dtype) == "boolean"
    if expected.value is None:
        assert cell is None or cell is pd.NA
    else:
        assert _same(cell, expected.value), (cell, expected.value)


def test_all_odd_values_in_one_run_keep_their_own_step_and_type(store_dir):
    """Every storable odd value logged in one run, one key each, each at its own step:
    no value takes another's type, step or place (torch values: in `test_odd_value`)."""
    storable = [(case, value, exp) for case, name, value, exp in CASES
                if isinstance(exp, Stored) and name == "v" and not isinstance(value, Torch)]
    fw.init()
    for step, (_case, value, _exp) in enumerate(storable):
        fw.log(f"k{step}", value, step=step)
    fw.finish()
    series = RunReader(only_run(store_dir)).load().series
    assert sorted(series) == sorted(f"k{i}" for i in range(len(storable)))
    for step, (case, _value, exp) in enumerate(storable):
        got = series[f"k{step}"]
        assert got.step.tolist() == [step], case
        assert got.kind == exp.kind and _same(got.last(), exp.value), (case, got.last())


def test_one_key_with_values_of_every_kind(store_dir):
    """One key that is a float, an int, None, text, a huge int, a bool and a list at
    different steps keeps each value at its step with its own type (read by step)."""
    logged = [1.5, 2, None, "s", 10**30, float("nan"), True, -(2**63), np.float32(0.25),
              [1.0, float("nan")], {"x": float("inf")}]
    want = [1.5, 2, None, "s", 10**30, float("nan"), True, -(2**63), 0.25,
            [1.0, float("nan")], {"x": float("inf")}]
    fw.init()
    for step, value in enumerate(logged):
        fw.log("v", value, step=step)
    fw.finish()
    series = RunReader(only_run(store_dir)).load().series["v"]
    assert series.kind == "object"
    by_step = {int(s): _py(v) for s, v in zip(series.step, series.values)}
    assert sorted(by_step) == list(range(len(logged)))
    for step, value in enumerate(want):
        assert _same(by_step[step], value), (step, by_step[step], value)
    frame = fw.dataframe("v", dir=store_dir)
    assert frame["step"].tolist() == list(range(len(logged)))
    for step, value in enumerate(want):
        assert _same(_py(frame["v"].iloc[step]), value), (step, frame["v"].iloc[step])


def test_a_dict_that_looks_like_a_format_tag_reads_back_as_logged(tmp_path):
    """{"$float": "abc"} is the user's dict, not our tag: the frame stays readable, every
    other value in it too, and the dict comes back as logged."""
    from flowillower.run import Run
    from flowillower.store.reader import RunReader

    run = Run("p", "tags", dir=tmp_path / ".fw", snapshot=False)
    odd = {"$float": "abc"}
    run.log_metrics({"loss": 0.5, "odd": odd, "also": {"$tuple": 3}, "t": {"$dict": 1}}, 0)
    run.finish()
    series = RunReader(run.dir).load().series
    assert series["loss"].values.tolist() == [0.5]
    assert list(series["odd"].values) == [odd]
    assert list(series["also"].values) == [{"$tuple": 3}]
    assert list(series["t"].values) == [{"$dict": 1}]
