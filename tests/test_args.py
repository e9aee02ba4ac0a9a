"""fw.arg / fw.config: command-line hyper-parameters that coexist with the script's parser."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re

import pytest

import flowillower as fw
from flowillower.args import cast, extract_kwargs, flatten_config
from flowillower.errors import ArgCastError


@pytest.mark.parametrize(
    ("raw", "default", "expected"),
    [
        ("5e-4", 0.1, 5e-4),
        ("250", 100, 250),
        ("1e3", 100, 1000),
        ("true", False, True),
        ("0", True, False),
        ("adam", "sgd", "adam"),
        ("a,b", ["x"], ["a", "b"]),
        ("1,2,3", (0,), (1, 2, 3)),
        ('["a", "b,c"]', [], ["a", "b,c"]),
        ('{"k": 1}', {}, {"k": 1}),
        ("null", None, None),
        ("plain", None, "plain"),
    ],
)
def test_cast_to_default_type(raw, default, expected):
    value = cast("x", raw, default)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(("raw", "default"), [("abc", 1), ("1.5", 3), ("maybe", True),
                                               ("x", 0.5), ("[1", [])])
def test_bad_cast_is_a_clear_error(raw, default):
    with pytest.raises(ArgCastError, match=re.escape(f"x={raw!r}")):
        cast("x", raw, default)


def test_kwargs_removed_from_argv_and_other_flags_kept():
    argv = ["train.py", "--epochs", "3", "--kwargs", "lr=5e-4", "hidden=250", "--verbose"]
    found = extract_kwargs(argv)
    assert found == {"lr": "5e-4", "hidden": "250"}
    assert argv == ["train.py", "--epochs", "3", "--verbose"]
    argv = ["t.py", "--kwargs=lr=1", "pos"]
    assert extract_kwargs(argv) == {"lr": "1"} and argv == ["t.py", "pos"]


def test_script_with_own_argparse(run_script, store_dir):
    proc = run_script(
        """
        import argparse, json
        import flowillower as fw
        parser = argparse.ArgumentParser()
        parser.add_argument("--epochs", type=int, default=1)
        opts = parser.parse_args()          # must not choke on --kwargs
        lr = fw.arg("lr", 0.1)
        hidden = fw.arg("hidden", 10)
        layers = fw.arg("layers", [1])
        fw.log("loss", 1.0)
        print(json.dumps({"epochs": opts.epochs, "lr": lr, "hidden": hidden, "layers": layers}))
        """,
        "--epochs", "4", "--kwargs", "lr=5e-4", "hidden=250", "layers=3,4",
    )
    assert json.loads(proc.stdout) == {"epochs": 4, "lr": 5e-4, "hidden": 250, "layers": [3, 4]}
    df = fw.dataframe(dir=store_dir)
    assert df.loc[0, "lr"] == 5e-4 and df.loc[0, "hidden"] == 250


def test_config_flattens_nested_objects(store_dir):
    @dataclasses.dataclass
    class Opt:
        lr: float = 0.1
        betas: tuple = (0.9, 0.99)

    @dataclasses.dataclass
    class Cfg:
        name: str = "m"
        opt: Opt = dataclasses.field(default_factory=Opt)

    assert flatten_config(Cfg()) == {"name": "m", "opt.lr": 0.1, "opt.betas": (0.9, 0.99)}
    ns = argparse.Namespace(a=1, b={"c": 2})
    assert flatten_config(ns) == {"a": 1, "b.c": 2}
    fw.init(config={"model": {"depth": 4, "act": "relu"}, "lr": 0.01})
    fw.log("loss", 1.0)
    fw.finish()
    row = fw.dataframe(dir=store_dir).iloc[0]
    assert row["model.depth"] == 4 and row["model.act"] == "relu" and row["lr"] == 0.01


def test_config_from_omegaconf(store_dir):
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"a": {"b": 1}, "c": "${a.b}"})
    assert flatten_config(cfg) == {"a.b": 1, "c": 1}
