"""Lineage: a three-step pipeline (featurise -> train -> evaluate, real scripts in a git
repository) linked by `fw.use_artifact` shows its DAG in `flowillower show --json`, the
API and the run page; `fw.best` picks runs; hostile references and records are refused."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main
from flowillower.errors import InvalidRunRefError, RunNotFoundError
from flowillower.gitops.sync import pull, push
from flowillower.lineage import ArtifactNotFoundError, graph, read_inputs
from flowillower.run import Run
from flowillower.store.catalog import Store
from tests.conftest import fill_disk, ui_server, wait_for
from tests.conftest_git import bare_remote, git, isolate_home

FEATURISE = """
import pathlib, flowillower as fw
fw.init(project="pipe", name="featurise")
pathlib.Path("features.csv").write_text("x,y\\n1,2\\n3,4\\n")
fw.log_artifact("features", "features.csv")
fw.log("rows", 2)
fw.finish()
"""
TRAIN = """
import pathlib, sys, flowillower as fw
fw.init(project="pipe", name="train")
rows = pathlib.Path(fw.use_artifact(sys.argv[1], "features")).read_text().splitlines()
pathlib.Path("model.txt").write_text(f"weights from {len(rows) - 1} rows")
fw.log("loss", 0.25)
fw.log_artifact("model", "model.txt")
fw.finish()
"""
EVALUATE = """
import pathlib, flowillower as fw
fw.init(project="pipe", name="evaluate")
model = pathlib.Path(fw.use_artifact("registry:velocity-net@prod", "model")).read_text()
fw.log("accuracy", 0.9 if model == "weights from 2 rows" else 0.0)
fw.finish()
"""


def _script(repo: Path, name: str, source: str, *argv: str) -> str:
    path = repo / name
    path.write_text(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, str(path), *argv], cwd=repo, capture_output=True,
                          text=True, timeout=180, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    """featurise -> train -> evaluate in a temp git repo; returns (store, ids by name)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    monkeypatch.delenv("FLOWILLOWER_DIR")  # the store is found from the repo, as for users
    _script(repo, "featurise.py", FEATURISE)
    _script(repo, "train.py", TRAIN, "featurise")  # by run name
    store = Store(repo / ".flowillower")
    ids = {r["name"]: r["id"] for r in store.runs()}
    fw.register(ids["train"], "velocity-net", alias="prod", dir=store.root)
    _script(repo, "evaluate.py", EVALUATE)
    ids = {r["name"]: r["id"] for r in store.runs()}
    return store, ids


def test_pipeline_dag_in_show_json_and_values_flow(pipeline):
    store, ids = pipeline
    # The artifact's bytes reached each step: evaluate scored the model train wrote.
    evaluate = next(r for r in store.runs() if r["name"] == "evaluate")
    assert evaluate["metrics"]["accuracy"]["last"] == 0.9
    out = CliRunner().invoke(main, ["show", ids["train"], "--json", "--dir", str(store.root)])
    assert out.exit_code == 0, out.output
    lineage = json.loads(out.output)["lineage"]
    assert [(i["run"], i["artifact"]) for i in lineage["inputs"]] == \
        [(ids["featurise"], "features")]
    assert [(c["run"], c["artifact"], c["via"]) for c in lineage["consumers"]] == \
        [(ids["evaluate"], "model", "registry:velocity-net@prod")]
    assert {n["id"]: n["name"] for n in lineage["nodes"]} == {v: k for k, v in ids.items()}
    assert [(e["from"], e["to"], e["artifact"]) for e in lineage["edges"]] == sorted([
        (ids["featurise"], ids["train"], "features"), (ids["train"], ids["evaluate"], "model")])
    # From either end the whole chain is reached, transitively.
    far = graph(store, ids["evaluate"])
    assert {n["id"] for n in far["nodes"]} == set(ids.values())
    assert far["consumers"] == [] and len(far["edges"]) == 2
    text = CliRunner().invoke(main, ["show", ids["train"], "--dir", str(store.root)]).output
    assert f"<- {ids['featurise']}  features" in text
    assert f"-> {ids['evaluate']}  model  (registry:velocity-net@prod)" in text


def test_run_page_draws_the_dag(pipeline, page):
    store, ids = pipeline
    other = Run("pipe", "alone", dir=store.root, snapshot=False)
    other.log_metrics({"x": 1.0}, 0)
    other.finish()
    # A teammate's hostile record: markup in the artifact name is shown as text.
    hostile = "<img src=x onerror=alert(1)>"
    (store.root / "runs" / ids["evaluate"] / "inputs" / "20990101T000000.000000-abcdef.json"
     ).write_text(json.dumps({"run": ids["featurise"], "artifact": hostile}))
    console: list[str] = []
    page.on("console", lambda msg: console.append(msg.text))
    with ui_server(store.root) as base:
        page.goto(f"{base}#/run/{ids['train']}")
        card = page.locator("section.lineage-card")
        card.wait_for()
        assert "1 input, 1 consumer" in card.locator("h2").inner_text()
        nodes = card.locator("g.lineage-node")
        assert sorted(nodes.evaluate_all("els => els.map(e => e.dataset.id)")) == \
            sorted(ids.values())
        assert card.locator("g.lineage-node.current").get_attribute("data-id") == ids["train"]
        edges = card.locator("g.lineage-edge").evaluate_all(
            "els => els.map(e => [e.dataset.from, e.dataset.to, e.textContent])")
        assert sorted(edges) == sorted([[ids["featurise"], ids["train"], "features"],
                                        [ids["train"], ids["evaluate"],
                                         "model (velocity-net@prod)"]])
        # Every edge points right (the DAG is layered by depth).
        xs = {n: card.locator(f"g.lineage-node[data-id='{n}']").bounding_box()["x"]
              for n in ids.values()}
        assert xs[ids["featurise"]] < xs[ids["train"]] < xs[ids["evaluate"]]
        # Drawn in the theme's colours, under the page's CSP (no refused style).
        fill = card.locator("g.lineage-node.current rect").evaluate(
            "el => getComputedStyle(el).fill")
        assert fill.startswith("rgb") and fill != "rgb(0, 0, 0)"
        assert not [m for m in console if "Content Security Policy" in m]
        card.locator(f"g.lineage-node[data-id='{ids['evaluate']}']").click()
        page.wait_for_function(f"location.hash === '#/run/{ids['evaluate']}'")
        page.locator("section.lineage-card g.lineage-node.current").wait_for()
        labels = page.locator("section.lineage-card g.lineage-edge text").evaluate_all(
            "els => els.map(e => e.textContent)")
        assert hostile[:26] + "…" in labels  # cut to fit, as text
        assert page.locator("section.lineage-card img").count() == 0 and not page.dialogs
        # A run without lineage gets no card (its lineage answer has no edges).
        with page.expect_response(lambda r: r.url.endswith(f"/{other.id}/lineage")) as got:
            page.goto(f"{base}#/run/{other.id}")
        assert got.value.json()["edges"] == []
        page.wait_for_function("document.querySelector('h1.run-name')?.textContent === 'alone'")
        page.evaluate("() => new Promise((done) => setTimeout(done, 0))")  # the card's turn
        assert page.locator("section.lineage-card").count() == 0


def _artifact_run(root: Path, tmp_path: Path, name: str = "src") -> Run:
    (tmp_path / "a.txt").write_text("payload")
    run = Run("p", name, dir=root, snapshot=False)
    run.log_artifact("weights", tmp_path / "a.txt", step=3)
    run.log_metrics({"loss": 1.0}, 0)
    run.finish()
    return run


def test_use_artifact_records_once_per_use_and_debug_records_nothing(store_dir, tmp_path):
    src = _artifact_run(store_dir, tmp_path)
    fw.init(project="p", name="consumer", dir=store_dir)
    path = fw.use_artifact(src.id, "weights")
    assert Path(path).read_text() == "payload"
    assert Path(path).resolve().is_relative_to((store_dir / "runs" / src.id).resolve())
    fw.use_artifact(src.id[:15], "weights", step=3)  # prefix, explicit step
    consumer = fw.current_run()
    fw.finish()
    assert len(list((consumer.dir / "inputs").iterdir())) == 2  # one file per use
    assert read_inputs(consumer.dir) == [
        {"run": src.id, "artifact": "weights", "via": None,
         "time": read_inputs(consumer.dir)[0]["time"]}]
    with pytest.raises(ArtifactNotFoundError):
        fw.use_artifact(src.id, "weights", step=4, dir=store_dir)
    with pytest.raises(ArtifactNotFoundError):
        fw.use_artifact(src.id, "nothing", dir=store_dir)
    fw.debug(True)  # a dry run of a script: the path, and no run anywhere
    try:
        before = sorted(p.name for p in (store_dir / "runs").iterdir())
        assert Path(fw.use_artifact(src.id, "weights", dir=store_dir)).read_text() == "payload"
        assert sorted(p.name for p in (store_dir / "runs").iterdir()) == before
    finally:
        fw.debug(False)


def test_use_artifact_by_filter_and_best(store_dir, tmp_path):
    for name, loss in (("alpha", 0.5), ("beta", 0.2), ("gamma", float("nan")), ("delta", 0.9)):
        run = Run("p", name, dir=store_dir, snapshot=False)
        run.record_args({"lr": {"alpha": 0.1, "beta": 0.01, "gamma": 0.001, "delta": 0.3}[name]})
        (tmp_path / f"{name}.txt").write_text(name)
        run.log_artifact("weights", tmp_path / f"{name}.txt", step=0)
        run.log_metrics({"loss": 1.0, "val/acc": 1 - loss}, 0)
        run.log_metrics({"loss": loss}, 1)
        run.finish()
    best = fw.best("loss", dir=store_dir)  # NaN never wins
    assert (best.name, best.value) == ("beta", 0.2)
    assert fw.best("loss", mode="max", of="last", dir=store_dir).name == "delta"
    assert fw.best("loss", runs="lr >= 0.1", dir=store_dir).name == "alpha"
    assert fw.best("loss", runs=["alpha", "delta"], of="last", dir=store_dir).name == "alpha"
    assert math.isclose(fw.best("loss", runs=["alpha", "delta"], dir=store_dir).value, 0.5)
    with pytest.raises(RunNotFoundError):
        fw.best("no_such_metric", dir=store_dir)
    # A filter text: the newest matching run holding the artifact.
    fw.init(project="p", name="user", dir=store_dir)
    assert Path(fw.use_artifact("lr < 0.05", "weights")).read_text() == "gamma"
    assert Path(fw.use_artifact(best, "weights")).read_text() == "beta"  # a row works too
    # Filters spell `val/acc` as `val-acc`; anything with a `/` is refused as a path.
    assert Path(fw.use_artifact("val-acc > 0.7", "weights")).read_text() == "beta"
    with pytest.raises(InvalidRunRefError):
        fw.use_artifact("val/acc > 0.7", "weights")


def test_hostile_references_and_records_are_refused(store_dir, tmp_path):
    src = _artifact_run(store_dir, tmp_path)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    fw.init(project="p", name="victim", dir=store_dir)
    for ref in ("../..", "../../etc", "/etc", "runs/../x", ".trash"):
        with pytest.raises(InvalidRunRefError):
            fw.use_artifact(ref, "weights")
    # A run folder that is a link to elsewhere is never followed.
    os.symlink(store_dir / "runs" / src.id, store_dir / "runs" / "linked")
    with pytest.raises(InvalidRunRefError):
        fw.use_artifact("linked", "weights")
    # An artifact folder swapped for a link leading out of the run is refused.
    art = next((store_dir / "runs" / src.id / "artifacts").iterdir())
    step = art / "3"
    os.rename(step, art / "old")
    os.symlink(tmp_path, step)
    with pytest.raises(InvalidRunRefError, match="outside"):
        fw.use_artifact(src.id, "weights")
    victim = fw.current_run()
    assert not (victim.dir / "inputs").exists()  # nothing refused was recorded
    # Input records written by a hostile teammate are data: bad ones are skipped.
    inputs = victim.dir / "inputs"
    inputs.mkdir(parents=True)
    stamp = "20260101T000000.000000"
    for i, doc in enumerate([{"run": "../../etc", "artifact": "x"}, {"run": "/etc", "artifact": 1},
                             {"run": src.id}, [1, 2], {"run": src.id, "artifact": "ok"}]):
        (inputs / f"{stamp}-00000{i}.json").write_text(json.dumps(doc))
    (inputs / "passwd.json").write_text(json.dumps({"run": src.id, "artifact": "named"}))
    os.symlink(outside, inputs / f"{stamp}-00000f.json")
    assert [(r["run"], r["artifact"]) for r in read_inputs(victim.dir)] == [(src.id, "ok")]
    fw.finish()
    assert [n["id"] for n in graph(Store(store_dir), src.id)["nodes"]] == \
        sorted([src.id, victim.id])


def test_guide_example_runs_as_written(store_dir, tmp_path, monkeypatch):
    """docs/guide.md "Lineage and the model registry": its example does what it says."""
    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    section = guide.split("## Lineage and the model registry", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```py\n(.*?)```", section, re.S)
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "guide.md lineage example", "exec"), {})
    assert out.getvalue() == "weights lr=0.01\n"
    store = Store(store_dir)
    ids = {r["name"]: r["id"] for r in store.runs()}
    assert fw.best("val_loss", dir=store_dir).id == ids["train-0.01"]
    assert [(i["run"], i["via"]) for i in graph(store, ids["evaluate"])["inputs"]] == \
        [(ids["train-0.01"], "registry:velocity-net@prod")]


def _pushed_pipeline(tmp_path, monkeypatch) -> tuple[Path, str, str]:
    """Alice's source run and a consumer of its artifact, pushed; Bob pulls both."""
    isolate_home(monkeypatch, tmp_path)
    alice = tmp_path / "alice" / ".flowillower"
    src = _artifact_run(alice, tmp_path)
    consumer = fw.init(project="p", name="consumer", dir=alice)
    fw.use_artifact(src.id, "weights")
    fw.finish()
    remote = bare_remote(tmp_path / "remote.git")
    push(alice, str(remote))
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, f"file://{remote}")
    return bob, src.id, consumer.id


def test_a_pulled_runs_artifact_is_used_from_the_pullers_store(tmp_path, monkeypatch):
    bob, src, _consumer = _pushed_pipeline(tmp_path, monkeypatch)
    path = Path(fw.use_artifact(src, "weights", dir=bob))
    assert path.read_text() == "payload"
    assert path.resolve().is_relative_to((bob / "runs" / src).resolve())


def test_lineage_travels_with_push_and_pull(tmp_path, monkeypatch):
    bob, src, consumer = _pushed_pipeline(tmp_path, monkeypatch)
    assert [(c["run"], c["artifact"]) for c in graph(Store(bob), src)["consumers"]] == \
        [(consumer, "weights")]


def test_a_full_disk_costs_the_record_not_the_script(tiny_disk, tmp_path):
    store = tiny_disk / ".flowillower"
    src = _artifact_run(store, tmp_path)
    run = fw.init(project="p", name="consumer", dir=store, snapshot=False)
    fw.log("x", 1.0)  # the run is on disk
    fw.flush()
    # run.json is completed by a set-up thread: let it finish, so only the record is left
    wait_for(lambda: not any(t.name == "flowillower-setup" for t in threading.enumerate()),
             timeout=60, what="the run's set-up thread")
    fill_disk(tiny_disk)
    with pytest.warns(UserWarning, match="could not record"):
        path = fw.use_artifact(src.id, "weights")
    assert Path(path).read_text() == "payload"
    inputs = run.dir / "inputs"
    assert not inputs.exists() or list(inputs.iterdir()) == []  # no half-written record
    (tiny_disk / "ballast").unlink()
    fw.use_artifact(src.id, "weights")  # room again: recorded
    assert [r["run"] for r in read_inputs(run.dir)] == [src.id]
