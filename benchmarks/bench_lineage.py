"""Lineage and store size over a store of many runs: python benchmarks/bench_lineage.py

What `flowillower show` / the run page pay for a run's lineage DAG (`lineage.graph`: every
run's `inputs/` folder looked at once), and what `flowillower du` pays (`store.usage
.measure`: every file lstat-ed once, by kind). Baselines from the same run: a naive
lineage scan (`Path.rglob("inputs/*.json")` over the store, every record parsed), a naive
total size (`Path.rglob("*")` + `stat`, total only, no kinds) and GNU `du -sb`.

The store: one real run (values, two images, an artifact) copied `--runs` times under new
ids; every 10th run used an artifact of the one before it (a chain of lineage records).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from flowillower.lineage import graph
from flowillower.run import Run
from flowillower.store.catalog import Store
from flowillower.store.usage import measure


def _build(root: Path, runs: int) -> list[str]:
    seed = Run("bench", "seed", dir=root, snapshot=False)
    for step in range(50):
        seed.log_metrics({"loss": 1.0 / (step + 1)}, step)
    for step in range(2):
        seed.log_image("sample", np.zeros((16, 16, 3)), step=step)
    (root.parent / "w.bin").write_bytes(b"\0" * 4096)
    seed.log_artifact("weights", root.parent / "w.bin", step=0)
    seed.finish()
    ids = []
    for i in range(runs):
        run_id = f"20260101-{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}-{i:08x}"
        folder = root / "runs" / run_id
        shutil.copytree(seed.dir, folder)
        meta = json.loads((folder / "run.json").read_text())
        (folder / "run.json").write_text(json.dumps({**meta, "id": run_id, "name": f"r{i}"}))
        if i % 10 == 0 and ids:
            (folder / "inputs").mkdir()
            (folder / "inputs" / "20260101T000000.000000-abcdef.json").write_text(json.dumps(
                {"run": ids[-1], "artifact": "weights", "via": None, "time": 0.0}))
        ids.append(run_id)
    shutil.rmtree(seed.dir)
    return ids


def _naive_lineage(root: Path, run_id: str) -> int:
    edges = 0
    for path in (root / "runs").rglob("inputs/*.json"):
        doc = json.loads(path.read_text())
        edges += doc["run"] == run_id or path.parent.parent.name == run_id
    return edges


def _naive_total(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _du(root: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(root)], capture_output=True, text=True,
                              check=True).stdout.split()[0])


def _time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    opts, _unknown = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / ".flowillower"
        ids = _build(root, opts.runs)
        store = Store(root)
        store.sync()  # the index is warm, as in a UI server or after `ls`
        target = ids[10 * (len(ids) // 20)]
        got = graph(store, target)
        assert got["edges"], "the benchmark's run must have lineage"
        usage = measure(root)
        assert usage.total == _naive_total(root)
        rows = [
            ("lineage DAG of one run (lineage.graph)", _time(lambda: graph(store, target),
                                                             opts.repeats)),
            ("  baseline: rglob inputs/*.json + parse", _time(lambda: _naive_lineage(root, target),
                                                              opts.repeats)),
            ("du by run and kind (usage.measure)", _time(lambda: measure(root), opts.repeats)),
            ("  baseline: rglob + stat, total only", _time(lambda: _naive_total(root),
                                                           opts.repeats)),
            ("  baseline: du -sb (GNU coreutils)", _time(lambda: _du(root), opts.repeats)),
        ]
    print(f"bench_lineage: {opts.runs} runs, median of {opts.repeats}")
    print(f"{'what':48} {'ms':>9}")
    for what, seconds in rows:
        print(f"{what:48} {seconds * 1000:9.1f}")


if __name__ == "__main__":
    main()
