"""A pulled run whose JSON documents have the wrong shapes (valid JSON, wrong types) can
hide its own details, never break `ls`, the index or the UI for every other run."""

from __future__ import annotations

import json

from click.testing import CliRunner
from starlette.testclient import TestClient

import flowillower as fw
from flowillower.cli import main
from flowillower.gitops.sync import pull
from flowillower.server.app import create_app
from flowillower.store.catalog import Store
from tests.conftest_git import bare_remote, isolate_home
from tests.test_pull_validation import FRAMES, REF, _run_commit

HOSTILE = {
    "20261201-100000-0000000a": {"notes": {"a.json": b"[1, 2]"}},
    "20261201-100000-0000000b": {"notes": {"a.json": b'{"notes": 5, "tags": "x", "hidden": "y"}'}},
    "20261201-100000-0000000c": {"run.json": {"name": [1], "tags": "x", "created": "abc",
                                              "project": {"a": 1}, "user": 3, "pid": "1",
                                              "git": [1]}},
    "20261201-100000-0000000d": {"summary.json": b"[1, 2]"},
    "20261201-100000-0000000e": {"summary.json": b'{"status": 5, "ended": "x", "duration":'
                                                 b' "y", "last": [1], "args": [2]}'},
}


def _run_files(run_id: str, override: dict) -> dict[str, object]:
    meta = {"id": run_id, "name": "bobs", "user": "bob", "host": "bobs-laptop",
            "created": 1764583200.0, **override.get("run.json", {})}
    files: dict[str, object] = {"run.json": json.dumps(meta).encode(), "data.fwl": FRAMES,
                                "summary.json": b'{"status": "success", "ended": 1764583300.0}'}
    files.update({k: v for k, v in override.items() if k != "run.json"})
    return files


def test_wrongly_typed_documents_never_break_the_listing(tmp_path, monkeypatch, store_dir):
    isolate_home(monkeypatch, tmp_path)
    fw.init(project="mine", name="mine", snapshot=False)
    fw.log("loss", 0.5)
    fw.finish()
    remote = bare_remote(tmp_path / "team.git")
    for run_id, override in HOSTILE.items():
        _run_commit(remote, REF + run_id, _run_files(run_id, override))
    pull(store_dir, str(remote))
    assert {p.name for p in (store_dir / "runs").iterdir()} >= set(HOSTILE)

    rows = {row["id"]: row for row in Store(store_dir).runs()}
    assert set(HOSTILE) <= set(rows) and len(rows) == len(HOSTILE) + 1
    mine = next(row for row in rows.values() if row["name"] == "mine")
    assert mine["status"] == "success"
    assert rows["20261201-100000-0000000b"]["notes"] == ""  # a number is not a note
    assert rows["20261201-100000-0000000c"]["name"] == "20261201-100000-0000000c"
    assert rows["20261201-100000-0000000e"]["status"] != 5

    result = CliRunner().invoke(main, ["ls", "--dir", str(store_dir)])
    assert result.exit_code == 0, result.output
    assert "mine" in result.output
    for run_id in HOSTILE:
        assert CliRunner().invoke(main, ["show", run_id, "--dir", str(store_dir)]).exit_code == 0

    with TestClient(create_app(store_dir, sync_interval=0.1),
                    base_url="http://127.0.0.1:8686") as client:
        assert client.get("/api/runs").status_code == 200
        for run_id in HOSTILE:
            assert client.get(f"/api/runs/{run_id}").status_code == 200, run_id
