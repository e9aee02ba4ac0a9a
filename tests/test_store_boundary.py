"""The store boundary: a run reference only ever names a run folder inside `runs/`.

A real git project with a `src/` folder and real runs; every command that takes a run
reference is fed paths, `..`, empty strings, a symlink out of `runs/` and a folder that
is no run. Each must fail with a one-line message and leave every file where it was.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowillower.cli import main
from flowillower.errors import RunNotFoundError
from flowillower.store.catalog import Store
from flowillower.store.resolve import InvalidRunRefError
from tests.conftest_git import git

with warnings.catch_warnings():  # starlette's note about httpx2 is not ours to fix
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

TRAIN = """\
import flowillower as fw
fw.init(project="boundary", name=NAME)
for epoch in fw.loop("epoch", range(3)):
    fw.log("loss", LR * (3 - epoch))
fw.finish()
"""


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items()
            if not k.startswith("GIT_") and k != "FLOWILLOWER_DIR"}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A git project (src/, train.py) with two real runs, plus the hostile entries:
    runs/evil -> <project>/src, runs/outside -> a copy of a run outside the store,
    runs/notarun/ (a folder with no run files)."""
    tmp = tmp_path_factory.mktemp("boundary")
    proj = tmp / "project"
    (proj / "src" / "pkg").mkdir(parents=True)
    (proj / "src" / "pkg" / "core.py").write_text("VALUE = 1\n")
    (proj / "README.md").write_text("my project\n")
    git(proj.parent, "init", "-q", "-b", "main", str(proj))
    ids: list[str] = []
    store = proj / ".flowillower"
    for name, lr in (("first", 0.1), ("second", 0.3)):
        (proj / "train.py").write_text(TRAIN.replace("NAME", repr(name))
                                       .replace("LR", repr(lr)))
        git(proj, "add", "-A")
        git(proj, "commit", "-qm", name)
        proc = subprocess.run([sys.executable, "train.py"], cwd=proj, env=_clean_env(),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # Ids made in the same second sort by their random part: record creation order.
        ids += [p.name for p in (store / "runs").iterdir() if p.name not in ids]
    assert len(ids) == 2
    # A genuine-looking run outside the store: a link to it must not make it a run here.
    outside = tmp / "outside-run"
    subprocess.run(["cp", "-a", str(store / "runs" / ids[0]), str(outside)], check=True)
    (store / "runs" / "evil").symlink_to(proj / "src")
    (store / "runs" / "outside").symlink_to(outside)
    (store / "runs" / "notarun").mkdir()
    (store / "runs" / "notarun" / "keep.txt").write_text("not a run\n")
    return {"tmp": tmp, "proj": proj, "store": store, "ids": ids, "outside": outside}


def listing(root: Path) -> dict[str, str]:
    """Every file and link under `root` with a digest of its content (the derived index,
    rewritten by every sync, left out)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if name.startswith("index.sqlite"):
                continue
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def bad_refs(project: dict) -> list[tuple[str, str]]:
    """(reference, words the error must contain)."""
    src = str(project["proj"] / "src")
    return [("../../src", "is a path"), ("..", "not a run"), ("/", "is a path"),
            (src, "is a path"), ("", "empty run reference"), ("  ", "empty run reference"),
            ("runs/../..", "is a path"), ("evil", "symbolic link"),
            ("outside", "symbolic link"), ("notarun", "is not a run"), (".trash", "not a run"),
            ("a\x00b", "NUL")]


def commands(ref: str, good: str, dest: Path) -> list[list[str]]:
    return [["rm", ref, "-y"], ["rm", "--hide", ref], ["show", ref], ["diff", ref, good],
            ["diff", good, ref], ["checkout", ref, str(dest)], ["model", ref]]


def test_every_command_refuses_every_bad_reference(project):
    before = listing(project["tmp"])
    runner = CliRunner()
    good = project["ids"][0]
    dest = project["tmp"] / "checkout-dest"
    for ref, words in bad_refs(project):
        for argv in commands(ref, good, dest):
            result = runner.invoke(main, [*argv, "--dir", str(project["proj"])])
            shown = f"{argv!r}: exit {result.exit_code}, output {result.output!r}"
            assert result.exit_code == 1, shown
            assert result.exception is None or isinstance(result.exception, SystemExit), shown
            message = result.output.strip()
            assert message.startswith("Error: ") and "\n" not in message, shown
            assert words in message, shown
            assert "deleted" not in message and "wrote" not in message, shown
    assert listing(project["tmp"]) == before
    assert not dest.exists()
    assert (project["proj"] / "src" / "pkg" / "core.py").read_text() == "VALUE = 1\n"


def test_rm_of_a_good_and_a_bad_reference_deletes_neither(project):
    """All references are resolved before anything is deleted."""
    before = listing(project["tmp"])
    for bad in ("../../src", "evil", "notarun"):
        result = CliRunner().invoke(main, ["rm", project["ids"][0], bad, "-y", "--dir",
                                           str(project["proj"])])
        assert result.exit_code == 1 and "deleted" not in result.output, result.output
    assert listing(project["tmp"]) == before


def test_good_references_still_work(project):
    """The boundary refuses only what is not a run: ids, prefixes, suffixes and names
    still resolve (the negative test above would pass for a resolver refusing all)."""
    store = Store(project["proj"])
    first, second = project["ids"]
    assert store.resolve(first) == first
    unique = len(os.path.commonprefix([first, second])) + 1
    assert store.resolve(first[:unique]) == first
    assert store.resolve(first[-8:]) == first
    assert store.resolve("second") == second
    assert store.run_dir("first") == project["store"] / "runs" / first
    result = CliRunner().invoke(main, ["show", "second", "--dir", str(project["proj"])])
    assert result.exit_code == 0 and second in result.output


def test_ambiguous_prefix_lists_the_candidates(project):
    store = Store(project["proj"])
    common = os.path.commonprefix(project["ids"])
    with pytest.raises(RunNotFoundError) as info:
        store.resolve(common)
    message = str(info.value)
    assert "matches 2 runs" in message
    assert all(run_id in message for run_id in project["ids"])
    assert "(first)" in message and "(second)" in message


def test_like_wildcards_match_only_themselves(project):
    """`_` and `%` are SQL LIKE wildcards: a reference made of them matches no run."""
    store = Store(project["proj"])
    first, second = project["ids"]
    unique = len(os.path.commonprefix([first, second])) + 1
    for ref in ("_" + first[1:unique], first[:unique - 1] + "_", "_" * 8):
        with pytest.raises(RunNotFoundError, match="no run matches"):
            store.resolve(ref)


def test_real_subprocess_rm_of_the_project_source(project):
    before = listing(project["tmp"])
    for ref in ("../../src", str(project["proj"] / "src"), ".."):
        proc = subprocess.run([sys.executable, "-m", "flowillower", "rm", ref, "-y"],
                              cwd=project["proj"], env=_clean_env(), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 1, (ref, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and "deleted" not in proc.stdout
        assert proc.stderr.strip().startswith("Error: ") and "not a run" in proc.stderr
    assert listing(project["tmp"]) == before


def test_symlinked_runs_are_never_listed_nor_read(project):
    """A link in runs/ to a genuine run elsewhere is not a run of this store: not in
    the index, not in `fw.dataframe`, not exported."""
    from flowillower.queries.dataframe import dataframe

    store = Store(project["proj"])
    ids = {row["id"] for row in store.runs()}
    assert ids == set(project["ids"])
    frame = dataframe("loss", dir=project["proj"])
    assert set(frame["run_id"]) == set(project["ids"])
    assert len(frame) == 6  # 3 epochs x 2 runs, none read through the links


def test_dataframe_runs_references(project):
    from flowillower.queries.dataframe import dataframe

    before = listing(project["tmp"])
    frame = dataframe("loss", runs=["second"], dir=project["proj"])
    assert list(frame["loss"]) == pytest.approx([0.9, 0.6, 0.3])
    assert set(frame["run_id"]) == {project["ids"][1]}
    for ref in ("../../src", "evil", "..", str(project["outside"])):
        with pytest.raises(RunNotFoundError):
            dataframe("loss", runs=[ref], dir=project["proj"])
        with pytest.raises(RunNotFoundError):
            dataframe(runs=[ref], dir=project["proj"])
    with pytest.raises(InvalidRunRefError):
        dataframe("loss", runs=["../../src"], dir=project["proj"])
    # A filter string is text to match, never a path: nothing matches it.
    assert dataframe("loss", runs="../../src", dir=project["proj"]).empty
    assert listing(project["tmp"]) == before


def test_delete_rechecks_the_boundary_and_never_follows_a_link(project, tmp_path):
    """A run folder swapped for a link between lookup and delete: the delete refuses,
    and what the link points to is untouched."""
    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copytree(project["store"], proj / ".flowillower", symlinks=True)
    runs = proj / ".flowillower" / "runs"
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "run.json").write_text("{}")
    (victim / "precious.txt").write_text("keep me\n")

    class RacingStore(Store):
        def resolve(self, ref: str) -> str:
            run_id = super().resolve(ref)
            # Another process swaps the run folder for a link right after the lookup.
            if not (runs / run_id).is_symlink():
                os.rename(runs / run_id, tmp_path / "moved-away")
                (runs / run_id).symlink_to(victim)
            return run_id

    first = project["ids"][0]
    with pytest.raises(InvalidRunRefError, match="symbolic link"):
        RacingStore(proj).delete(first)
    assert (victim / "precious.txt").read_text() == "keep me\n"
    assert (victim / "run.json").exists()
    assert (runs / first).is_symlink()


def test_delete_removes_a_real_run(project, tmp_path):
    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copytree(project["store"], proj / ".flowillower", symlinks=True)
    first, second = project["ids"]
    result = CliRunner().invoke(main, ["rm", "first", "-y", "--dir", str(proj)])
    assert result.exit_code == 0 and "deleted 1 run(s)" in result.output
    runs = proj / ".flowillower" / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted([second, "evil", "outside",
                                                             "notarun"])
    assert [row["id"] for row in Store(proj).runs()] == [second]
    assert (project["proj"] / "src" / "pkg" / "core.py").exists()


@pytest.fixture
def client(project):
    from flowillower.server.app import create_app

    with TestClient(create_app(project["store"], sync_interval=0.05),
                    base_url="http://127.0.0.1:8686") as c:
        yield c


def test_server_routes_refuse_paths_and_links(project, client):
    before = listing(project["tmp"])
    write = {"X-Flowillower-Token": ""}
    good = project["ids"][0]
    assert client.get(f"/api/runs/{good}").status_code == 200
    for ref in ("..%2F..%2Fsrc", "..", "%2E%2E", "evil", "outside", "notarun", ".trash",
                "..%2F..", "%2Fetc", "%20%20"):
        for route in ("", "/models", "/model", "/code", "/media?key=loss",
                      "/hist?key=loss", "/files/media/x.png"):
            r = client.get(f"/api/runs/{ref}{route}")
            assert "VALUE" not in r.text
            if not r.url.path.startswith("/api/runs/"):
                # The client resolved the dot segment itself (/api/runs/../models is
                # /api/models, a store-wide list): no run reference reached the server.
                assert r.json() == client.get(r.url.path).json()
                continue
            assert 400 <= r.status_code < 500, (ref, route, r.status_code, r.text)
        r = client.get(f"/api/series?run={ref}&key=loss")
        assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
        r = client.get(f"/api/keys?run={ref}")
        assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
        r = client.get(f"/api/diff?a={ref}&b={good}")
        assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
        r = client.patch(f"/api/runs/{ref}", json={"notes": "x"}, headers=write)
        assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
        r = client.delete(f"/api/runs/{ref}", headers=write)
        assert 400 <= r.status_code < 500, (ref, r.status_code, r.text)
    assert listing(project["tmp"]) == before


def test_push_refuses_path_like_references(project, tmp_path):
    """`fw.push(runs=[...])` resolves each reference through the store: a path is an
    error before anything is committed or sent."""
    from flowillower.remote import push

    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    before = listing(project["tmp"])
    for ref in ("../../src", "evil", "..", str(project["proj"] / "src")):
        with pytest.raises(RunNotFoundError):
            push(str(remote), runs=[project["ids"][0], ref], dir=project["proj"])
    assert git(remote, "for-each-ref") == ""
    assert listing(project["tmp"]) == before


def test_a_link_inside_a_run_never_serves_a_file_from_elsewhere(project, tmp_path):
    """runs/<id>/model -> a folder outside: `flowillower model`, the server's model
    route and `export` refuse to read or publish what it points to."""
    from flowillower.server.app import create_app
    from flowillower.server.export import export_site

    proj = tmp_path / "p"
    proj.mkdir()
    shutil.copytree(project["store"], proj / ".flowillower", symlinks=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "graph.json").write_text('{"tree": {}, "secret": "SECRET-GRAPH"}')
    first = project["ids"][0]
    (proj / ".flowillower" / "runs" / first / "model").symlink_to(elsewhere)
    result = CliRunner().invoke(main, ["model", first, "--dir", str(proj)])
    assert result.exit_code == 1 and "leads outside the run folder" in result.output
    assert "SECRET" not in result.output
    with TestClient(create_app(proj / ".flowillower", sync_interval=0.05),
                    base_url="http://127.0.0.1:8686") as c:
        r = c.get(f"/api/runs/{first}/model")
        assert r.status_code == 403 and "SECRET" not in r.text
    site = tmp_path / "site"
    export_site(proj / ".flowillower", site)
    published = [p for p in site.rglob("*") if p.is_file()]
    assert published and not any(b"SECRET-GRAPH" in p.read_bytes() for p in published)


@pytest.mark.parametrize("odd", ["proj#1", "proj?x=1", "proj%20y"])
def test_query_opens_the_index_of_a_store_with_uri_characters_in_its_path(tmp_path, odd):
    """`fw.query` opens the store's own index read-only, whatever its path holds, and
    creates nothing beside the store."""
    from flowillower.queries.sql import query
    from flowillower.run import Run

    proj = tmp_path / odd
    proj.mkdir()
    run = Run(project="q", name="odd", dir=proj, snapshot=False)
    run.log_metrics({"a": 1.0})
    run.finish()
    before = sorted(p.name for p in tmp_path.iterdir())
    frame = query("SELECT id, name FROM runs", dir=proj)
    assert list(frame["name"]) == ["odd"] and list(frame["id"]) == [run.id]
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_run_name_that_looks_like_a_path_is_never_a_path(tmp_path):
    """Names are free text and may hold `/`; as references they are refused like any
    path (nothing is looked up or touched), and the error gives the run's id."""
    from flowillower.run import Run

    proj = tmp_path / "p"
    proj.mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "keep.py").write_text("KEEP = 1\n")
    run = Run(project="q", name="../../../src", dir=proj, snapshot=False)
    run.log_metrics({"a": 1.0})
    run.finish()
    before = listing(tmp_path)
    for argv in (["rm", "../../../src", "-y"], ["show", "../../../src"]):
        result = CliRunner().invoke(main, [*argv, "--dir", str(proj)])
        assert result.exit_code == 1, result.output
        assert "is a path" in result.output and f"is the name of {run.id}" in result.output
    assert listing(tmp_path) == before
    shown = CliRunner().invoke(main, ["show", run.id, "--dir", str(proj)])
    assert shown.exit_code == 0 and "../../../src" in shown.output
