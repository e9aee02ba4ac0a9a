"""What filling the model page's "compare with" list costs: a store of 1,000 runs, one in
ten with a model graph, asked through the app's HTTP stack (Starlette's test client).

Ours: one `GET /api/models` (server/model_runs.py). Baseline measured in the same run:
what the page would do without it, one `GET /api/runs/ID/models` per run of the table.
Both must find the same runs.
Run: python benchmarks/bench_model_runs.py [--runs 1000] [--every 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

from flowillower.run import Run
from flowillower.server.app import create_app
from flowillower.server.demo import demo_graph


def make_store(root: Path, runs: int, every: int) -> set[str]:
    """`runs` small runs; every `every`-th gets the demo model graph. Returns their ids."""
    with_graph, graph = set(), demo_graph()
    for i in range(runs):
        run = Run("bench", f"run-{i}", dir=root, snapshot=False)
        run.log_metrics({"loss": 1.0 / (i + 1)}, 0)
        if i % every == 0:
            run.write_json("model/graph.json", graph)
            with_graph.add(run.id)
        run.finish()
    return with_graph


def best_of(fn, repeats: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    opts = parser.parse_args()
    warnings.simplefilter("ignore")  # the test client's httpx deprecation notice
    from starlette.testclient import TestClient

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / ".flowillower"
        t0 = time.perf_counter()
        expected = make_store(root, opts.runs, opts.every)
        made = time.perf_counter() - t0
        with TestClient(create_app(root), base_url="http://127.0.0.1") as client:
            ids = [r["id"] for r in client.get("/api/runs", params={"limit": 5000,
                                                                    "hidden": True}).json()["rows"]]
            assert len(ids) == opts.runs, len(ids)

            def ours() -> set[str]:
                return {r["id"] for r in client.get("/api/models").json()["runs"]}

            def baseline() -> set[str]:
                return {i for i in ids if client.get(f"/api/runs/{i}/models").json()["models"]}

            t_ours, got = best_of(ours, opts.repeats)
            t_base, got_base = best_of(baseline, opts.repeats)
    assert got == got_base == expected, (len(got), len(got_base), len(expected))
    print(f"{opts.runs:,} runs ({len(expected):,} with a model graph; store built in "
          f"{made:.1f} s), best of {opts.repeats}")
    print(f"{'case':<52}{'seconds':>10}")
    print(f"{'GET /api/models (one request)':<52}{t_ours:>10.4f}")
    print(f"{'baseline: GET /api/runs/ID/models per run':<52}{t_base:>10.4f}")
    print(f"speed-up: {t_base / t_ours:.1f}x")


if __name__ == "__main__":
    main()
