"""A table of odd values and names, each with a defined outcome."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import flowillower as fw
from flowillower.errors import InvalidNameError, UnsupportedValueError
from flowillower.store.reader import RunReader
from tests.conftest import only_run

STORED = "stored"


def _same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b and type(a) is type(b)


# (case id, name, value, expected outcome: the value read back, or an exception type)
CASES = [
    ("nan", "v", float("nan"), float("nan")),
    ("inf", "v", float("inf"), float("inf")),
    ("-inf", "v", float("-inf"), float("-inf")),
    ("none", "v", None, None),
    ("true", "v", True, True),
    ("false", "v", False, False),
    ("zero", "v", 0, 0),
    ("huge int", "v", 10**30, 10**30),
    ("negative huge int", "v", -(10**30), -(10**30)),
    ("int64 max", "v", 2**63 - 1, 2**63 - 1),
    ("numpy float32", "v", np.float32(0.5), 0.5),
    ("numpy int64", "v", np.int64(-3), -3),
    ("numpy bool", "v", np.bool_(True), True),
    ("numpy 0-d array", "v", np.array(2.5), 2.5),
    ("numpy nan", "v", np.float64("nan"), float("nan")),
    ("torch 0-d float", "v", torch.tensor(1.5), 1.5),
    ("torch 0-d int", "v", torch.tensor(4), 4),
    ("torch 1-element", "v", torch.tensor([3.0]), 3.0),
    ("torch bool", "v", torch.tensor(True), True),
    ("empty string", "v", "", ""),
    ("unicode", "v", "résumé 学习 🚀", "résumé 学习 🚀"),
    ("small dict", "v", {"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 2]}),
    ("empty list", "v", [], []),
    ("tuple", "v", (1, "a"), (1, "a")),
    ("name with symbols", "a/b.c$d%e!f#g@h i", 1.0, 1.0),
    ("unicode name", "损失/训练", 1.0, 1.0),
    ("10k-char name", "n" * 10_000, 1.0, 1.0),
    ("multi-element tensor", "v", torch.ones(3), UnsupportedValueError),
    ("numpy vector", "v", np.ones(4), UnsupportedValueError),
    ("arbitrary object", "v", object(), UnsupportedValueError),
    ("fraction", "v", Fraction(1, 3), UnsupportedValueError),
    ("set", "v", {1, 2}, UnsupportedValueError),
    ("huge dict", "v", {str(i): "x" * 100 for i in range(2000)}, UnsupportedValueError),
    # The JSON size limit (64 KiB) is exact whatever shortcut measures it:
    ("long list, short numbers", "v", [1] * 20_000, [1] * 20_000),  # 60,002 bytes
    ("long list over the limit", "v", [0.1] * 20_000, UnsupportedValueError),
    ("huge ints over the limit", "v", [10**4000] * 20, UnsupportedValueError),
    ("escapes over the limit", "v", ["\x01" * 12_000], UnsupportedValueError),  # \u0001
    ("empty name", "", 1.0, InvalidNameError),
    ("blank name", "   ", 1.0, InvalidNameError),
    ("non-string name", 42, 1.0, InvalidNameError),
    ("NUL in name", "a\x00b", 1.0, InvalidNameError),
]


@pytest.mark.parametrize(("case", "name", "value", "expected"), CASES, ids=[c[0] for c in CASES])
def test_odd_value(case, name, value, expected, store_dir):
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
    if not (isinstance(expected, type) and issubclass(expected, Exception)):
        stored = series[name].values[0]
        stored = stored.item() if hasattr(stored, "item") else stored
        assert _same(stored, expected), (stored, expected)


def test_enough_cases():
    assert len(CASES) >= 25
