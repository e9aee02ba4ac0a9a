"""Filter names resolve against the runs being filtered, and say how: an arg, a metric's
last value or statistic, a tag or a run field; an unknown name gets "did you mean"
spellings and an ambiguous one (arg and metric of one name) the two explicit spellings.
Before this, `lr < 0.002` on the demo matched the *metric* `lr` in one run and the arg in
another, and `learning_rate < 0.002` matched nothing without a word."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
from click.testing import CliRunner

from flowillower.cli import main
from flowillower.errors import FilterSyntaxError
from flowillower.queries.filters import (
    FilterNameError,
    compile_filter,
    example_filter,
    parse_filter,
)
from flowillower.queries.names import Vocabulary, resolve_name
from flowillower.run import Run

# Shaped like the demo: a dotted arg, a metric `lr` (the schedule's last value, tiny).
DEMO = [
    {"id": "r1", "name": "lr-0.001", "status": "success", "tags": ["paper"], "notes": "",
     "args": {"training.learning_rate": 0.001, "model.layers": 3},
     "metrics": {"lr": {"last": 5e-7}, "val/loss": {"last": 0.4, "min": 0.3}}},
    {"id": "r2", "name": "lr-0.003", "status": "failed", "tags": [], "notes": "",
     "args": {"training.learning_rate": 0.003, "model.layers": 3},
     "metrics": {"lr": {"last": 4e-7}, "val/loss": {"last": 0.6, "min": 0.5}}},
]


def matched(text: str, rows: list[dict] = DEMO) -> list[str]:
    compiled = compile_filter(text, rows)
    return [r["id"] for r in rows if compiled.predicate(r)]


def test_bare_suffix_resolves_to_the_one_dotted_arg_and_says_so():
    assert matched("learning_rate < 0.002") == ["r1"]
    compiled = compile_filter("learning_rate < 0.002", DEMO)
    assert compiled.describe() == [
        "`learning_rate` → `args.training.learning_rate` (arg)"]
    assert matched("layers == 3 and learning_rate > 0.002") == ["r2"]


def test_demo_lr_is_ambiguous_between_the_metric_and_the_learning_rate_arg():
    # The demo's bug: `lr < 0.002` silently read the metric lr (~5e-7) and kept both runs.
    assert [r["id"] for r in DEMO if parse_filter("lr < 0.002")(r)] == ["r1", "r2"]
    with pytest.raises(FilterNameError) as err:
        compile_filter("lr < 0.002", DEMO)
    assert ("ambiguous name `lr`: write `metrics.lr` or `args.training.learning_rate`"
            in str(err.value))
    assert matched("metrics.lr < 0.002") == ["r1", "r2"]
    assert matched("args.training.learning_rate < 0.002") == ["r1"]
    rows = [{"args": {"batch_size": 32}, "metrics": {}}]  # no metric bs: resolves
    use = resolve_name("bs", Vocabulary.from_rows(rows))
    assert (use.kind, use.key) == ("arg", "batch_size")


def test_metric_name_reads_its_last_value_and_stats():
    rows = [dict(r, args={}) for r in DEMO]  # no arg looks like lr now
    assert matched("lr < 0.002", rows) == ["r1", "r2"]
    assert compile_filter("lr < 1", rows).uses[0].spelling == "metrics.lr"
    use = compile_filter("`val/loss.min` < 0.35", DEMO).uses[0]
    assert (use.kind, use.key, use.stat) == ("metric", "val/loss", "min")
    assert matched("`val/loss.min` < 0.35") == ["r1"]
    assert matched("loss < 0.5") == ["r1"]  # last component of one metric


def test_arg_and_metric_sharing_a_name_is_an_error_listing_both_spellings():
    rows = [dict(DEMO[0], args={**DEMO[0]["args"], "lr": 0.1}), DEMO[1]]
    with pytest.raises(FilterNameError) as err:
        compile_filter("lr < 0.002", rows)
    assert "ambiguous name `lr`: write `args.lr` or `metrics.lr`" in str(err.value)
    assert isinstance(err.value, FilterSyntaxError)  # the UI's 400 and the CLI's exit 1
    assert matched("args.lr > 0", rows) == ["r1"]
    assert matched("metrics.lr < 0.002", rows) == ["r1", "r2"]
    # The old per-run lookup silently read the arg in r1 and the metric in r2.
    assert [r["id"] for r in rows if parse_filter("lr < 0.002")(r)] == ["r2"]


def test_unknown_name_suggests_close_spellings():
    with pytest.raises(FilterNameError) as err:
        compile_filter("learning_rat < 0.002", DEMO)
    assert "unknown name `learning_rat`; did you mean `args.training.learning_rate`" in str(
        err.value)
    with pytest.raises(FilterNameError, match="unknown name `momentum`"):
        compile_filter("momentum > 0", DEMO)
    with pytest.raises(FilterNameError, match="did you mean `metrics.val/loss`"):
        compile_filter("metrics.val_loss < 1", DEMO)
    # rows carry no `best`: an error, not a comparison that silently matches nothing
    with pytest.raises(FilterNameError, match="unknown name `loss.best`"):
        compile_filter("loss.best < 1", DEMO)


def test_two_args_ending_alike_are_ambiguous():
    rows = [{"args": {"encoder.dropout": 0.1, "decoder.dropout": 0.2}, "metrics": {}}]
    use = resolve_name("dropout", Vocabulary.from_rows(rows))
    assert use.kind == "ambiguous"
    assert use.choices == ["args.decoder.dropout", "args.encoder.dropout"]
    assert resolve_name("encoder.dropout", Vocabulary.from_rows(rows)).key == "encoder.dropout"


def test_fields_tags_text_and_fitlog_still_work():
    assert matched("status == 'finished'") == ["r1"]
    assert compile_filter("status == 'failed'", DEMO).uses[0].kind == "field"
    assert matched("paper and layers == 3") == ["r1"]  # a bare tag name is a tag test
    assert matched("not tag.paper") == ["r2"]
    assert matched("lr-0.003") == ["r2"]  # plain words: no names to resolve
    assert matched("${'hyper-learning_rate':'<0.002'}$") == ["r1"]
    assert matched("${'metric-val-loss':'<0.5'}$") == ["r1"]
    with pytest.raises(FilterNameError, match="unknown name `hyper-nope`"):
        compile_filter("${'hyper-nope':'<0.002'}$", DEMO)


def test_example_filter_is_a_working_filter_on_these_runs():
    example = example_filter(DEMO)
    assert example == "learning_rate <= 0.001"
    assert matched(example) == ["r1"]
    rows = [{"id": "a", "args": {"opt": "adam", "seed": 1}, "metrics": {}},
            {"id": "b", "args": {"opt": "sgd", "seed": 1}, "metrics": {}}]
    assert example_filter(rows) == "opt == 'adam'"
    assert example_filter(rows[:1]) is None  # nothing varies: no example to show


# -- the CLI ---------------------------------------------------------------------------
@pytest.fixture
def demo_store(tmp_path):
    root = tmp_path / ".flowillower"
    for lr in (0.001, 0.003):
        run = Run("demo", f"lr-{lr}", dir=root, snapshot=False)
        run.record_args({"training.learning_rate": lr, "model.layers": 3})
        for step in range(3):
            run.log_metrics({"lr": lr * 1e-4 / (step + 1)}, step)
        run.finish()
    return root


def ls(store, *argv: str):
    return CliRunner().invoke(main, ["ls", *argv, "--dir", str(store)],
                              prog_name="flowillower")


def test_cli_ls_prints_how_names_resolved(demo_store):
    result = ls(demo_store, "learning_rate < 0.002")
    assert result.exit_code == 0, result.output
    assert "filter: `learning_rate` → `args.training.learning_rate` (arg)" in result.stderr
    assert "lr-0.001" in result.stdout and "lr-0.003" not in result.stdout
    as_json = ls(demo_store, "learning_rate < 0.002", "--json")
    assert [r["name"] for r in json.loads(as_json.stdout)] == ["lr-0.001"]


def test_cli_ls_rejects_unknown_and_ambiguous_names(demo_store):
    result = ls(demo_store, "learning_rat < 0.002")
    assert result.exit_code == 1
    assert "did you mean `args.training.learning_rate`" in result.output
    result = ls(demo_store, "lr < 0.002")  # the demo's own shape
    assert result.exit_code == 1
    assert "write `metrics.lr` or `args.training.learning_rate`" in result.output
    run = Run("demo", "with-arg-lr", dir=demo_store, snapshot=False)
    run.record_args({"lr": 0.1})
    run.finish()
    result = ls(demo_store, "lr < 0.002")
    assert result.exit_code == 1
    assert "write `args.lr` or `metrics.lr`" in result.output
    result = ls(demo_store, "args.lr < 0.5")
    assert result.exit_code == 0 and "with-arg-lr" in result.stdout


# -- the static export's port (static/js/filter.js) gives the same answers -----------------
PARITY = ["learning_rate < 0.002", "lr < 0.002", "metrics.lr < 0.002", "learning_rat < 0.002",
          "`val/loss.min` < 0.35", "loss < 0.5", "not tag.paper", "status == 'finished'",
          "${'hyper-learning_rate':'<0.002'}$", "lr-0.003", "momentum > 0",
          "loss.best < 1", "layers == 3 and learning_rate > 0.002"]


def _python_answer(text: str) -> dict:
    try:
        compiled = compile_filter(text, DEMO)
    except FilterNameError as exc:
        return {"error": str(exc)}
    return {"ids": [r["id"] for r in DEMO if compiled.predicate(r)],
            "names": compiled.describe()}


def test_javascript_port_resolves_names_the_same_way(tmp_path):
    import shutil
    import subprocess
    from pathlib import Path

    import flowillower

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    js_dir = Path(flowillower.__file__).parent / "server" / "static" / "js"
    for name in ("filter.js", "when.js"):  # filter.js imports when.js
        shutil.copy(js_dir / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')  # node: .js are ES modules
    script = tmp_path / "run.js"
    script.write_text(
        "import { compileFilter, exampleFilter } from './filter.js';\n"
        f"const rows = {json.dumps(DEMO)}, texts = {json.dumps(PARITY)};\n"
        "const out = texts.map((t) => { try { const c = compileFilter(t, rows);\n"
        "  return { ids: rows.filter(c.pred).map((r) => r.id),\n"
        "           names: c.names.map((n) => n.message) }; }\n"
        "  catch (e) { return { error: e.message }; } });\n"
        "console.log(JSON.stringify({ out, example: exampleFilter(rows) }));\n")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                          check=True)
    answer = json.loads(done.stdout)
    assert answer["out"] == [_python_answer(t) for t in PARITY]
    assert answer["example"] == example_filter(DEMO)


# -- who and when: author / origin fields and dates written as text, in both engines -------
# Under a zone that is not UTC (Newfoundland: -3:30 / -2:30, summer time until 1 Nov 2026
# 02:00), so a date read as UTC instead of local time gives other runs.
ZONE = "America/St_Johns"


def _utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc).timestamp()


WHO = [  # w1: 31 Oct 22:30 local; w2: 1 Nov 01:30 local; w3: 1 Jul 09:30 local
    {"id": "w1", "author": "alice", "host": "a-box", "origin": None, "status": "success",
     "created": _utc("2026-11-01T01:00"), "ended": _utc("2026-11-01T02:00"), "tags": [],
     "args": {}, "metrics": {}},
    {"id": "w2", "author": "bob", "host": "b-box", "origin": "team", "status": "success",
     "created": _utc("2026-11-01T04:00"), "ended": _utc("2026-12-15T12:00"), "tags": [],
     "args": {}, "metrics": {}},
    {"id": "w3", "author": "bob", "host": "b-box", "origin": "/srv/team.git",
     "status": "running", "created": _utc("2026-07-01T12:00"), "ended": None, "tags": [],
     "args": {}, "metrics": {}},
]
# filter -> the runs it keeps in ZONE (an error: a string the message starts with)
WHO_CASES = {
    "author == 'bob'": ["w2", "w3"],
    "author in ['alice', 'carol']": ["w1"],
    "origin == 'team'": ["w2"],
    "origin != 'team'": ["w1", "w3"],
    "not origin": ["w1"],
    "origin == '/srv/team.git' and status == 'running'": ["w3"],
    "created > '2026-11-01'": ["w2"],  # date only: local midnight (UTC's would add w1)
    "created < '2026-10-31 22:31'": ["w1", "w3"],  # no zone: local (UTC's: w3 only)
    "created < '2026-11-01 01:30:00.5'": ["w1", "w2", "w3"],  # (UTC's: w1, w3)
    "created >= '20261101'": ["w2"],
    "created == '2026-11-01T04:00:00Z'": ["w2"],
    "created == '2026-11-01T01:30-02:30'": ["w2"],
    "created < '2026-11-01T01:00:00+0000'": ["w3"],
    "'2026-11-01' < created": ["w2"],
    "created > '2026-07-01T09:29' and created < '2026-07-01 09:31'": ["w3"],  # summer time
    "ended > '2026-12-01'": ["w2"],
    "ended != '2026-12-01'": ["w1", "w2", "w3"],
    "created > 'yesterday'": [],  # not a date: no match, as a text never orders with a time
    "created > '2026-13-01'": [],
    "created > '1700000000'": [],
    "created > 1785000000": ["w1", "w2"],
    "created < ended": ["w1", "w2"],
    "${'created':'>2026-11-01', 'author':'bob'}$": ["w2"],
    "orign == 'team'": "unknown name `orign`; did you mean `origin`",
    "athor == 'bob'": "unknown name `athor`; did you mean `author`",
}


def _engines_in_zone(tmp_path) -> tuple[list, list, str]:
    """Each filter of WHO_CASES run by the Python engine and by filter.js, both in ZONE
    (separate processes: the zone is the process's); plus node's idea of the offset."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import flowillower

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    env = {**os.environ, "TZ": ZONE}
    texts = list(WHO_CASES)
    py = subprocess.run(
        [sys.executable, "-c",
         "import json, sys\n"
         "from flowillower.queries.filters import FilterNameError, compile_filter\n"
         "rows, texts = json.loads(sys.stdin.read())\n"
         "def one(t):\n"
         "    try:\n"
         "        c = compile_filter(t, rows)\n"
         "    except FilterNameError as e:\n"
         "        return {'error': str(e)}\n"
         "    return {'ids': [r['id'] for r in rows if c.predicate(r)]}\n"
         "print(json.dumps([one(t) for t in texts]))\n"],
        input=json.dumps([WHO, texts]), capture_output=True, text=True, env=env,
        timeout=120, check=True)
    js_dir = Path(flowillower.__file__).parent / "server" / "static" / "js"
    for name in ("filter.js", "when.js"):
        shutil.copy(js_dir / name, tmp_path / name)
    (tmp_path / "package.json").write_text('{"type": "module"}')  # node: .js are ES modules
    script = tmp_path / "who.js"
    script.write_text(
        "import { compileFilter } from './filter.js';\n"
        f"const rows = {json.dumps(WHO)}, texts = {json.dumps(texts)};\n"
        "const out = texts.map((t) => { try { const c = compileFilter(t, rows);\n"
        "  return { ids: rows.filter(c.pred).map((r) => r.id) }; }\n"
        "  catch (e) { return { error: e.message }; } });\n"
        "console.log(JSON.stringify({ out, offset: new Date(2026, 9, 31).getTimezoneOffset() }));\n")
    done = subprocess.run([node, str(script)], capture_output=True, text=True, timeout=60,
                          env=env, check=True)
    answer = json.loads(done.stdout)
    return json.loads(py.stdout), answer["out"], str(answer["offset"])


def _check(answers: list, engine: str) -> None:
    for text, got in zip(WHO_CASES, answers):
        want = WHO_CASES[text]
        if isinstance(want, str):
            assert got.get("error", "").startswith(want), (engine, text, got)
        else:
            assert got == {"ids": want}, (engine, text, got)


def test_author_origin_and_dates_filter_the_same_in_python_and_javascript(tmp_path):
    python, javascript, offset = _engines_in_zone(tmp_path)
    assert offset == "150"  # node ran in ZONE (2:30 behind UTC on 31 Oct 2026)
    _check(python, "python")
    _check(javascript, "filter.js")
    assert javascript == python


def test_a_hyphen_inside_quotes_stays_text():
    """Dashed names (`my-arg > 1`) are protected before parsing, but never inside a quoted
    string: a remote like `git@host:team/ml-runs.git` must compare as written."""
    from flowillower.queries.filters import parse_filter

    row = {"name": "a b-c", "origin": "git@host:team/ml-runs.git", "args": {"my-arg": 2}}
    assert parse_filter("name == 'a b-c'")(row)
    assert parse_filter("origin == 'git@host:team/ml-runs.git' and my-arg > 1")(row)
    assert parse_filter('name == "a b-c" or name == \'it\\\'s-x\'')(row)
    assert not parse_filter("origin == 'git@host:team/ml-runz.git'")(row)
