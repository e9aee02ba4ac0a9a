"""`<store>/local/` records (pull provenance, checkpoint digests) follow their run's life."""

from __future__ import annotations

import flowillower as fw
from flowillower.store.catalog import Store
from flowillower.store.provenance import forget_run, local_dir, mark_pulled, pulled_info


def _run(name: str) -> str:
    run = fw.init(project="p", name=name, snapshot=False)
    fw.log("loss", 1.0)
    fw.finish()
    return run.id


def test_deleting_a_run_forgets_its_local_records_only(store_dir):
    gone, kept = _run("gone"), _run("kept")
    for run_id in (gone, kept):
        mark_pulled(store_dir, run_id, "origin", author="alice", host="elsewhere")
        ledger = local_dir(store_dir) / "checkpoints" / f"{run_id}.jsonl"
        ledger.parent.mkdir(parents=True, exist_ok=True)
        ledger.write_text('{"file": "a.pt"}\n')
    # A record of another run whose id merely starts with the deleted one's.
    prefixed = local_dir(store_dir) / "checkpoints" / f"{gone}x.jsonl"
    prefixed.write_text("{}\n")

    Store(store_dir).delete(gone)

    assert pulled_info(store_dir, gone) is None
    assert not (local_dir(store_dir) / "checkpoints" / f"{gone}.jsonl").exists()
    assert pulled_info(store_dir, kept)["author"] == "alice"
    assert (local_dir(store_dir) / "checkpoints" / f"{kept}.jsonl").read_text()
    assert prefixed.exists()


def test_forget_run_refuses_path_like_ids_and_never_follows_links(store_dir, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.json").write_text("keep me")
    local_dir(store_dir).mkdir(parents=True)
    (local_dir(store_dir) / "evil").symlink_to(outside)
    assert forget_run(store_dir, "victim") == 0
    assert forget_run(store_dir, "../outside/victim") == 0
    assert (outside / "victim.json").read_text() == "keep me"
