"""The `flowillower` command, run as a user would (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import flowillower as fw


def cli(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flowillower", *args], capture_output=True,
                          text=True, input=input, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(proc.stderr)
    return proc


@pytest.fixture
def two_runs(store_dir):
    ids = []
    for lr in (0.1, 0.3):
        run = fw.init(project="cli", name=f"run-lr{lr}", tags=["t1"])
        fw.arg("lr", lr)
        for epoch in fw.loop("epoch", range(3)):
            fw.log("loss", lr * (3 - epoch))
        fw.finish()
        ids.append(run.id)
    return ids


def test_ls_table_and_json(two_runs):
    out = cli("ls").stdout
    assert "run-lr0.1" in out and "run-lr0.3" in out and "success" in out and "loss" in out
    rows = json.loads(cli("ls", "--json").stdout)
    assert [r["id"] for r in rows] == two_runs[::-1]
    assert rows[0]["args"] == {"lr": 0.3}


def test_ls_filters(two_runs):
    rows = json.loads(cli("ls", "lr < 0.2", "--json").stdout)
    assert [r["id"] for r in rows] == [two_runs[0]]
    rows = json.loads(cli("ls", "${'hyper-lr':'>0.2'}$", "--json").stdout)
    assert [r["id"] for r in rows] == [two_runs[1]]
    bad = cli("ls", "lr <", check=False)
    assert bad.returncode == 1 and "cannot parse filter" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_show_by_prefix_and_unknown_run(two_runs):
    out = cli("show", two_runs[0][-8:]).stdout
    assert "run-lr0.1" in out and "lr = 0.1" in out
    detail = json.loads(cli("show", two_runs[1], "--json").stdout)
    assert detail["metrics"]["loss"]["count"] == 3
    missing = cli("show", "nope", check=False)
    assert missing.returncode == 1 and "no run matches 'nope'" in missing.stderr


def test_df_export_csv_and_parquet(two_runs, tmp_path):
    out = cli("df", "lr", "loss").stdout.splitlines()
    assert out[0].split(",")[:3] == ["run_id", "run_name", "epoch"] and len(out) == 7
    target = tmp_path / "values.parquet"
    cli("df", "loss", "-o", str(target))
    import pandas as pd

    frame = pd.read_parquet(target)
    assert len(frame) == 6 and frame["loss"].max() == pytest.approx(0.9)


def test_rm_hide_and_delete(two_runs):
    cli("rm", "--hide", two_runs[0])
    assert [r["id"] for r in json.loads(cli("ls", "--json").stdout)] == [two_runs[1]]
    assert len(json.loads(cli("ls", "--all", "--json").stdout)) == 2
    refused = cli("rm", two_runs[1], check=False, input="n\n")
    assert refused.returncode == 1
    cli("rm", "-y", two_runs[1])
    assert [r["id"] for r in json.loads(cli("ls", "--all", "--json").stdout)] == [two_runs[0]]


def test_reindex(two_runs, store_dir):
    cli("ls")
    (store_dir / "index.sqlite").unlink()
    assert "indexed 2 run(s)" in cli("reindex").stdout
    assert len(json.loads(cli("ls", "--json").stdout)) == 2


def test_no_store_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWILLOWER_DIR", str(tmp_path / "empty"))
    proc = cli("ls", check=False)
    assert proc.returncode == 1 and "no flowillower store" in proc.stderr


def test_help_lists_commands():
    out = cli("--help").stdout
    for command in ("ls", "show", "diff", "checkout", "push", "pull", "df", "rm", "gc",
                    "reindex", "model"):
        assert command in out


def test_gc_drops_snapshots_of_deleted_runs_and_checkpoints(tmp_path, monkeypatch, store_dir):
    from tests.gitrepos import make_repo

    repo = make_repo(tmp_path, "main")
    monkeypatch.chdir(repo)
    monkeypatch.setenv("FLOWILLOWER_DIR", str(repo))
    shas = []
    for width in (64, 128):
        (repo / "lib" / "model.py").write_text(f"WIDTH = {width}\n")
        run = fw.init()
        fw.log("x", 1.0)
        fw.finish()
        (run.dir / "checkpoints").mkdir()
        (run.dir / "checkpoints" / "c.bin").write_bytes(b"\0" * 4096)
        shas.append((run.id, json.loads((run.dir / "run.json").read_text())["git"]["snapshot"]))
    git_dir = repo / ".flowillower" / "git"

    def has(sha):
        return subprocess.run(["git", f"--git-dir={git_dir}", "cat-file", "-e", sha]).returncode == 0

    assert has(shas[0][1]) and has(shas[1][1])
    cli("rm", "-y", shas[0][0])
    out = cli("gc", "--checkpoints").stdout
    assert "dropped 1 ref" in out
    assert not has(shas[0][1]) and has(shas[1][1])
    assert not list((repo / ".flowillower" / "runs").glob("*/checkpoints"))
