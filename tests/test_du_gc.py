"""Store size: `flowillower du` counts every byte by run and kind, and `gc --keep-last N
--older-than DAYS` removes media and checkpoints of old runs (asked first, `--dry-run`
shows only), never values, artifacts, running runs or anything behind a link."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main
from flowillower.run import Run
from flowillower.store.catalog import Store

DAY = 86400


def _files(folder: Path, pattern: str = "**/*") -> int:
    return sum(p.lstat().st_size for p in folder.glob(pattern)
               if p.is_file() and not p.is_symlink())


def _run(root: Path, tmp_path: Path, name: str, age_days: float, checkpoints: bool = False
         ) -> str:
    """A finished run `age_days` old with values, two images, an artifact and (when
    asked) real hindsight checkpoints."""
    run = fw.init(project="p", name=name, dir=root, snapshot=False)
    run.created = time.time() - age_days * DAY  # the run's start, as recorded in run.json
    (tmp_path / f"{name}.bin").write_bytes(os.urandom(3000))
    fw.log_artifact("weights", tmp_path / f"{name}.bin", step=0)
    state = {"w": np.arange(4096, dtype=np.float64)}
    if checkpoints:
        with fw.checkpointing(state=state):
            for epoch in fw.loop("epoch", range(3)):
                state["w"] += 1.0  # a changed tensor: each checkpoint writes it
                fw.log("loss", 1.0 / (epoch + 1))
    else:
        for epoch in fw.loop("epoch", range(3)):
            fw.log("loss", 1.0 / (epoch + 1))
    for step in range(2):
        fw.log_image("sample", np.random.default_rng(step).random((32, 32, 3)), step=step)
    fw.finish()
    return run.id


def _values(root: Path) -> dict[str, list[float]]:
    frame = fw.dataframe("loss", dir=root)
    return {run_id: sorted(group["loss"].tolist()) for run_id, group in frame.groupby("run_id")}


def _cli(*args: str, input: str | None = None) -> str:
    out = CliRunner().invoke(main, list(args), input=input)
    assert out.exit_code == 0, out.output
    return out.output


def test_du_counts_every_kind(store_dir, tmp_path):
    old = _run(store_dir, tmp_path, "old", 40, checkpoints=True)
    new = _run(store_dir, tmp_path, "new", 0)
    fw.register(new, "net", alias="prod", dir=store_dir)  # the registry: the store's own
    usage = json.loads(_cli("du", "--json", "--dir", str(store_dir)))
    runs = {r["id"]: r for r in usage["runs"]}
    for run_id in (old, new):
        folder = store_dir / "runs" / run_id
        assert runs[run_id]["values"] == _files(folder, "data*.fwl") > 0
        assert runs[run_id]["media"] == _files(folder / "media") > 2 * 1000
        assert runs[run_id]["artifacts"] == _files(folder / "artifacts") == 3000
        assert runs[run_id]["total"] == _files(folder)
    assert runs[old]["checkpoints"] == _files(store_dir / "runs" / old / "checkpoints") > 3 * 4096
    assert runs[new]["checkpoints"] == 0
    kinds = usage["by_kind"]
    assert kinds["checkpoints"] == runs[old]["checkpoints"]
    assert kinds["snapshots"] == _files(store_dir / "git")
    assert usage["total"] == sum(kinds.values()) == _files(store_dir)  # every byte, once
    assert kinds["store"] >= _files(store_dir / "registry") > 0
    assert [r["id"] for r in usage["runs"]] == [old, new]  # largest first
    text = _cli("du", "--dir", str(store_dir))
    assert "checkpoints" in text and old in text and "KiB" in text


def test_gc_keep_last_older_than_frees_media_and_checkpoints_never_values(store_dir, tmp_path):
    oldest = _run(store_dir, tmp_path, "oldest", 60, checkpoints=True)
    older = _run(store_dir, tmp_path, "older", 45)
    recent = _run(store_dir, tmp_path, "recent", 2)
    newest = _run(store_dir, tmp_path, "newest", 0, checkpoints=True)
    # A run still running (this process holds it open), 90 days old: never pruned.
    live = Run("p", "live", dir=store_dir, snapshot=False)
    live.created = time.time() - 90 * DAY
    live.log_image("sample", np.zeros((8, 8)), step=0)
    live.flush()
    values = _values(store_dir)
    before = {r["id"]: r for r in json.loads(_cli("du", "--json", "--dir", str(store_dir)))["runs"]}
    args = ["gc", "--keep-last", "1", "--older-than", "30", "--dir", str(store_dir)]

    dry = _cli(*args, "--dry-run")
    pruned = (before[oldest]["media"] + before[oldest]["checkpoints"] + before[older]["media"])
    files = sum(len(list((store_dir / "runs" / i / k).rglob("*.*")))
                for i in (oldest, older) for k in ("media", "checkpoints"))
    assert f"would free {pruned / 2**20:.1f} MiB in {files} file(s)" in dry
    assert "from 2 run(s); values stay" in dry and oldest in dry and older in dry
    assert "dry run: nothing deleted" in dry
    assert "dry run: nothing deleted" in _cli("gc", "--checkpoints", "--dry-run", "--dir",
                                              str(store_dir))
    assert (store_dir / "runs" / oldest / "checkpoints").is_dir()
    declined = _cli(*args, input="n\n")
    assert "nothing deleted" in declined
    assert (store_dir / "runs" / oldest / "media").is_dir()  # neither deleted anything

    done = _cli(*args, "-y")
    assert f"freed {pruned / 2**20:.1f} MiB of media and checkpoints" in done
    for run_id in (oldest, older):
        folder = store_dir / "runs" / run_id
        assert not (folder / "media").exists() and not (folder / "checkpoints").exists()
        assert _files(folder / "artifacts") == 3000  # artifacts are not media
    for run_id in (recent, newest):  # within 30 days: kept although not the newest one
        assert (store_dir / "runs" / run_id / "media").is_dir()
    assert (store_dir / "runs" / newest / "checkpoints").is_dir()
    assert (store_dir / "runs" / live.id / "media").is_dir()
    assert _values(store_dir) == values  # every value of every run is still there
    after = {r["id"]: r for r in json.loads(_cli("du", "--json", "--dir", str(store_dir)))["runs"]}
    assert sum(before[i]["total"] - after[i]["total"] for i in before) == pruned
    live.finish()


def test_gc_prune_never_follows_links(store_dir, tmp_path):
    run_id = _run(store_dir, tmp_path, "old", 50)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "keep.png").write_bytes(b"\x89PNG not the store's")
    media = store_dir / "runs" / run_id / "media"
    os.rename(media, tmp_path / "real-media")
    os.symlink(outside, media)
    os.symlink(outside, store_dir / "runs" / "20200101-000000-deadbeef")
    out = _cli("gc", "--older-than", "1", "-y", "--dir", str(store_dir))
    assert "from 0 run(s)" in out
    assert (outside / "keep.png").is_file() and media.is_symlink()
    assert Store(store_dir).runs()[0]["id"] == run_id
