"""Who and when (issue 17 item 6): a run's author, host and origin (the remote a pulled run
came from) are in the index; `ls` filters and groups by them and by date, `pull --runs`
selects by author, the UI shows them; hostile values from a teammate's push are shown as
text, cut short, and never break a listing.

The team is real: alice's runs (and one hostile run) pushed to a bare remote, bob's own
runs logged through the API, then `pull` into bob's store.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main as cli
from flowillower.gitops.pullselect import RunSelection
from flowillower.gitops.sync import pull, push
from flowillower.queries.filters import parse_filter
from flowillower.store.catalog import Store
from flowillower.store.provenance import forget_run, mark_pulled, pulled_info
from tests.conftest import require_browser, ui_server, wait_for
from tests.conftest_git import bare_remote, isolate_home, make_run

DAY = 86400.0
T0 = dt.datetime(2026, 11, 2, 12, 0).timestamp()  # local time, as `ls` shows times
ALICE = {  # run id: (created, host)
    "20261102-120000-aaaaaaaa": (T0, "alice-box"),
    "20261030-120000-bbbbbbbb": (T0 - 3 * DAY, "alice-gpu"),
}
HOSTILE_ID = "20261101-120000-eeeeeeee"
HOSTILE_AUTHOR = "<b>mallory</b>\x1b[2J\n\u202e" + "m" * (10 * 2**20)  # 10 MB, escapes, HTML


def _alice_run(store, run_id, created, user, host):
    run = make_run(store, run_id, None)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "name": f"alice-{run_id[-2:]}",
                                              "created": created, "user": user,
                                              "host": host}))
    (run / "summary.json").write_text(json.dumps({"status": "success", "created": created,
                                                  "args": {"lr": 0.1}}))


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """bob's store: two runs of his own (logged here) and alice's three, pulled. Built
    once for the module; tests only read it (a rebuilt index says the same)."""
    tmp_path = tmp_path_factory.mktemp("team")
    with pytest.MonkeyPatch.context() as monkeypatch:
        isolate_home(monkeypatch, tmp_path)
        monkeypatch.chdir(tmp_path)
        alice = tmp_path / "alice" / ".flowillower"
        for run_id, (created, host) in ALICE.items():
            _alice_run(alice, run_id, created, "alice", host)
        _alice_run(alice, HOSTILE_ID, T0 - DAY, HOSTILE_AUTHOR, "box\x07\n<script>x</script>")
        remote = bare_remote(tmp_path / "remote.git")
        assert push(alice, str(remote))["pushed"] == 3
        monkeypatch.setenv("LOGNAME", "bob")  # what run.json's `user` records
        monkeypatch.setenv("USER", "bob")
        store = tmp_path / "project" / ".flowillower"
        for i in range(2):
            fw.init(project="p", name=f"bob-{i}", config={"lr": 0.3}, dir=str(store))
            fw.log_metrics({"loss": 1.0 / (i + 1)}, step=0)
            fw.finish()
        url = f"file://{remote}"
        assert pull(store, url)["runs_added"] == 3
    return {"store": store, "url": url, "remote": remote, "alice": alice}


def ls(store, *args):
    result = CliRunner().invoke(cli, ["ls", *args, "--dir", str(store)])
    return result


def ls_json(store, *args):
    result = ls(store, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def names(rows):
    return sorted(r["name"] for r in rows)


def test_ls_filters_by_author_host_origin_and_date(team):
    store = team["store"]
    assert names(ls_json(store, "author == 'alice'")) == ["alice-aa", "alice-bb"]
    assert names(ls_json(store, "author == 'bob'")) == ["bob-0", "bob-1"]
    assert names(ls_json(store, "host == 'alice-gpu'")) == ["alice-bb"]
    assert names(ls_json(store, "origin == None")) == ["bob-0", "bob-1"]
    pulled = ls_json(store, "origin != None")
    assert names(pulled) == ["alice-aa", "alice-bb", "alice-ee"]
    # origin is the remote each run was pulled from, as the pull recorded it
    assert {r["origin"] for r in pulled} == {pulled_info(store, HOSTILE_ID)["remote"]}
    assert team["url"].split("//", 1)[1] in pulled[0]["origin"]
    # dates as text, local time unless a zone is given; a bare date is its midnight
    assert names(ls_json(store, "created >= '2026-11-01' and created < '2026-11-02'")) \
        == ["alice-ee"]
    assert names(ls_json(store, "created < '2026-11-01' and author == 'alice'")) \
        == ["alice-bb"]
    utc = dt.datetime.fromtimestamp(T0, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    assert names(ls_json(store, f"created >= '{utc}' and origin != None")) == ["alice-aa"]
    assert names(ls_json(store, "${'author':'bob', 'created':'>2026-11-01'}$")) \
        == ["bob-0", "bob-1"]
    # the index keeps them: a rebuild from the folders says the same
    assert Store(store).index.rebuild() == 5
    assert names(ls_json(store, "author == 'alice' and origin != None")) == ["alice-aa",
                                                                             "alice-bb"]


def test_origin_follows_a_pull_record_written_after_indexing(tmp_path):
    store = tmp_path / "solo" / ".flowillower"
    run = fw.init(project="p", name="solo", dir=str(store), snapshot=False)
    fw.log_metrics({"loss": 1.0}, step=0)
    fw.finish()
    assert [r["origin"] for r in ls_json(store)] == [None]
    mark_pulled(store, run.dir.name, "team-remote", author="alice")
    assert [r["origin"] for r in ls_json(store)] == ["team-remote"]
    assert names(ls_json(store, "origin == 'team-remote'")) == ["solo"]
    forget_run(store, run.dir.name)  # its record gone: made here again
    assert [r["origin"] for r in ls_json(store)] == [None]


def test_unknown_names_suggest_the_new_fields(team):
    result = ls(team["store"], "autor == 'alice'")
    assert result.exit_code == 1
    assert "unknown name `autor`; did you mean `author`?" in result.output
    result = ls(team["store"], "orign == None")
    assert result.exit_code == 1 and "did you mean `origin`?" in result.output


def test_ls_group_by_counts_runs_per_value(team):
    store = team["store"]
    groups = {g["value"]: g for g in ls_json(store, "--group-by", "author")}
    assert {k: g["runs"] for k, g in groups.items() if k in ("alice", "bob")} \
        == {"alice": 2, "bob": 2}
    assert len(groups) == 3 and groups["bob"]["statuses"] == {"success": 2}
    assert groups["alice"]["first"] == T0 - 3 * DAY and groups["alice"]["last"] == T0
    by_origin = {g["value"]: g["runs"] for g in ls_json(store, "--group-by", "origin")}
    assert by_origin == {None: 2, pulled_info(store, HOSTILE_ID)["remote"]: 3}
    by_day = {g["value"]: g["runs"] for g in ls_json(store, "-g", "day", "origin != None")}
    assert by_day == {"2026-11-02": 1, "2026-11-01": 1, "2026-10-30": 1}
    # a filter first, then groups; the table form has one line per group
    result = ls(store, "--group-by", "host", "author == 'alice'")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["host", "runs", "success", "first", "start", "last", "start"]
    assert sorted(line.split()[:2] for line in lines[1:]) == [["alice-box", "1"],
                                                               ["alice-gpu", "1"]]
    assert "group: `host` → `host` (run field)" in result.stderr
    bad = ls(store, "--group-by", "autor")
    assert bad.exit_code == 1 and "did you mean `author`?" in bad.output


def test_ls_table_shows_who_when_it_tells_runs_apart(team):
    result = ls(team["store"])
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header[5:8] == ["author", "host", "origin"]
    mine = ls(team["store"], "origin == None")
    assert "author" not in mine.stdout.splitlines()[0].split()  # one author, one host


def test_pull_runs_by_author_writes_only_theirs(team, tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    carol = tmp_path / "carol" / ".flowillower"
    got = pull(carol, team["url"], runs=RunSelection.parse("author == 'alice'", parse_filter))
    assert got["runs_added"] == 2
    assert sorted(p.name for p in (carol / "runs").iterdir()) == sorted(ALICE)
    # pull indexed what it brought: the rows are there before any reader looked
    import sqlite3

    with sqlite3.connect(carol / "index.sqlite") as db:
        indexed = sorted(r[0] for r in db.execute("SELECT id FROM runs"))
    assert indexed == sorted(ALICE) and got["runs_indexed"] == 2
    dave = tmp_path / "dave" / ".flowillower"
    result = CliRunner().invoke(cli, ["pull", team["url"], "--runs",
                                      "author == 'alice' and created < '2026-11-01'",
                                      "--dir", str(dave)])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (dave / "runs").iterdir()] == ["20261030-120000-bbbbbbbb"]


def test_hostile_author_and_host_are_cut_and_shown_as_text(team):
    store = team["store"]
    row = next(r for r in Store(store).runs() if r["id"] == HOSTILE_ID)
    assert len(row["author"]) <= 120 and row["author"].endswith("…")
    assert row["author"].startswith("<b>mallory</b>\ufffd[2J\ufffd\ufffd")
    assert row["host"] == "box\ufffd\ufffd<script>x</script>"
    assert all(c.isprintable() for c in row["author"] + row["host"])
    # the index row stays small; every run is still listed, one line each
    result = ls(store)
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and len(result.stdout.splitlines()) == 6
    hostile = next(line for line in result.stdout.splitlines() if HOSTILE_ID in line)
    assert len(hostile) < 400
    # the group of that author is one group, its name cut the same way
    groups = ls_json(store, "-g", "author")
    assert row["author"] in {g["value"] for g in groups}
    shown = CliRunner().invoke(cli, ["show", HOSTILE_ID, "--dir", str(store)])
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert f"  author    {row['author']}   host {row['host']}" in shown.stdout.splitlines()
    assert f"  origin    pulled from {row['origin']}" in shown.stdout.splitlines()


def test_ls_does_not_import_other_commands_modules(team):
    code = ("import sys\nfrom flowillower.cli import main\n"
            f"main(['ls', '--dir', {str(team['store'])!r}], standalone_mode=False)\n"
            "heavy = [m for m in ('flowillower.cli.ui', 'flowillower.cli.replay', "
            "'flowillower.server', 'flowillower.hindsight.replay', 'rich') "
            "if m in sys.modules]\nprint('HEAVY', heavy)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "HEAVY []"
    help_text = CliRunner().invoke(cli, ["--help"]).output
    for name in ("ls", "ui", "replay", "export", "demo", "registry", "du"):
        assert f"\n  {name} " in help_text


def row_author(store):
    return next(r["author"] for r in Store(store).runs() if r["id"] == HOSTILE_ID)


def test_ui_shows_author_host_and_origin(team, page):
    require_browser()
    with ui_server(team["store"]) as url:
        page.goto(url)
        page.wait_for_selector("table.runs tr[data-id]")
        heads = page.locator("table.runs th").all_text_contents()
        assert any(h.startswith("author") for h in heads)
        assert any(h.startswith("origin") for h in heads)
        row = page.locator(f"tr[data-id='{HOSTILE_ID}']")
        cells = row.locator("td.who").all_text_contents()
        assert cells[0].startswith("<b>mallory</b>") and len(cells[0]) == 40
        assert page.locator("table.runs td b, table.runs td script").count() == 0
        bob = page.locator("tr[data-id]", has_text="bob-0").locator("td.who")
        assert bob.all_text_contents()[0] == "bob" and bob.all_text_contents()[2] == ""
        # grouping by author from the toolbar
        page.select_option("select[title='group rows by an arg']", value="author")
        wait_for(lambda: page.locator("table.runs th", has_text="group: author").count() == 1,
                 timeout=15, what="the author grouping")
        page.goto(f"{url}#/run/{HOSTILE_ID}")
        page.wait_for_selector(".who-origin", timeout=60_000)  # 10 MB of run.json first
        assert page.locator(".who-author").text_content().startswith("by <b>mallory</b>")
        assert page.locator(".who-origin").text_content().startswith("pulled from file://")
        assert page.locator("h1.run-name b").count() == 0
        env = page.locator(".card", has_text="Environment").locator("table.kv").first
        user = env.locator("tr", has_text="user").locator("td").nth(1).text_content()
        assert user == row_author(team["store"])  # the index's cut text, not 10 MB


def test_a_run_without_code_snapshot_still_has_an_author(tmp_path):
    """snapshot=False captures no environment; the login name is still recorded, so
    `author == ...` finds the run."""
    import getpass

    store = tmp_path / ".flowillower"
    run = fw.init(project="p", name="quick", dir=str(store), snapshot=False)
    fw.log("x", 1.0)
    fw.finish()
    meta = json.loads((run.dir / "run.json").read_text())
    assert meta["user"] == getpass.getuser()
    rows = Store(store).runs(parse_filter(f"author == '{getpass.getuser()}'"))
    assert [r["name"] for r in rows] == ["quick"]
