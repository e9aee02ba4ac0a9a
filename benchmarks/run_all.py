"""Run every benchmark in this folder, one after another: python benchmarks/run_all.py

Each benchmark (every `bench_*.py`, e.g. bench_checkpoint_trust.py and bench_resolve.py)
prints its own table, with a baseline measured in the same run: a naive implementation,
or the package before a change, unpacked from git (`_baseline.py`). Arguments are passed
to every benchmark.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent


def main() -> int:
    failed = []
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(script), *sys.argv[1:]])
        print(f"({script.name}: {time.perf_counter() - t0:.0f} s, exit {code})", flush=True)
        if code:
            failed.append(script.name)
    if failed:
        print("failed:", ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
