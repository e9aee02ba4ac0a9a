"""A teammate's pushed run is data: `pull` writes only what a run may hold, checked.

Hostile run commits are made directly in a bare remote with git plumbing (what anyone with
push access could do), then a real `flowillower pull` brings them into a real store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flowillower.gitops.sync import pull
from flowillower.store.format import encode_frame
from flowillower.store.provenance import is_pulled, pulled_info
from tests.conftest_git import bare_remote, git, isolate_home, make_repo

GOOD = "20261201-100000-00000001"
MIXED = "20261201-100000-00000002"
BAD_JSON = "20261201-100000-00000003"
WRONG_ID = "20261201-100000-00000004"
REF = "refs/flowillower/runs/"
FRAMES = encode_frame(keys={1: ("loss", "metric")}) + encode_frame(keys={2: ("acc", "metric")})


def _blob(remote: Path, data: bytes) -> str:
    return subprocess.run(["git", "--git-dir", str(remote), "hash-object", "-w", "--stdin"],
                          input=data, capture_output=True, check=True).stdout.decode().strip()


def _tree(remote: Path, files: dict[str, object]) -> str:
    """A tree from {name: bytes | (mode, type, sha) | {sub-tree}} (names may be `..`)."""
    lines = []
    for name, item in files.items():
        if isinstance(item, dict):
            lines.append(f"040000 tree {_tree(remote, item)}\t{name}")
        elif isinstance(item, tuple):
            lines.append(f"{item[0]} {item[1]} {item[2]}\t{name}")
        else:
            lines.append(f"100644 blob {_blob(remote, item)}\t{name}")
    return subprocess.run(["git", "--git-dir", str(remote), "mktree", "--missing"],
                          input="\n".join(lines).encode() + b"\n", capture_output=True,
                          check=True).stdout.decode().strip()


def _run_commit(remote: Path, ref: str, files: dict[str, object],
                parent: str | None = None) -> str:
    tree = _tree(remote, files)
    args = ["commit-tree", tree, "-m", "run"] + (["-p", parent] if parent else [])
    commit = git(remote, *args).strip()
    git(remote, "update-ref", ref, commit)
    return commit


def _meta(run_id: str) -> bytes:
    return json.dumps({"id": run_id, "name": "bobs", "user": "bob", "host": "bobs-laptop",
                       "created": 1764583200.0}).encode()


def _good_run(run_id: str) -> dict[str, object]:
    return {"run.json": _meta(run_id), "data.fwl": FRAMES,
            "summary.json": b'{"status": "success"}',
            "notes": {"20261201T1000.json": b'{"notes": "hi"}'},
            "media": {"img-1a2b3c4d": {"1.png": b"\x89PNG fake image"}},
            "model": {"graph.json": b'{"nodes": []}'},
            "replays": {"r1.fwl": FRAMES},
            "artifacts": {"cfg-0a1b2c3d": {"0": {"config.yaml": b"lr: 0.1\n"}}}}


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() or p.is_symlink()}


@pytest.fixture
def hostile_remote(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    remote = bare_remote(tmp_path / "team.git")
    _run_commit(remote, REF + GOOD, _good_run(GOOD))
    blob = _blob(remote, b"#!/bin/sh\necho pwned\n")
    link = _blob(remote, b"/etc/passwd")
    mixed = _good_run(MIXED)
    mixed.update({
        "checkpoints": {"x.pt": b"\x80\x04 a pickle that runs code when loaded"},
        "hook.py": b"import os; os.system('echo pwned')\n",
        "data.rank1.fwl": b"garbage, not frames at all" * 10,
        "passwd-link": ("120000", "blob", link),
        "vendor": ("160000", "commit", "1" * 40),
        "run.sh": ("100755", "blob", blob),
    })
    mixed["notes"] = {**mixed["notes"], "ok.json": b'{"notes": "fine"}', "bad.json": b"{not"}
    mixed["replays"] = {"r1.fwl": FRAMES, "run.py": b"print('pwned')\n"}
    _run_commit(remote, REF + MIXED, mixed)
    _run_commit(remote, REF + BAD_JSON, {**_good_run(BAD_JSON), "run.json": b"{broken"})
    _run_commit(remote, REF + WRONG_ID, {**_good_run(WRONG_ID), "run.json": _meta(GOOD)})
    _run_commit(remote, REF + "sub/evil", _good_run("sub/evil"))
    return remote


def test_hostile_entries_are_refused_and_good_runs_arrive(hostile_remote, tmp_path):
    bob = tmp_path / "bob"
    bob.mkdir()
    before = _files(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "flowillower", "pull", str(hostile_remote),
                           "--dir", str(bob)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    output = proc.stdout + proc.stderr
    store = bob / ".flowillower"
    new = _files(tmp_path) - before
    # Nothing arrived outside the store, and nothing refused arrived anywhere.
    assert all(path.startswith("bob/.flowillower/") for path in new), sorted(new)
    for path in new - {p for p in new if p.startswith("bob/.flowillower/git/objects/")}:
        assert not path.endswith(("evil", "hook.py", "x.pt", ".git/config", "passwd-link",
                                  "run.sh", "bad.json", "run.py", "data.rank1.fwl")), path
        assert "/checkpoints/" not in path and "/vendor" not in path
    runs = store / "runs"
    assert sorted(p.name for p in runs.iterdir()) == [GOOD, MIXED]
    # plus the index row pull records for each run it indexed (local: rows never travel)
    assert _files(runs / GOOD) == set(_files_of(_good_run(GOOD))) | {"index-row.json"}
    assert (runs / GOOD / "data.fwl").read_bytes() == FRAMES
    assert _files(runs / MIXED) == set(_files_of(_good_run(MIXED))) | {"notes/ok.json",
                                                                       "index-row.json"}
    # The output names each refused run and entry with its reason.
    for text in (f"refused run {BAD_JSON}: run.json is not a JSON object",
                 f"refused run {WRONG_ID}: run.json names another run",
                 "refused run sub/evil: not a valid run id",
                 f"refused 8 file(s) of run {MIXED}",
                 "checkpoints never travel", "checkpoints/x.pt",
                 "a symbolic link: passwd-link", "a submodule entry: vendor",
                 "not a file a run holds", "hook.py", "run.sh",
                 "not an intact record file", "data.rank1.fwl",
                 "not a JSON object: notes/bad.json", "not a replay record file: replays/run.py"):
        assert text in output, (text, output)
    # Pulled runs remember where they came from, and who made them.
    info = pulled_info(store, GOOD)
    assert info is not None and info["remote"] == str(hostile_remote)
    assert (info["author"], info["host"]) == ("bob", "bobs-laptop")
    assert is_pulled(store, MIXED) and not is_pulled(store, BAD_JSON)


def test_paths_leaving_the_run_are_refused(hostile_remote, tmp_path):
    # Tree entries named `..` or `.git` (git's fsck rejects them in a whole fetch: here one
    # hostile run must not keep the others out).
    escape = "20261201-100000-00000005"
    good = _good_run(escape)
    _run_commit(hostile_remote, REF + escape, {
        **good, "..": {"..": {"evil": b"escaped the run"}},
        ".git": {"config": b"[core]\n\tfsmonitor = echo pwned\n"},
        "media": {**good["media"], "..": {"..": {"..": {"evil": b"escaped too"}}}}})
    before = _files(tmp_path)
    store = tmp_path / "bob" / ".flowillower"
    got = pull(store, str(hostile_remote))
    new = _files(tmp_path) - before
    assert not [p for p in new if p.endswith("evil") or p.endswith(".git/config")]
    assert sorted(got["refused"][escape]) == [
        ["../../evil", "a path leaving the run folder"],
        [".git/config", "a path leaving the run folder"],
        ["media/../../../evil", "a path leaving the run folder"]]
    assert _files(store / "runs" / escape) == set(_files_of(_good_run(escape))) | {
        "index-row.json"}  # the index row pull recorded (local, never travels)
    assert (store / "runs" / GOOD / "data.fwl").read_bytes() == FRAMES


def _files_of(tree: dict[str, object], prefix: str = "") -> list[str]:
    out = []
    for name, item in tree.items():
        if isinstance(item, dict):
            out += _files_of(item, f"{prefix}{name}/")
        else:
            out.append(prefix + name)
    return out


def test_pull_never_overwrites_or_truncates_local_files(hostile_remote, tmp_path):
    store = tmp_path / "bob" / ".flowillower"
    pull(store, str(hostile_remote))
    local = store / "runs" / GOOD
    run_json = (local / "run.json").read_bytes()
    grown = FRAMES + encode_frame(keys={3: ("lr", "metric")})
    parent = git(hostile_remote, "rev-parse", REF + GOOD).strip()
    _run_commit(hostile_remote, REF + GOOD,
                {**_good_run(GOOD), "data.fwl": grown, "summary.json": b'{"status": "x"}',
                 "replays": {"r1.fwl": encode_frame(keys={9: ("other", "metric")}) + FRAMES}},
                parent)
    got = pull(store, str(hostile_remote))
    # A record file that extends ours grows; one with another beginning is refused.
    assert (local / "data.fwl").read_bytes() == grown
    assert (local / "replays" / "r1.fwl").read_bytes() == FRAMES
    # A newer version of the run may not rewrite its finished summary either (pullrefresh).
    assert got["refused"][GOOD] == [
        ["summary.json", "the summary of a finished run is final (kept yours)"],
        ["replays/r1.fwl", "a record file that does not extend yours (kept yours)"]]
    # Files already here are never replaced.
    assert (local / "summary.json").read_bytes() == b'{"status": "success"}'
    assert (local / "run.json").read_bytes() == run_json
    assert (got["runs_added"], got["runs_updated"], got["files_added"]) == (0, 1, 1)


def test_code_refs_cannot_be_repointed(hostile_remote, tmp_path):
    store = tmp_path / "bob" / ".flowillower"
    pull(store, str(hostile_remote))
    git_dir = store / "git"
    ours = git(git_dir, "commit-tree", git(git_dir, "mktree", "--missing").strip() or
               "4b825dc642cb6eb9a060e54bf8d69288fbee4904", "-m", "our snapshot").strip()
    git(git_dir, "update-ref", "refs/flowillower/code/" + ours, ours)
    theirs = git(hostile_remote, "commit-tree", "4b825dc642cb6eb9a060e54bf8d69288fbee4904",
                 "-m", "theirs").strip()
    git(hostile_remote, "update-ref", "refs/flowillower/code/" + ours, theirs)
    git(hostile_remote, "update-ref", "refs/flowillower/code/" + "e" * 40, theirs)
    got = pull(store, str(hostile_remote))
    assert got["snapshots_refused"] == 2
    refs = git(git_dir, "for-each-ref", "--format=%(refname) %(objectname)",
               "refs/flowillower/code/").split("\n")
    assert [r for r in refs if r] == [f"refs/flowillower/code/{ours} {ours}"]


def test_push_runs_takes_only_run_references(tmp_path, monkeypatch):
    isolate_home(monkeypatch, tmp_path)
    project = make_repo(tmp_path, "main")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("GIT_") and k != "FLOWILLOWER_DIR"}
    for name in ("first", "second"):
        (project / "train.py").write_text(f"import flowillower as fw\nfw.init(name={name!r})\n"
                                          "fw.log('x', 1.0)\n")
        subprocess.run([sys.executable, "train.py"], cwd=project, env=env, check=True,
                       capture_output=True)
    remote = bare_remote(tmp_path / "team.git")
    cli = [sys.executable, "-m", "flowillower", "push", str(remote), "--dir", str(project)]
    for ref in ("../../src", "/etc", "..", ""):
        proc = subprocess.run([*cli, "--runs", ref], env=env, capture_output=True, text=True,
                              check=False)
        assert proc.returncode != 0, (ref, proc.stdout)
        assert "Error" in proc.stderr
    assert git(remote, "for-each-ref").strip() == ""  # nothing went
    proc = subprocess.run([*cli, "--runs", "second"], env=env, capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    [ref] = git(remote, "for-each-ref", "--format=%(refname)", REF).split()
    run_json = json.loads(git(remote, "show", f"{ref}:run.json"))
    assert run_json["name"] == "second"


def test_duplicate_and_conflicting_entries(hostile_remote, tmp_path):
    dup = "20261201-100000-00000006"
    good = _good_run(dup)
    other = _blob(hostile_remote, _meta(GOOD))
    tree = _tree(hostile_remote, {
        **good, "media": {**good["media"], "x": b"a file", "x ": {"y": b"a folder's file"}}})
    # Hand-edit the tree: a second run.json (naming another run) and `media/x` both a file
    # and a folder, which git's own commands would never write.
    listing = git(hostile_remote, "ls-tree", tree)
    media = [line for line in listing.splitlines() if line.endswith("\tmedia")][0]
    media_tree = git(hostile_remote, "ls-tree", media.split()[2]).replace("\tx \n", "\tx\n")
    media_sha = subprocess.run(["git", "--git-dir", str(hostile_remote), "mktree"],
                               input=media_tree.encode(), capture_output=True,
                               check=True).stdout.decode().strip()
    rows = [line if not line.endswith("\tmedia") else f"040000 tree {media_sha}\tmedia"
            for line in listing.splitlines()] + [f"100644 blob {other}\trun.json"]
    top = subprocess.run(["git", "--git-dir", str(hostile_remote), "mktree"],
                         input="\n".join(rows).encode() + b"\n", capture_output=True,
                         check=True).stdout.decode().strip()
    commit = git(hostile_remote, "commit-tree", top, "-m", "dup").strip()
    git(hostile_remote, "update-ref", REF + dup, commit)

    store = tmp_path / "bob" / ".flowillower"
    got = pull(store, str(hostile_remote))
    run = store / "runs" / dup
    assert json.loads((run / "run.json").read_text())["id"] == dup
    assert (run / "media" / "x").read_bytes() == b"a file"
    refused = dict(map(tuple, got["refused"][dup]))
    assert refused["run.json"] == "a duplicate entry"
    assert refused["media/x/y"].startswith("cannot be written here")
    assert (store / "runs" / GOOD / "data.fwl").read_bytes() == FRAMES  # the others came
