"""Code snapshots in a static export: size and time for runs of one repository.

A 144-file project (python, yaml, a few larger files, one over the 1 MB cap); `--runs`
runs, each after editing one file, so consecutive snapshots share all but one file.

Baselines from the same run:
* no code in the export (`export_site(..., snapshots=False)`): the time and bytes the code
  adds;
* each run's snapshot written out whole, per run (no dedupe by blob): what the export
  would weigh without storing each file once. Its size is computed from the very
  documents written (each tree entry's document counted once per run), with the same
  file:// twins.

Run: python benchmarks/bench_export_code.py [--runs N] [--files N]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from flowillower.run import Run
from flowillower.server.export import export_site

_ID = ["-c", "user.name=b", "-c", "user.email=b@b"]


def make_project(root: Path, files: int) -> None:
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    body = "def step(x, lr=0.1):\n    return x - lr * grad(x)  # one update\n"
    for i in range(files - 4):
        path = root / "src" / f"pkg{i // 30}" / f"module_{i:03d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f'"""Module {i}."""\n' + body * (20 + (i % 7) * 40))
    (root / "configs").mkdir()
    (root / "configs" / "base.yaml").write_text("lr: 0.1\nlayers: 12\n" * 50)
    (root / "README.md").write_text("# project\n" + "Some words.\n" * 200)
    (root / "data.csv").write_text("a,b,c\n" + "1,2,3\n" * 200_000)  # 1.2 MB: cut at 1 MB
    (root / "train.py").write_text("import src\nLR = 0\n")
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", *_ID, "-C", str(root), "commit", "-qm", "init"], check=True)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--files", type=int, default=144)
    args, _unknown = parser.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "proj"
        make_project(project, args.files)
        store = project / ".flowillower"
        here = os.getcwd()
        os.chdir(project)
        try:
            for i in range(args.runs):
                (project / "train.py").write_text(f"import src\nLR = {i}\n")
                run = Run("bench", f"r{i}", dir=store, snapshot=True)
                run.log_metrics({"loss": 1.0 / (i + 1)}, 0)
                run.finish()
        finally:
            os.chdir(here)
        rows = []
        for snapshots in (False, True):
            out = Path(tmp) / f"site-{snapshots}"
            t0 = time.perf_counter()
            result = export_site(store, out, snapshots=snapshots, media=False)
            rows.append((snapshots, time.perf_counter() - t0, folder_bytes(out), result, out))
        (_, t_none, b_none, _, _), (_, t_code, b_code, result, out) = rows
        code = out / "data" / "code"
        code_bytes = folder_bytes(code)
        naive = 0  # every run's files written again for that run, twins included
        for tree in (code / "trees").glob("*.json"):
            entries = json.loads(tree.read_text())["tree"]
            runs_of_tree = sum(1 for p in (out / "data" / "runs").glob("*/run.json")
                               if json.loads(p.read_text())["snapshot"] == tree.stem)
            per_run = sum(folder_bytes_of(code, e["blob"]) for e in entries)
            twin = tree.with_name(tree.name + ".js")
            naive += runs_of_tree * (per_run + tree.stat().st_size + twin.stat().st_size)
        st = result["code"]
        print(f"{args.runs} runs of one {args.files}-file project "
              f"({st['source_bytes'] / st['snapshots'] / 2**20:.1f} MB per snapshot, {st['snapshots']} "
              f"snapshots, "
              f"{st['blobs']} distinct files)")
        print(f"{'case':<48}{'MB':>9}{'seconds':>10}")
        print(f"{'export without code (baseline)':<48}{b_none / 2**20:>9.2f}{t_none:>10.2f}")
        print(f"{'export with code (files once per blob)':<48}{b_code / 2**20:>9.2f}"
              f"{t_code:>10.2f}")
        print(f"{'  of which data/code/':<48}{code_bytes / 2**20:>9.2f}")
        print(f"{'  naive: each run its own copy (same encoding)':<48}{naive / 2**20:>9.2f}")
        print(f"dedupe: the code weighs {code_bytes / naive:.1%} of the naive copy "
              f"({naive / code_bytes:.1f}x smaller)")


def folder_bytes_of(code: Path, blob: str) -> int:
    """Bytes of one file's document and its file:// twin."""
    doc = code / "blobs" / blob[:2] / f"{blob}.json"
    twin = doc.with_name(doc.name + ".js")
    return doc.stat().st_size + (twin.stat().st_size if twin.exists() else 0)


if __name__ == "__main__":
    main()
