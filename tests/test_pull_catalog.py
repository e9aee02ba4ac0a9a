"""`pull --runs FILTER` fetches only the matching runs, by the remote's run catalog
(`refs/flowillower/catalog`, kept by `push`), and never trusts it: real bare remotes,
the objects that arrived in the puller's store counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from flowillower.cli.remote import pull_command
from flowillower.gitops.catalog import CATALOG_REF, read_catalog, shard_of
from flowillower.gitops.fastimport import import_tree_commit
from flowillower.gitops.pullselect import RunSelection
from flowillower.gitops.refs import INCOMING_PREFIX, list_refs
from flowillower.gitops.snapshot import checkout_snapshot, take_snapshot
from flowillower.gitops.sync import pull, push
from flowillower.queries.filters import parse_filter
from tests.conftest import wait_for
from tests.conftest_git import (
    bare_remote,
    git,
    isolate_home,
    make_repo,
    make_run,
    record_file,
    store_ref,
)

REF = "refs/flowillower/runs/"
VISION = ["20261201-100000-aaaaaaa1", "20261201-100100-aaaaaaa2"]
SPEECH = ["20261201-100200-bbbbbbb1", "20261201-100300-bbbbbbb2",
          "20261201-100400-bbbbbbb3", "20261201-100500-bbbbbbb4"]
BLOB = 96 * 1024  # each run's own artifact: incompressible, so its arrival shows


def _set_project(run, project: str, status: str = "success") -> None:
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "project": project, "user": "alice"}))
    (run / "summary.json").write_text(json.dumps(
        {"status": status, "args": {"lr": 0.1}, "last": {"loss": 0.5}}))


def _add_runs(store, snap, runs: dict[str, str]) -> None:
    for run_id, project in runs.items():
        run = make_run(store, run_id, snap, {"artifacts/blob.bin": os.urandom(BLOB)})
        _set_project(run, project)


@pytest.fixture
def alice(tmp_path, monkeypatch):
    """Alice's store: two vision runs and four speech runs, each with its own 96 KB
    artifact, pushed to a bare remote. Returns (store, remote)."""
    isolate_home(monkeypatch, tmp_path)
    repo = make_repo(tmp_path, "dirty")
    store = repo / ".flowillower"
    snap = take_snapshot(repo, store / "git")
    _add_runs(store, snap, {**dict.fromkeys(VISION, "vision"), **dict.fromkeys(SPEECH, "speech")})
    remote = bare_remote(tmp_path / "remote.git")
    result = push(store, str(remote))
    assert result["pushed"] == 6 and result["catalog"]["error"] is None
    return store, remote


def _has(git_dir, sha: str) -> bool:
    return subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-e", sha],
                          capture_output=True).returncode == 0


def _artifact(store, run_id: str) -> str:
    return store_ref(store / "git", "rev-parse", f"{REF}{run_id}:artifacts/blob.bin")


def _pack_bytes(git_dir) -> int:
    return sum(p.stat().st_size for p in (git_dir / "objects").rglob("*") if p.is_file())


def _remote_catalog(remote):
    return read_catalog(remote, git(remote, "rev-parse", CATALOG_REF).strip())


def _vision(store, remote, **kwargs):
    return pull(store, f"file://{remote}", runs=RunSelection.parse("project == 'vision'",
                                                                   parse_filter), **kwargs)


def test_push_writes_a_row_per_run_for_its_exact_version(alice):
    store, remote = alice
    catalog = _remote_catalog(remote)
    for run_id in VISION + SPEECH:
        row = catalog.rows[run_id]
        assert row["commit"] == git(remote, "rev-parse", REF + run_id).strip()
        assert row["meta"]["project"] in ("vision", "speech")
        assert row["summary"] == {"status": "success", "args": {"lr": 0.1},
                                  "last": {"loss": 0.5}}
    # A push of one new run rewrites one shard; the other shards keep their blobs.
    _add_runs(store, None, {"20261201-110000-ccccccc1": "vision"})
    assert push(store, str(remote))["catalog"]["rows"] == 1
    after = _remote_catalog(remote)
    changed = {path for path, sha in after.shards.items() if catalog.shards.get(path) != sha}
    assert changed == {shard_of("20261201-110000-ccccccc1")}
    # Nothing new: the catalog is left alone.
    again = push(store, str(remote))["catalog"]
    assert (again["rows"], again["attempts"], again["error"]) == (0, 0, None)


def test_a_push_reads_only_the_shards_it_changes(alice, monkeypatch):
    """While the remote's catalog is the one this store wrote, a push with nothing new
    reads no row, and a push of one run reads only that run's shard."""
    import flowillower.gitops.catalogpush as catalogpush

    store, remote = alice
    reads: list[object] = []
    real = catalogpush.read_catalog

    def spy(git_dir, commit, only=None):
        reads.append(only)
        return real(git_dir, commit, only)

    monkeypatch.setattr(catalogpush, "read_catalog", spy)
    assert push(store, str(remote))["catalog"]["attempts"] == 0 and reads == []
    _add_runs(store, None, {"20261201-110000-ccccccc2": "speech"})
    assert push(store, str(remote))["catalog"]["rows"] == 1
    assert reads == [{shard_of("20261201-110000-ccccccc2")}]
    # Another machine's catalog (here: the remote's set back) is read whole, once.
    reads.clear()
    git(remote, "update-ref", CATALOG_REF, git(remote, "rev-parse", CATALOG_REF + "~1").strip())
    assert push(store, str(remote))["catalog"]["rows"] == 1 and reads == [None]
    assert push(store, str(remote))["catalog"]["attempts"] == 0 and reads == [None]


def test_filter_pull_fetches_only_the_matching_runs(alice, tmp_path):
    store, remote = alice
    bob = tmp_path / "bob" / ".flowillower"
    got = _vision(bob, remote)
    assert sorted(p.name for p in (bob / "runs").iterdir()) == VISION
    assert got["catalog"] == {"state": "used", "runs": 6, "matched": 2, "skipped": 4,
                              "uncovered": 0, "error": None}
    assert got["runs_not_selected"] == 4
    # The other runs' data never arrived: no ref, no commit, no artifact blob.
    assert sorted(list_refs(bob / "git", INCOMING_PREFIX)) == [INCOMING_PREFIX + r
                                                              for r in VISION]
    for run_id in SPEECH:
        assert not _has(bob / "git", git(remote, "rev-parse", REF + run_id).strip())
        assert not _has(bob / "git", _artifact(store, run_id))
    for run_id in VISION:
        assert _has(bob / "git", _artifact(store, run_id))
    assert _pack_bytes(bob / "git") < 4 * BLOB  # two runs' artifacts and small things
    # The matching runs' code came with them.
    sha = json.loads((bob / "runs" / VISION[0] / "run.json").read_text())["git"]["snapshot"]
    assert (checkout_snapshot(bob / "git", sha, tmp_path / "code") / "train.py").exists()
    # A later plain pull brings the rest.
    assert pull(bob, str(remote))["runs_added"] == 4


def test_remote_without_a_catalog_works_as_before_with_a_notice(alice, tmp_path):
    """A remote pushed by an older flowillower: every run is fetched to filter (the
    old way), the result and the command line say so; a new push adds the catalog."""
    store, remote = alice
    git(remote, "update-ref", "-d", CATALOG_REF)
    bob = tmp_path / "bob"
    out = CliRunner().invoke(pull_command, [str(remote), "--runs", "project == 'vision'",
                                            "--dir", str(bob)])
    assert out.exit_code == 0, out.output
    assert "no run catalog" in out.output and "fetched all 6 run(s)" in out.output
    assert sorted(p.name for p in (bob / ".flowillower" / "runs").iterdir()) == VISION
    for run_id in SPEECH:  # the old full fetch: they are here, only not written
        assert _has(bob / ".flowillower" / "git", _artifact(store, run_id))
    # The next push (nothing new to send) gives every run its row.
    result = push(store, str(remote))
    assert (result["pushed"], result["catalog"]["rows"]) == (0, 6)
    assert sorted(_remote_catalog(remote).rows) == sorted(VISION + SPEECH)


def test_stale_catalog_rows_make_a_run_fetched_whole_never_missed(alice, tmp_path):
    """Runs pushed while the catalog update was lost (an older pusher, a crash): a new
    run and a changed run are not covered by the catalog, so they are fetched whole and
    checked; covered runs that do not match still never arrive."""
    store, remote = alice
    old = git(remote, "rev-parse", CATALOG_REF).strip()
    _add_runs(store, None, {"20261201-120000-ddddddd1": "vision",
                            "20261201-120100-ddddddd2": "speech"})
    (store / "runs" / SPEECH[0] / "notes").mkdir()
    (store / "runs" / SPEECH[0] / "notes" / "n.json").write_text('{"notes": "later"}')
    assert push(store, str(remote))["pushed"] == 3
    git(remote, "update-ref", CATALOG_REF, old)  # the catalog as it was before
    bob = tmp_path / "bob"
    out = CliRunner().invoke(pull_command, [str(remote), "--runs", "project == 'vision'",
                                            "--dir", str(bob), "--json"])
    got = json.loads(out.output)
    assert got["catalog"]["uncovered"] == 3 and got["catalog"]["skipped"] == 3
    assert sorted(p.name for p in (bob / ".flowillower" / "runs").iterdir()) == \
        VISION + ["20261201-120000-ddddddd1"]
    for run_id in SPEECH[1:]:
        assert not _has(bob / ".flowillower" / "git", _artifact(store, run_id))
    text = CliRunner().invoke(pull_command, [str(remote), "--runs", "project == 'x'",
                                             "--dir", str(tmp_path / "carol")]).output
    assert "the remote's run catalog does not cover 3 run(s)" in text


def _hostile_catalog(remote, rows: dict[str, object], raw: dict[str, bytes] | None = None):
    """Replace the remote's catalog by a hand-made one (as anyone with push access could)."""
    shards: dict[str, dict[str, object]] = {}
    for run_id, row in rows.items():
        shards.setdefault(shard_of(run_id) if "/" not in run_id else "rows/00.json",
                          {})[run_id] = row
    files: dict[str, bytes | str] = {path: json.dumps(doc).encode()
                                     for path, doc in shards.items()}
    files.update(raw or {})
    commit = import_tree_commit(remote, files, [], "hostile\n")
    git(remote, "update-ref", CATALOG_REF, commit)


def test_hostile_catalog_rows_cost_a_fetch_or_a_miss_nothing_else(alice, tmp_path):
    store, remote = alice
    good = _remote_catalog(remote).rows
    liar, hidden, huge = SPEECH[0], VISION[1], SPEECH[1]

    def lie(run_id, **meta):
        return {**good[run_id], "meta": {**good[run_id]["meta"], **meta}}

    rows = {run_id: good[run_id] for run_id in VISION + SPEECH}
    rows[liar] = lie(liar, project="vision")  # says vision: fetched, then left out
    rows[hidden] = lie(hidden, project="speech")  # says speech: missed (a hint, a lie)
    rows[huge] = lie(huge, notes="x" * (10 * 2**20))  # a 10 MB row: not read at all
    rows["../../escape"] = good[VISION[0]]  # no such run, and no such name
    rows["20261201-100600-eeeeeee1"] = good[VISION[0]]  # a row for a run not on the remote
    _hostile_catalog(remote, rows)
    bob = tmp_path / "bob" / ".flowillower"
    got = _vision(bob, remote)
    assert sorted(p.name for p in (bob / "runs").iterdir()) == [VISION[0]]
    assert got["catalog"]["matched"] == 2 and got["catalog"]["uncovered"] >= 1
    fetched = {ref.removeprefix(INCOMING_PREFIX) for ref in list_refs(bob / "git",
                                                                      INCOMING_PREFIX)}
    assert {VISION[0], liar, huge} <= fetched and hidden not in fetched
    assert not any("escape" in name or "eeeeeee1" in name for name in fetched)
    assert sorted(os.listdir(tmp_path / "bob")) == [".flowillower"]  # nothing outside
    # Alice's next push repairs what it can tell is wrong: the unreadable shard.
    _add_runs(store, None, {"20261201-130000-fffffff1": "speech"})
    result = push(store, str(remote))
    assert result["catalog"]["error"] is None
    assert _remote_catalog(remote).rows[huge]["commit"] == good[huge]["commit"]


def test_rows_of_wrong_shape_are_ignored(alice, tmp_path):
    store, remote = alice
    good = _remote_catalog(remote).rows
    big = {**good[VISION[0]], "meta": {**good[VISION[0]]["meta"], "notes": "y" * 40_000}}
    rows = {VISION[0]: big, VISION[1]: {"commit": "not a sha", "meta": {}, "summary": {}},
            SPEECH[0]: {**good[SPEECH[0]], "meta": ["a list"]}}
    wrong_shard = {SPEECH[1]: good[SPEECH[1]]}
    other = "rows/00.json" if shard_of(SPEECH[1]) != "rows/00.json" else "rows/01.json"
    _hostile_catalog(remote, rows, {other: json.dumps(wrong_shard).encode(),
                                    "rows/zz.json": b"not json"})
    catalog = _remote_catalog(remote)
    assert sorted(catalog.rows) == []  # each is either too big, malformed or misfiled
    bob = tmp_path / "bob" / ".flowillower"
    got = _vision(bob, remote)
    assert got["catalog"]["uncovered"] == 6
    assert sorted(p.name for p in (bob / "runs").iterdir()) == VISION


PUSHER = """
import json, os, sys, time
from pathlib import Path
from flowillower.gitops.sync import push
store, remote, go = sys.argv[1:4]
Path(go + ".ready." + str(os.getpid())).write_text("")
while not os.path.exists(go):
    time.sleep(0.005)
print(json.dumps(push(Path(store), remote)))
"""


def test_machines_pushing_at_once_keep_a_complete_catalog(tmp_path, monkeypatch):
    """Four processes push their own runs, and each a replay of one shared run, at the
    same moment: the catalog ends with a row for every run, each for the version the
    run's ref names (the shared run's row is its joined, newest version)."""
    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "remote.git")
    shared = "20261201-090000-5a5a5a5a"
    first = tmp_path / "m0" / ".flowillower"
    _add_runs(first, None, {shared: "vision"})
    push(first, str(remote))
    stores = []
    for m in range(4):
        store = tmp_path / f"m{m}" / ".flowillower"
        if m:
            pull(store, str(remote))
        _add_runs(store, None, {f"20261201-{m:06d}-{i:08x}": "vision" for i in range(5)})
        (store / "runs" / shared / "replays").mkdir()
        (store / "runs" / shared / "replays" / f"m{m}.fwl").write_bytes(record_file(f"m{m}"))
        stores.append(store)
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", PUSHER, str(store), str(remote), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for store in stores]
    wait_for(lambda: len(list(tmp_path.glob("go.ready.*"))) == 4, timeout=120,
             what="all pushers started")
    go.write_text("")
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        result = json.loads(out.strip().splitlines()[-1])
        assert result["rejected"] == [] and result["catalog"]["error"] is None, result
    heads = dict(line.split()[::-1] for line in git(
        remote, "for-each-ref", "--format=%(objectname) %(refname:lstrip=3)", REF
    ).splitlines())
    assert len(heads) == 21
    assert len(git(remote, "ls-tree", "--name-only", f"{REF}{shared}:replays").split()) == 4
    rows = _remote_catalog(remote).rows
    assert {rid: row["commit"] for rid, row in rows.items()} == heads
    bob = tmp_path / "bob" / ".flowillower"
    assert _vision(bob, remote)["catalog"]["uncovered"] == 0
    assert len(list((bob / "runs").iterdir())) == 21
    assert len(list((bob / "runs" / shared / "replays").iterdir())) == 4
