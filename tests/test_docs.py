"""The docs stay true: every public function and command is documented, and the guide's
Python examples run as written *and do what the text around them says* (each example has
a check below of what it logged, returned, printed or wrote)."""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import flowillower as fw
from flowillower import api
from flowillower.cli import main as cli_main
from flowillower.store.reader import RunReader

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))])


def _blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "docs" / doc).read_text(), re.S)


# Complete examples (the other docs' Python blocks are fragments: `loader`, `make_model`...).
EXAMPLES = [("guide.md", i, block) for i, block in enumerate(_blocks("guide.md"))] + [
    ("demo.md", i, block) for i, block in enumerate(_blocks("demo.md"))
    if block.startswith("import ")]


@pytest.mark.parametrize("name", [n for n in fw.__all__ if n not in ("Run", "FlowillowerError")])
def test_public_function_documented(name):
    assert f"fw.{name}" in DOCS, f"fw.{name} is not mentioned in README.md or docs/"


@pytest.mark.parametrize("command", sorted(cli_main.commands))
def test_cli_command_documented(command):
    assert f"flowillower {command}" in DOCS, f"`flowillower {command}` is not documented"


# -- what each example must have done ------------------------------------------------------
class Example:
    """What an example left behind: its variables, its output, the runs it wrote."""

    def __init__(self, namespace: dict[str, Any], out: str, cwd: Path, store: Path) -> None:
        self.ns, self.out, self.cwd, self.store = namespace, out, cwd, store

    def runs(self, store: Path | None = None) -> list[RunReader]:
        """The runs in `store` (the test's store by default), oldest first."""
        folder = (store or self.store) / "runs"
        dirs = sorted(folder.iterdir(), key=lambda p: RunReader(p).meta["created"]) \
            if folder.is_dir() else []
        return [RunReader(d) for d in dirs]

    def run(self, store: Path | None = None) -> RunReader:
        """The one run the example wrote."""
        (reader,) = self.runs(store)
        return reader


def _values(reader: RunReader, name: str) -> list[Any]:
    return reader.load([name]).series[name].values.tolist()


def check_init(ex: Example) -> None:
    run = ex.ns["run"]
    reader = ex.run()
    assert reader.dir == run.dir and run.dir.is_dir()
    assert ex.out == f"{run.id} {run.dir}\n"
    meta = reader.meta
    assert (meta["project"], meta["name"], meta["tags"], meta["notes"]) == (
        "demo", "baseline", ["paper"], "first try")
    series = reader.load().series
    assert series["loss"].values.tolist() == [0.5]
    assert series["model.depth"].role == "arg" and series["model.depth"].last() == 4
    assert series["lr"].role == "arg" and series["lr"].last() == 0.01
    assert reader.status == "success"


def check_log(ex: Example) -> None:
    assert ex.ns["total"] == 1.0  # fw.log returns the value it logged
    series = ex.run().load().series
    assert series["loss"].values.tolist() == [0.25, 0.2]
    assert series["loss"].step.tolist()[1] == 100
    assert (series["acc"].values.tolist(), series["acc"].step.tolist()) == ([0.91], [100])
    assert series["lr"].values.tolist() == [1e-3]
    assert series["sample_text"].last() == "a cat on a mat"


def check_args(ex: Example) -> None:
    assert ex.ns["lr"] == 1e-3 and ex.ns["layers"] == [128, 128]  # the defaults, no --kwargs
    series = ex.run().load().series
    assert {n: s.last() for n, s in series.items() if s.role == "arg"} == {
        "lr": 1e-3, "layers": [128, 128], "optimizer.name": "adam",
        "optimizer.betas": [0.9, 0.99]}


def check_loops(ex: Example) -> None:
    frame = fw.dataframe("loss", "val_acc", dir=ex.store)
    assert len(frame) == 300
    assert frame[["epoch", "step"]].values.tolist() == [[e, s] for e in range(3)
                                                        for s in range(100)]
    assert frame["loss"].tolist() == [1 / (1 + e * 100 + s) for e in range(3)
                                      for s in range(100)]
    assert frame.drop_duplicates("epoch")["val_acc"].tolist() == [0.8, 0.81, 0.8 + 2 / 100]
    acc = ex.run().load(["acc"]).series["acc"]
    assert acc.values.tolist() == [0.9, 0.9] and len(set(acc.ctx.tolist())) == 2


def check_media(ex: Example) -> None:
    reader = ex.run()
    series = reader.load().series
    images = series["samples"].values.tolist()
    assert [(i["$media"], i["width"], i["height"]) for i in images] == [("image", 32, 32)] * 3
    for image in images:
        assert (reader.dir / image["path"]).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    artifact = series["weights"].last()
    assert (reader.dir / artifact["path"]).read_bytes() == b"\0" * 1024
    assert (ex.cwd / "weights.bin").read_bytes() == b"\0" * 1024  # the user's file stays


def check_debug(ex: Example) -> None:
    reader = ex.run()
    assert _values(reader, "loss") == [0.5]  # the debug-mode value was not recorded
    assert reader.status == "success"


def check_model(ex: Example) -> None:
    import json

    reader = ex.run()
    graph = json.loads((reader.dir / "model" / "graph.json").read_text())
    assert [(n["type"], n["params"]) for n in graph["nodes"] if n["kind"] == "module"] == [
        ("Sequential", 4 * 16 + 16 + 16 + 1), ("Linear", 80), ("ReLU", 0), ("Linear", 17)]
    series = reader.load().series
    assert len(series["loss"].values) == 50
    assert all(math.isfinite(v) for v in series["loss"].values.tolist())
    assert series["act/0/mean"].step.tolist() == [0, 10, 20, 30, 40]  # every=10
    assert any(name.startswith("grad/") for name in series)


def _seed_runs(store_dir: Path) -> dict[float, str]:
    """Three finished runs to query: lr 0.001, 0.003 and 0.03, two epochs each."""
    ids = {}
    for lr in (0.001, 0.003, 0.03):
        run = fw.init(name=f"lr{lr}", dir=store_dir)
        fw.arg("lr", lr)
        for epoch in fw.loop("epoch", range(2)):
            fw.log("loss", lr * (2 - epoch))
            fw.log("val_acc", 0.5 + epoch / 10)
        fw.finish()
        ids[lr] = run.id
    return ids


def check_dataframe(ex: Example) -> None:
    ids = ex.ns["seeded"]
    df, best, sweep = ex.ns["df"], ex.ns["best"], ex.ns["sweep"]
    assert sorted(df.columns) == ["epoch", "loss", "lr", "run_id", "run_name", "val_acc"]
    assert len(df) == 6 and sorted(set(df["run_id"])) == sorted(ids.values())
    for lr, run_id in ids.items():
        rows = df[df["run_id"] == run_id]
        assert rows["loss"].tolist() == [lr * 2, lr * 1] and (rows["lr"] == lr).all()
    assert sorted(best["run_id"]) == sorted([ids[0.001], ids[0.003]])
    assert sorted(set(sweep["run_id"])) == sorted([ids[0.001], ids[0.003]])
    assert "loss" in sweep.columns and len(sweep) == 4


def check_query(ex: Example) -> None:
    result = ex.ns["_"]  # the example's last expression
    rows = [tuple(r) for r in (result.itertuples(index=False) if hasattr(result, "itertuples")
                               else result)]
    assert rows == [("lr0.001", 0.001), ("lr0.003", 0.003), ("lr0.03", 0.03)]


def check_fitlog(ex: Example) -> None:
    reader = ex.run(ex.cwd / "logs" / ".flowillower")  # set_log_dir("logs")
    series = reader.load().series
    assert series["loss"].values.tolist() == [1 / (s + 1) for s in range(10)]
    assert series["loss"].step.tolist() == list(range(10))
    assert series["dev-acc"].values.tolist() == [s / 10 for s in range(10)]
    assert {n: s.last() for n, s in series.items() if s.role == "arg"} == {
        "lr": 0.01, "layers": 2, "best-dev-acc": 0.9}
    assert reader.status == "success"
    assert not ex.runs()  # nothing went to the default store


def check_flow_matching(ex: Example) -> None:
    generated, target = ex.ns["generated"], ex.ns["target"]
    assert tuple(generated.shape) == (500, 2) and tuple(target.shape) == (2000, 2)
    assert sorted(ex.ns["frames"]) == [0, 0.5, 1]
    energy, chamfer = (float(v) for v in ex.out.splitlines()[0].split())
    assert math.isfinite(energy) and math.isfinite(chamfer) and chamfer > 0
    png = ex.ns["png"]
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert ex.out.splitlines()[1] == f"{len(png)} bytes of PNG"


# (a line that identifies the example, what must hold after it ran, set-up before it)
CHECKS: list[tuple[str, Callable[[Example], None], Callable[[Path], Any] | None]] = [
    ('name="baseline"', check_init, None),
    ('fw.log("sample_text"', check_log, None),
    ('fw.arg("layers"', check_args, None),
    ('with fw.iteration("epoch"', check_loops, None),
    ("fw.log_artifact(", check_media, None),
    ("fw.debug(True)", check_debug, None),
    ("fw.log_model(", check_model, None),
    ("fw.dataframe(", check_dataframe, _seed_runs),
    ("fw.query(", check_query, _seed_runs),
    ("fitlog.set_log_dir(", check_fitlog, None),
    ("flow_matching_loss(", check_flow_matching, None),
]


def _check_for(block: str):
    found = [c for c in CHECKS if c[0] in block]
    assert len(found) == 1, ("every docs example needs exactly one check in "
                             f"tests/test_docs.py; matched {[c[0] for c in found]}:\n{block}")
    return found[0]


def _with_last_value(block: str, where: str):
    """The example compiled so that a bare last expression's value lands in `_` (what a
    reader sees printed in a REPL)."""
    tree = ast.parse(block, where)
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = tree.body[-1]
        tree.body[-1] = ast.copy_location(
            ast.Assign(targets=[ast.Name("_", ast.Store())], value=last.value), last)
        ast.fix_missing_locations(tree)
    return compile(tree, where, "exec")


def test_every_check_matches_an_example():
    blocks = [block for _doc, _i, block in EXAMPLES]
    for marker, _check, _setup in CHECKS:
        assert sum(marker in b for b in blocks) == 1, marker


@pytest.mark.parametrize(("doc", "index", "block"), EXAMPLES,
                         ids=[f"{doc}-{i}" for doc, i, _ in EXAMPLES])
def test_docs_example_runs_and_does_what_it_says(doc, index, block, tmp_path, monkeypatch,
                                                 capsys, store_dir):
    for module in ("torch", "omegaconf", "pandas"):
        if re.search(rf"^\s*(import|from) {module}\b", block, re.M) or (
                module == "omegaconf" and "flow_matching" in block):
            pytest.importorskip(module)
    _marker, check, setup = _check_for(block)
    monkeypatch.chdir(tmp_path)
    seeded = setup(store_dir.parent) if setup else None
    capsys.readouterr()
    namespace: dict = {}
    exec(_with_last_value(block, f"{doc} example {index}"), namespace)
    if api._current is not None and api._current.status is None:
        api._current.finish()
    out = capsys.readouterr().out
    if seeded is not None:
        namespace["seeded"] = seeded
    check(Example(namespace, out, tmp_path, store_dir))
