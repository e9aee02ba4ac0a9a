"""Partial pull: `--runs FILTER` writes only the runs it selects, `--no-media` leaves media
for later, and a pull's provenance is one record file however many runs it brings."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli.remote import pull_command
from flowillower.errors import InvalidRunRefError
from flowillower.gitops.pullselect import RunSelection
from flowillower.gitops.refs import INCOMING_PREFIX, list_refs
from flowillower.gitops.sync import pull, push
from flowillower.queries.filters import parse_filter
from flowillower.store.catalog import Store
from flowillower.store.provenance import local_dir, pulled_info, pulled_runs
from tests.conftest_git import bare_remote, isolate_home, make_run

RUNS = {  # run id: (project, user)
    "20261124-100000-aaaaaaaa": ("vision", "alice"),
    "20261124-100100-bbbbbbbb": ("vision", "bob"),
    "20261124-100200-cccccccc": ("speech", "alice"),
}


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A bare remote holding three runs of two projects and two authors (one with an
    artifact), pushed from a store on another machine."""
    isolate_home(monkeypatch, tmp_path)
    store = tmp_path / "alice" / ".flowillower"
    for run_id, (project, user) in RUNS.items():
        run = make_run(store, run_id, None, {"artifacts/w.bin": run_id.encode()})
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "project": project, "user": user,
                                                   "host": f"{user}-box"}))
        (run / "summary.json").write_text(json.dumps(
            {"status": "success", "args": {"lr": 0.1 if user == "alice" else 0.3}}))
    bare = bare_remote(tmp_path / "remote.git")
    assert push(store, str(bare))["pushed"] == 3
    return f"file://{bare}"


def _pulled(store) -> list[str]:
    return sorted(p.name for p in (store / "runs").iterdir())


@pytest.mark.parametrize(("runs", "expected"), [
    ("project == 'vision'", ["20261124-100000-aaaaaaaa", "20261124-100100-bbbbbbbb"]),
    ("host == 'alice-box' and lr < 0.2", ["20261124-100000-aaaaaaaa", "20261124-100200-cccccccc"]),
    ("lr > 0.2", ["20261124-100100-bbbbbbbb"]),
    ("20261124-100200-cccccccc", ["20261124-100200-cccccccc"]),
    ("bbbbbbbb,20261124-1000", ["20261124-100000-aaaaaaaa", "20261124-100100-bbbbbbbb"]),
])
def test_pull_runs_writes_only_the_selected_runs(remote, tmp_path, runs, expected):
    bob = tmp_path / "bob" / ".flowillower"
    got = pull(bob, remote, runs=RunSelection.parse(runs, parse_filter))
    assert _pulled(bob) == expected
    # full ids fetch only their refs: nothing else was there to leave out
    left = 0 if RunSelection.parse(runs, parse_filter).ids else 3 - len(expected)
    assert (got["runs_added"], got.get("runs_not_selected", 0)) == (len(expected), left)
    assert sorted(pulled_runs(bob)) == expected
    # A later plain pull brings the rest, from refs already fetched.
    rest = pull(bob, remote)
    assert rest["runs_added"] == 3 - len(expected) and _pulled(bob) == sorted(RUNS)


def test_pull_of_full_ids_fetches_only_their_refs(remote, tmp_path):
    bob = tmp_path / "bob" / ".flowillower"
    wanted = "20261124-100100-bbbbbbbb"
    pull(bob, remote, runs=RunSelection.parse([wanted]))
    assert list(list_refs(bob / "git", INCOMING_PREFIX)) == [INCOMING_PREFIX + wanted]


def test_a_path_is_not_a_run_selection():
    for bad in ("../x", "", "a/b", ["ok", ".."]):
        with pytest.raises(InvalidRunRefError):
            RunSelection.parse(bad, parse_filter)


def test_no_media_leaves_media_and_artifacts_until_a_plain_pull(remote, tmp_path):
    bob = tmp_path / "bob" / ".flowillower"
    got = pull(bob, remote, no_media=True)
    assert got["runs_added"] == 3 and got["media_left"] == 6  # an image + an artifact each
    run = bob / "runs" / "20261124-100000-aaaaaaaa"
    assert (run / "run.json").exists() and (run / "data.fwl").exists()
    assert not (run / "media").exists() and not (run / "artifacts").exists()
    assert pulled_info(bob, run.name)["media_left"] == 2
    # Nothing moved on the remote, yet a plain pull brings what was left out.
    again = pull(bob, remote)
    assert (again["runs_added"], again["runs_updated"], again["files_added"]) == (0, 3, 6)
    assert (run / "artifacts" / "w.bin").read_bytes() == run.name.encode()
    assert pulled_info(bob, run.name)["media_left"] == 0
    assert pulled_info(bob, run.name)["remote"] == remote  # the first pull's record stays
    assert pull(bob, remote)["files_added"] == 0


def test_one_record_file_per_pull_and_forgetting_a_run(remote, tmp_path):
    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, remote)
    files = sorted(p.name for p in (local_dir(bob) / "pulled").iterdir())
    assert len(files) == 1 and files[0].startswith("pull+")
    gone = "20261124-100000-aaaaaaaa"
    assert pulled_info(bob, gone)["author"] == "alice"
    Store(bob).delete(gone)
    assert pulled_info(bob, gone) is None
    assert pulled_info(bob, "20261124-100100-bbbbbbbb")["author"] == "bob"
    pull(bob, remote)  # pulled again: a teammate's run again
    assert pulled_info(bob, gone)["author"] == "alice"


def test_an_unreadable_record_line_still_counts_as_pulled(tmp_path):
    folder = local_dir(tmp_path) / "pulled"
    folder.mkdir(parents=True)
    (folder / "pull+1+2.jsonl").write_text("20261124-100000-aaaaaaaa\t{not json\n")
    assert pulled_info(tmp_path, "20261124-100000-aaaaaaaa")["error"]
    assert pulled_info(tmp_path, "20261124-100100-bbbbbbbb") is None


def test_cli_and_api_pull_with_runs_and_no_media(remote, tmp_path):
    bob = tmp_path / "bob" / ".flowillower"
    out = CliRunner().invoke(pull_command, [remote, "--runs", "project == 'speech'",
                                        "--no-media", "--dir", str(bob)])
    assert out.exit_code == 0, out.output
    assert "1 new run(s)" in out.output and "left 2 run(s)" in out.output
    assert "left 2 media/artifact file(s)" in out.output
    got = fw.pull(remote, runs=["aaaaaaaa"], dir=bob)
    assert got["runs_added"] == 1
    assert _pulled(bob) == ["20261124-100000-aaaaaaaa", "20261124-100200-cccccccc"]


# -- media fetched when a run is opened ----------------------------------------------
def test_fetching_a_runs_media_brings_that_run_only_and_only_media(remote, tmp_path):
    from flowillower.gitops.pullmedia import fetch_run_media

    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, remote, no_media=True)
    opened, other = "20261124-100000-aaaaaaaa", "20261124-100100-bbbbbbbb"
    got = fetch_run_media(bob, opened)
    assert (got["pulled"], got["files_added"], got["media_left"]) == (True, 2, 0)
    run = bob / "runs" / opened
    assert (run / "artifacts" / "w.bin").read_bytes() == opened.encode()
    assert len(list((run / "media" / "img").iterdir())) == 1
    assert not (bob / "runs" / other / "media").exists()  # another run: still on the remote
    assert pulled_info(bob, other)["media_left"] == 2
    assert fetch_run_media(bob, opened)["files_added"] == 0  # nothing left: no git at all
    with pytest.raises(ValueError):
        fetch_run_media(bob, "../alice")


def test_media_of_a_run_made_here_is_never_fetched(tmp_path):
    from flowillower.gitops.pullmedia import fetch_run_media

    store = tmp_path / ".flowillower"
    make_run(store, "20261124-100000-dddddddd", None)
    got = fetch_run_media(store, "20261124-100000-dddddddd")
    assert (got["pulled"], got["files_added"]) == (False, 0)


def test_an_unreachable_remote_is_named_when_media_is_fetched(remote, tmp_path):
    from flowillower.gitops.pullmedia import MediaFetchError, fetch_run_media

    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, remote, no_media=True)
    (tmp_path / "remote.git").rename(tmp_path / "moved.git")
    with pytest.raises(MediaFetchError, match="cannot be reached"):
        fetch_run_media(bob, "20261124-100000-aaaaaaaa")
    assert pulled_info(bob, "20261124-100000-aaaaaaaa")["media_left"] == 2


def test_fetching_media_writes_nothing_else_of_the_run(remote, tmp_path):
    from flowillower.gitops.pullmedia import fetch_run_media

    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, remote, no_media=True)
    run_id = "20261124-100000-aaaaaaaa"
    alice = tmp_path / "alice" / ".flowillower"
    (alice / "runs" / run_id / "notes").mkdir()
    (alice / "runs" / run_id / "notes" / "n.json").write_text('{"notes": "later"}')
    push(alice, remote)  # the run moved on the remote: a note besides its media
    assert fetch_run_media(bob, run_id)["files_added"] == 2
    assert not (bob / "runs" / run_id / "notes").exists()
    got = pull(bob, remote)  # the note comes with a pull, the other runs' media too
    assert (got["files_added"], got["refused"]) == (5, {}), got
    assert (bob / "runs" / run_id / "notes" / "n.json").read_text() == '{"notes": "later"}'


def test_a_pull_killed_after_a_run_arrived_leaves_it_a_teammates(remote, tmp_path,
                                                                  monkeypatch):
    import os

    from flowillower.store.provenance import is_pulled

    real = os.rename

    def rename_then_die(src, dst):
        real(src, dst)
        if os.path.basename(os.path.dirname(dst)) == "runs":
            raise KeyboardInterrupt  # killed right after the first run appeared in runs/

    monkeypatch.setattr("flowillower.gitops.pullwrite.os.rename", rename_then_die)
    bob = tmp_path / "bob" / ".flowillower"
    with pytest.raises(KeyboardInterrupt):
        pull(bob, remote)
    monkeypatch.undo()
    arrived = _pulled(bob)
    assert len(arrived) == 1 and is_pulled(bob, arrived[0])


def test_many_pull_record_files_are_merged_into_one(tmp_path):
    from flowillower.store.provenance import compact_pulled, forget_run, mark_pulled_many

    ids = [f"20261124-100000-{i:08x}" for i in range(20)]
    for run_id in ids:  # twenty pulls of one run each
        mark_pulled_many(tmp_path, [{"run": run_id, "remote": "origin", "author": "a"}])
    mark_pulled_many(tmp_path, [{"run": ids[0], "remote": "other", "author": "b"}])
    forget_run(tmp_path, ids[1])
    before = {run_id: pulled_info(tmp_path, run_id) for run_id in ids}
    assert before[ids[1]] is None and before[ids[0]]["author"] == "a"  # first pull wins
    assert compact_pulled(tmp_path)
    assert len(list((local_dir(tmp_path) / "pulled").iterdir())) == 1
    assert {run_id: pulled_info(tmp_path, run_id) for run_id in ids} == before
    assert not compact_pulled(tmp_path)


def test_the_fetched_media_route_is_an_edit_for_one_real_run(remote, tmp_path):
    import warnings

    from flowillower.server.app import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    bob = tmp_path / "bob" / ".flowillower"
    pull(bob, remote, no_media=True)
    run_id = "20261124-100200-cccccccc"
    path = f"/api/runs/{run_id}/fetched-media"
    with TestClient(create_app(bob), base_url="http://127.0.0.1:8686") as client:
        assert client.put(path).status_code == 403  # no CSRF header: refused, nothing done
        assert not (bob / "runs" / run_id / "media").exists()
        write = {"X-Flowillower-Token": ""}
        for bad in ("..", "..%2F..%2Fetc", "nope"):
            assert client.put(f"/api/runs/{bad}/fetched-media", headers=write
                              ).status_code in (400, 404, 405)  # 405: ".." folded away
        got = client.put(path, headers=write)
        assert got.status_code == 200 and got.json()["files_added"] == 2
        assert (bob / "runs" / run_id / "artifacts" / "w.bin").read_bytes() == run_id.encode()
