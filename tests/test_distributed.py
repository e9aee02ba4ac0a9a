"""Distributed jobs: rank 0 records by default; all ranks only when asked."""

from __future__ import annotations

import subprocess
import sys

import flowillower as fw
from flowillower.store.reader import RunReader

SCRIPT = """
import sys, flowillower as fw
fw.init(project="ddp", record_all_ranks=sys.argv[1] == "all")
for step in fw.loop("step", range(10)):
    fw.log("rank_value", float(fw.current_run().rank))
"""


def _launch(tmp_path, mode, env_extra):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    procs = []
    for rank in range(2):
        env = {**__import__("os").environ, "RANK": str(rank), "WORLD_SIZE": "2", **env_extra}
        procs.append(subprocess.Popen([sys.executable, str(script), mode], env=env, cwd=tmp_path))
    assert [p.wait(60) for p in procs] == [0, 0]


def test_only_rank_zero_records_by_default(tmp_path, store_dir):
    _launch(tmp_path, "rank0", {})
    runs = list((store_dir / "runs").iterdir())
    assert len(runs) == 1
    assert RunReader(runs[0]).load().series["rank_value"].values.tolist() == [0.0] * 10


def test_all_ranks_into_one_run(tmp_path, store_dir):
    _launch(tmp_path, "all", {"TORCHELASTIC_RUN_ID": "job42"})
    runs = list((store_dir / "runs").iterdir())
    assert len(runs) == 1 and runs[0].name == "dist-job42"
    assert sorted(p.name for p in runs[0].glob("data*.fwl")) == ["data.fwl", "data.rank1.fwl"]
    values = RunReader(runs[0]).load().series["rank_value"].values.tolist()
    assert sorted(values) == [0.0] * 10 + [1.0] * 10
    assert fw.dataframe(dir=store_dir)["status"].tolist() == ["success"]
