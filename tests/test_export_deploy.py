"""`flowillower export` (static site) and `flowillower deploy` (HF Space / any git remote)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowillower.cli import main as cli
from flowillower.errors import GitError, StoreError
from flowillower.server.demo import make_demo_store
from flowillower.server.deploy import deploy, readme, resolve_target
from flowillower.server.export import export_site


@pytest.fixture
def store(tmp_path) -> tuple[Path, list[str]]:
    root = tmp_path / "proj" / ".flowillower"
    return root, make_demo_store(root, runs=3, steps=400, names=["a", "b", "c"])


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def test_export_site_layout(store, tmp_path):
    root, ids = store
    out = tmp_path / "site"
    result = export_site(root, out, points=50)
    assert result["runs"] == 3 and result["bytes"] > 0
    html = (out / "index.html").read_text()
    assert 'name="fw-mode" content="static"' in html and "{{" not in html
    index = json.loads((out / "data" / "index.json").read_text())
    assert {r["name"] for r in index["runs"]} == {"a", "b", "c"}
    run_dir = out / "data" / "runs" / ids[0]
    detail = json.loads((run_dir / "run.json").read_text())
    assert detail["keys"]["image"] == ["samples"] and detail["models"] == [""]
    series = json.loads((run_dir / "series.json").read_text())
    loss = series["series"]["train/loss"]
    assert loss["count"] == 400 and len(loss["y"]) <= 52 and len(loss["step"]) == len(loss["y"])
    assert series["loops"]["epoch"][:2] == [[0, 0], [100, 1]]
    media = json.loads((run_dir / "media.json").read_text())
    first = media["samples"][0]
    assert (run_dir / first["path"]).read_bytes().startswith(b"\x89PNG") and first["exported"]
    assert (run_dir / "model" / "graph.json").is_file()
    assert "act/fc1/hist" in json.loads((run_dir / "hist.json").read_text())
    for vendor in ("uPlot.iife.min.js", "dagre.min.js", "uPlot.LICENSE", "dagre.LICENSE"):
        assert (out / "static" / "vendor" / vendor).is_file()


def test_export_needs_no_network(store, tmp_path):
    out = tmp_path / "site"
    export_site(store[0], out)
    for path in [out / "index.html", *(out / "static" / "js").glob("*.js")]:
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path, urls)  # a namespace, not a fetch


def test_export_filter_and_reexport(store, tmp_path):
    root, _ = store
    out = tmp_path / "site"
    assert export_site(root, out, "lr < 0.05")["runs"] == 2
    assert export_site(root, out, "name == 'a'")["runs"] == 1  # over an earlier export: fine
    assert len(list((out / "data" / "runs").iterdir())) == 1


def test_export_refuses_a_foreign_directory(store, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not empty"):
        export_site(store[0], out)
    assert (out / "thesis.tex").read_text() == "precious"


def test_export_command(store, tmp_path):
    root, _ = store
    out = tmp_path / "site"
    res = CliRunner().invoke(cli, ["export", str(out), "--dir", str(root), "--runs",
                                   "optimizer == 'adam'"])
    assert res.exit_code == 0, res.output
    assert "exported 2 runs" in res.output and "http.server" in res.output


def test_resolve_target_and_readme():
    assert resolve_target("hf:alice/my-runs") == (
        "https://huggingface.co/spaces/alice/my-runs", True)
    assert resolve_target("git@github.com:a/b.git") == ("git@github.com:a/b.git", False)
    with pytest.raises(GitError):
        resolve_target("hf:nope")
    text = readme("runs", space=True)
    assert text.startswith("---\n") and "sdk: static" in text and "app_file: index.html" in text
    assert "sdk:" not in readme("runs", space=False)


def test_deploy_to_a_local_bare_repo(store, tmp_path):
    root, _ = store
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    first = deploy(root, str(remote))
    assert first["pushed"] and first["branch"] == "main"
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--branch", "main", str(remote), str(clone))
    assert (clone / "index.html").is_file() and (clone / "data" / "index.json").is_file()
    assert "flowillower" in (clone / "README.md").read_text()
    again = deploy(root, str(remote))
    assert not again["pushed"]  # nothing changed
    make_demo_store(root, runs=1, steps=20, names=["d"], model=False, media=False, seed=3)
    third = deploy(root, str(remote), message="more runs")
    assert third["pushed"]
    log = git(remote, "log", "--format=%s", "main").split("\n")
    assert log[:2] == ["more runs", "flowillower: update site"]  # history kept


def test_deploy_leaves_the_users_repo_alone(store, tmp_path, monkeypatch):
    root, _ = store
    project = root.parent
    git(project, "init", "-q")
    (project / "train.py").write_text("print(1)\n")
    before = (git(project, "status", "--porcelain"), (project / ".git" / "config").read_text())
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    monkeypatch.chdir(project)
    site = tmp_path / "site"
    export_site(root, site)
    res = CliRunner().invoke(cli, ["deploy", str(remote), "--site", str(site)])
    assert res.exit_code == 0, res.output
    assert "pushed" in res.output
    after = (git(project, "status", "--porcelain"), (project / ".git" / "config").read_text())
    assert before == after


def test_deploy_reports_git_errors(store, tmp_path):
    with pytest.raises(GitError):
        deploy(store[0], str(tmp_path / "does-not-exist.git"))
