"""The `flowillower` command, run as a user would (a real subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

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


# Every command a user can type: the start of its help's first line (its docstring) and
# options that only it offers. A command missing from `--help` or showing another
# command's help fails below.
COMMANDS = {
    "checkout": ("Write RUN's code snapshot into DEST", ["--dir"]),
    "demo": ("The showcase: flow matching from noise", []),
    "deploy": ("Push the static UI to TARGET", ["--site", "--runs", "--branch", "--message"]),
    "df": ("Export values as a table (CSV or Parquet)", ["--runs", "--output", "--dir"]),
    "diff": ("Show how two runs differ", ["--code / --no-code", "--dir"]),
    "du": ("Space used: by kind", ["--limit", "--json", "--dir"]),
    "export": ("Write the UI as a static site to OUT_DIR",
               ["--runs", "--points", "--hidden", "--no-media"]),
    "gc": ("Reclaim space: drop code snapshots", ["--checkpoints", "--dir"]),
    "ls": ("List runs, newest first", ["--all", "--limit", "--json", "--dir"]),
    "model": ("Print the module tree of the model", ["--depth", "--json", "--dir"]),
    "pull": ("Fetch runs others pushed to REMOTE", ["--json", "--dir"]),
    "push": ("Publish runs (data + code snapshots) to REMOTE",
             ["--runs", "--include-large", "--json", "--dir"]),
    "reindex": ("Rebuild the index from the run folders", ["--dir"]),
    "registry": ("Named models whose versions are runs", []),
    "replay": ("Compute values past runs never logged",
               ["--runs", "--workers", "--yes", "--script", "--json"]),
    "rm": ("Delete (or --hide) runs", ["--hide", "--yes", "--dir"]),
    "show": ("Show one run: metadata, args, metrics", ["--json", "--dir"]),
    "ui": ("Serve the web UI", ["--port", "--host", "--no-browser", "--token", "--demo"]),
}


def _listing(help_text: str) -> dict[str, str]:
    """{command: its one-line summary} from the Commands section of a group's help."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return {m[1]: " ".join(m[2].split()) for m in
            re.finditer(r"^  (\S+)\s+(\S.*)$", section, re.M)}


def test_help_lists_every_command_with_its_own_summary():
    out = cli("--help").stdout
    assert out.startswith("Usage: ") and "\nCommands:\n" in out
    listed = _listing(out)
    assert sorted(listed) == sorted(COMMANDS)  # none missing, none unexpected
    for command, (summary, _options) in COMMANDS.items():
        assert listed[command].startswith(summary), (command, listed[command])


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_has_its_own_help(command):
    from click.testing import CliRunner

    from flowillower.cli import main

    result = CliRunner().invoke(main, [command, "--help"], prog_name="flowillower")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.match(rf"Usage: flowillower {command} \[OPTIONS\]", lines[0]), lines[0]
    description = " ".join(result.output.split("\n\n", 1)[1].split())
    summary, options = COMMANDS[command]
    assert description.startswith(summary), description[:120]
    for other, (other_summary, _) in COMMANDS.items():
        assert other == command or other_summary not in description, other
    for option in options:
        assert re.search(rf"^  (-\w, )?{re.escape(option)}\b", result.output, re.M), option
    assert re.search(r"^  -h, --help\b", result.output, re.M)


def test_demo_lists_its_own_commands():
    listed = _listing(cli("demo", "--help").stdout)
    assert sorted(listed) == ["all", "keys", "quickstart", "train", "visualize"]
    assert listed["train"].startswith("Train one model and record it as a run")


def test_gc_drops_snapshots_of_deleted_runs_and_checkpoints(tmp_path, monkeypatch, store_dir):
    from tests.conftest_git import make_repo

    repo = make_repo(tmp_path, "main", runnable=True)
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
    # Fresh snapshots stay (a run starting now may be about to name one) ...
    out = cli("gc", "--checkpoints").stdout
    assert "dropped 0 ref" in out
    assert has(shas[0][1]) and has(shas[1][1])
    assert not list((repo / ".flowillower" / "runs").glob("*/checkpoints"))
    # ... and once they are past the grace period (two hours), the deleted run's goes.
    old = time.time() - 3 * 3600
    for path in [*(git_dir / "refs").rglob("*"), *(git_dir / "objects").rglob("*")]:
        if path.is_file():
            os.utime(path, (old, old))
    assert "dropped 1 ref" in cli("gc").stdout
    assert not has(shas[0][1]) and has(shas[1][1])
    assert json.loads(cli("ls", "--json").stdout)[0]["id"] == shas[1][0]
