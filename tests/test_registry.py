"""The model registry: versions are runs in registration order, aliases move, concurrent
registrations are all kept, hostile names and entries are refused, and the CLI says so."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower import registry
from flowillower.cli import main
from flowillower.errors import InvalidRunRefError, RunNotFoundError
from flowillower.run import Run


def _runs(root: Path, count: int) -> list[str]:
    ids = []
    for i in range(count):
        run = Run("p", f"model-{i}", dir=root, snapshot=False)
        run.log_metrics({"loss": 1.0 / (i + 1)}, 0)
        run.finish()
        ids.append(run.id)
    return ids


def test_versions_and_aliases(store_dir):
    a, b, c = _runs(store_dir, 3)
    assert fw.register(a, "velocity-net", alias="prod", dir=store_dir) == "v1"
    assert fw.register(fw.best("loss", dir=store_dir), "velocity-net", dir=store_dir) == "v2"
    assert fw.best("loss", dir=store_dir).id == c
    assert registry.resolve("velocity-net", "prod", dir=store_dir) == a
    assert registry.resolve("velocity-net", None, dir=store_dir) == c  # latest
    assert registry.resolve("velocity-net", "v2", dir=store_dir) == c
    # Registering a run again keeps its version and moves the alias only.
    assert fw.register(a, "velocity-net", alias="staging", dir=store_dir) == "v1"
    assert registry.set_alias("velocity-net", "prod", "v2", dir=store_dir) == c
    entry = registry.model("velocity-net", dir=store_dir)
    assert entry.versions == [a, c] and entry.aliases == {"prod": c, "staging": a}
    assert b not in entry.versions
    with pytest.raises(registry.RegistryError, match="no v3"):
        registry.resolve("velocity-net", "v3", dir=store_dir)
    with pytest.raises(registry.RegistryError, match="no alias"):
        registry.resolve("velocity-net", "canary", dir=store_dir)
    with pytest.raises(registry.RegistryError, match="reserved"):
        fw.register(b, "velocity-net", alias="v1", dir=store_dir)
    with pytest.raises(RunNotFoundError):
        fw.register("no-such-run", "velocity-net", dir=store_dir)


def test_concurrent_registrations_are_all_kept(store_dir):
    ids = _runs(store_dir, 8)
    barrier = threading.Barrier(len(ids))
    errors = []

    def register(run_id: str) -> None:
        try:
            barrier.wait(timeout=60)
            fw.register(run_id, "shared", alias=f"by-{run_id[-8:]}", dir=store_dir)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    entry = registry.model("shared", dir=store_dir)
    assert sorted(entry.versions) == sorted(ids)
    assert {registry.resolve("shared", f"by-{i[-8:]}", dir=store_dir) for i in ids} == set(ids)


def test_hostile_names_and_entries(store_dir, tmp_path):
    (run_id,) = _runs(store_dir, 1)
    for name in ("../x", "..", "a/b", ".hidden", "", "x" * 200, "a\x00b"):
        with pytest.raises(registry.RegistryError):
            fw.register(run_id, name, dir=store_dir)
    with pytest.raises(registry.RegistryError):
        fw.register(run_id, "ok", alias="../prod", dir=store_dir)
    with pytest.raises(InvalidRunRefError):
        fw.register("../..", "ok", dir=store_dir)
    fw.register(run_id, "ok", alias="prod", dir=store_dir)
    folder = store_dir / "registry" / "ok"
    # Entries naming paths, damaged files and links are skipped, not followed.
    stamp = "20990101T000000.000000"
    (folder / f"{stamp}-aaaaaa.json").write_text(json.dumps({"run": "../../etc", "alias": "prod"}))
    (folder / f"{stamp}-bbbbbb.json").write_text('{"run": "half')
    outside = tmp_path / "evil.json"
    outside.write_text(json.dumps({"run": "elsewhere", "alias": "prod"}))
    os.symlink(outside, folder / f"{stamp}-cccccc.json")
    assert registry.resolve("ok", "prod", dir=store_dir) == run_id
    assert registry.model("ok", dir=store_dir).versions == [run_id]
    # A registry folder that is a link is neither read nor written through.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, store_dir / "registry" / "linked")
    assert [m.name for m in registry.models(dir=store_dir)] == ["ok"]
    with pytest.raises(registry.RegistryError, match="link"):
        fw.register(run_id, "linked", dir=store_dir)
    assert list(elsewhere.iterdir()) == []


def test_cli_register_alias_list_show(store_dir):
    a, b = _runs(store_dir, 2)
    cli = CliRunner()

    def call(*args: str) -> str:
        out = cli.invoke(main, ["registry", *args, "--dir", str(store_dir)])
        assert out.exit_code == 0, out.output
        return out.output

    assert "no registered models" in call("list")
    assert call("register", a, "velocity-net", "--alias", "prod").strip() == \
        "velocity-net v1 (prod)"
    assert call("register", b, "velocity-net").strip() == "velocity-net v2"
    assert call("alias", "velocity-net", "prod", "v2").strip() == f"velocity-net@prod -> v2 ({b})"
    listed = json.loads(call("list", "--json"))
    assert listed == [registry.model("velocity-net", dir=store_dir).as_dict()]
    assert listed[0]["aliases"] == {"prod": b}
    shown = json.loads(call("show", "velocity-net", "--json"))
    assert [(v["version"], v["run"], v["aliases"]) for v in shown["versions"]] == \
        [("v1", a, []), ("v2", b, ["prod"])]
    text = call("show", "velocity-net")
    assert "v2" in text and b in text and "prod" in text
    bad = cli.invoke(main, ["registry", "show", "nothing", "--dir", str(store_dir)])
    assert bad.exit_code == 1 and "no model registered as 'nothing'" in bad.output
