"""Run every benchmark in this folder, one after another: python benchmarks/run_all.py

Each benchmark (every `bench_*.py`, e.g. bench_checkpoint_trust.py and bench_resolve.py)
prints its own table, with a baseline measured in the same run: a naive implementation,
or the package before a change, unpacked from git (`_baseline.py`).

By default the whole set runs in under 15 minutes on a 2-core box: the slow benchmarks get
the smaller settings in QUICK below (their own `--quick` or fewer epochs, runs, repeats).
Run a script alone for its full default, or `run_all.py --full` for all of them at full
size. Other arguments are passed to every benchmark after the quick settings (so they
override them); every benchmark ignores the arguments it does not know.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

# Per-script settings for the default (quick) run; each is one of the script's own options.
QUICK: dict[str, list[str]] = {
    "bench_checkpoint_trust.py": ["--quick"],
    "bench_demo.py": ["--same-process", "--epochs", "100", "--repeats", "1"],
    "bench_demo_steps.py": ["--epochs", "20"],
    "bench_finish.py": ["--repeats", "5"],
    "bench_hindsight.py": ["--epochs", "8", "--repeats", "1"],
    "bench_index.py": ["--runs", "300", "--repeats", "1"],
    "bench_integrations.py": ["--steps", "5000", "--repeats", "3"],
    "bench_lightning_replay.py": ["--epochs", "4", "--batches", "24", "--width", "128",
                                  "--workers", "2"],
    "bench_logging.py": ["--repeats", "3"],
    "bench_model.py": ["--rounds", "5"],
    "bench_resolve.py": ["--rounds", "1", "--repeats", "3"],
    "bench_replay_cluster.py": ["--epochs", "20", "--long-epochs", "100"],
    "bench_replay_watch.py": ["--epochs", "4", "--steps", "150"],
    "bench_server_stack.py": ["--seconds", "2"],
    "bench_sync.py": ["--runs", "300", "--filter-runs", "100"],
    "bench_system_metrics.py": ["--seconds", "12"],
    "bench_ui.py": ["--runs", "1000", "--chart-runs", "50"],
    "bench_ui_series.py": ["--small", "20x100000", "--large", "2000000"],
}


def main() -> int:
    extra = sys.argv[1:]
    full = "--full" in extra
    extra = [a for a in extra if a != "--full"]
    failed, total = [], time.perf_counter()
    for script in sorted(HERE.glob("bench_*.py")):
        quick = [] if full else QUICK.get(script.name, [])
        print(f"\n=== {script.name} {' '.join(quick + extra)} ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *quick, *extra])
        print(f"({script.name}: {time.perf_counter() - t0:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(script.name)
    print(f"\nall benchmarks: {time.perf_counter() - total:.0f} s"
          f" ({'full' if full else 'quick'} settings)")
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
