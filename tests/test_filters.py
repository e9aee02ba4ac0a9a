"""The filter engine: fitlog syntax, expressions and plain text over run rows."""

from __future__ import annotations

import pytest

from flowillower.errors import FilterSyntaxError
from flowillower.queries.filters import parse_filter

ROWS = [
    {"id": "r1", "name": "baseline", "status": "success", "tags": ["paper"], "notes": "",
     "args": {"lr": 0.1, "dropout": 0.4, "opt": "adam"},
     "metrics": {"acc": {"last": 0.8, "min": 0.1, "max": 0.85}, "dev/acc": {"last": 0.7}}},
    {"id": "r2", "name": "big-lr", "status": "failed", "tags": [], "notes": "diverged",
     "args": {"lr": 0.3, "dropout": 0.1, "opt": "sgd"},
     "metrics": {"acc": {"last": 0.2, "min": 0.1, "max": 0.3}}},
    {"id": "r3", "name": "mid", "status": "running", "tags": ["paper"], "notes": "",
     "args": {"lr": 0.2, "opt": "adam"},
     "metrics": {}},
]


def ids(text):
    pred = parse_filter(text)
    return [r["id"] for r in ROWS if pred(r)]


@pytest.mark.parametrize(("text", "expected"), [
    ("${'hyper-lr':'<0.3'}$", ["r1", "r3"]),
    ("${'hyper-lr':'0.3>'}$", ["r1", "r3"]),
    ("${'hyper-lr':[0.1,0.3]}$", ["r1", "r2"]),
    ("${'hyper-lr':'0.1<&&<0.3'}$", ["r3"]),
    ("${'hyper-dropout':'!=0.4'}$", ["r2", "r3"]),
    ("${'hyper-lr':'<0.3', 'hyper-opt':'adam'}$", ["r1", "r3"]),
    ("${'hyper-lr':'<0.2', 'hyper-lr':'>0.25', 'and_filters':0}$", ["r1", "r2"]),
    ("${'metric-acc':'>=0.5'}$", ["r1"]),
    ("${'metric-dev-acc':'>0.5'}$", ["r1"]),
    ("${}$", ["r1", "r2", "r3"]),
])
def test_fitlog_syntax(text, expected):
    assert ids(text) == expected


@pytest.mark.parametrize(("text", "expected"), [
    ('lr < 0.3 and status == "finished"', ["r1"]),
    ("lr <= 0.2 or acc < 0.5", ["r1", "r2", "r3"]),
    ("not lr > 0.1", ["r1"]),
    ("0.1 < lr < 0.3", ["r3"]),
    ('opt in ["sgd"]', ["r2"]),
    ('"paper" in tags', ["r1", "r3"]),
    ("acc.max > 0.5", ["r1"]),
    ("hyper-lr == 0.2", ["r3"]),
    ("`dev/acc` > 0.5", ["r1"]),
    ("dropout != 0.4", ["r2", "r3"]),  # a missing value differs from anything
    ("dropout < 1", ["r1", "r2"]),  # ... but fails other comparisons
    ('status == "killed"', []),
])
def test_expressions(text, expected):
    assert ids(text) == expected


def test_plain_text_search():
    assert ids("diverged") == ["r2"]
    assert ids("PAPER adam") == ["r1", "r3"]
    assert ids("") == ["r1", "r2", "r3"]


@pytest.mark.parametrize("text", ["lr <", "${'a': }$", "${[1,2]}$", "lr < (", "f(x) > 1",
                                  "${'hyper-lr':'<0.1>'}$"])
def test_bad_filters_raise_clear_errors(text):
    with pytest.raises(FilterSyntaxError):
        ids(text)
