"""A remote replay task carries only the checkpoint files its segment reads (issue 18,
item 2): the start it enters at, the inner-loop ends of iterations it skips, the final
state, and the earlier files their de-duplicated tensors point into; each file is one
shared archive (one `ray.put`), and the values stay bit-identical to a local replay.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import flowillower as fw
from flowillower.hindsight.ckpt_store import CheckpointStore
from flowillower.hindsight.executor import Executor, Task, TaskResult
from flowillower.hindsight.task import (
    Packer,
    checkpoint_archive,
    needed_files,
    run_payload,
    unpack_result,
)
from tests.test_hindsight_replay import (
    make_project,
    no_setup_cost,
    quiet,
    run_ids,
    run_script,
    values,
)


def _members(data: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return sorted(m.name.rsplit("/", 1)[-1] for m in tar.getmembers() if m.isfile())


def _entries(run_dir: Path) -> dict[tuple[str, int, int], dict]:
    return CheckpointStore(run_dir).entries


def test_needed_files_follow_the_plan_and_the_shared_tensors(tmp_path: Path) -> None:
    """A frozen module is written once (file 0) and pointed into by later files: a
    segment entering at iteration 3 needs start(3) and exactly the files loading it
    opens; skipping iterations adds their inner-loop ends (and what those point into);
    a run recorded before `refs` ships all."""
    torch.manual_seed(0)
    net, frozen = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    run = fw.init(dir=tmp_path, snapshot=False)
    with fw.checkpointing(net=net, frozen=frozen, opt=opt, every=1):
        for _epoch in fw.loop("epoch", range(6)):
            for _step in fw.loop("step", range(2)):
                opt.zero_grad()
                net(torch.randn(4, 3)).sum().backward()
                opt.step()
    fw.finish()
    store = CheckpointStore(run.dir)
    entries = store.entries

    def read_by_load(*keys: tuple[str, int, int]) -> set[str]:
        """The files loading these captures actually opens (the reader's own record)."""
        files: set[str] = set()
        for key in keys:
            entry = entries[key] if key[0] != "final" else store.final()
            store.load(entry)
            files |= {store.dir.joinpath(e["file"]).name for e in entries.values()
                      if e["seq"] in store.last_used}
        return files

    first = entries[("start", 0, 0)]
    assert first["seq"] in entries[("start", 3, 0)]["refs"]  # the frozen module, file 0
    plan = {"first": 3, "stop": 6, "restore_first": True, "skip": []}
    want = read_by_load(("start", 3, 0))
    assert first["file"] in want and needed_files(run.dir, plan) == sorted(want)
    plan = {"first": 3, "stop": 6, "restore_first": True, "skip": [4, 5],
            "restore_final": True}
    want = read_by_load(("start", 3, 0), ("inner", 4, 0), ("inner", 5, 0), ("final", 0, 0))
    assert needed_files(run.dir, plan) == sorted(want)
    assert len(want) < len(entries)

    manifest = run.dir / "checkpoints" / "manifest.jsonl"
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    manifest.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "refs"}) + "\n"
                                for x in lines))
    assert needed_files(run.dir, plan) is None  # older runs: the whole folder goes


OLD = '''
    import time
    import numpy as np
    import flowillower as fw
    rng = np.random.RandomState(0)
    w = np.zeros(2048)
    with fw.checkpointing(w=w, rng=rng, every=1):
        for epoch in fw.loop("epoch", range(6)):
            for step in fw.loop("step", range(3)):
                w += 0.1 * rng.randn(2048)
                time.sleep(0.05)
            fw.log("loss", float(w.sum()))
'''
NEW = OLD.replace("                time.sleep(0.05)\n", "                time.sleep(0.05)\n"
                  "                fw.log(\"wdot\", float(w @ w))\n")


class PayloadExecutor(Executor):
    """Packs each task as a remote executor does, keeps the payload and what each of
    its checkpoint archives holds, then runs the payload the way a worker does (a
    private folder, no driver path)."""

    def __init__(self, workers: int) -> None:
        super().__init__(workers)
        self.packer = Packer()
        self.shipped: list[dict] = []

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        results = {}
        for task in tasks:
            payload = self.packer.pack(task)
            parts = [self.packer.shared(k) for k in payload.ckpt_parts]
            self.shipped.append({"plan": payload.plan, "parts": list(payload.ckpt_parts),
                                 "files": [_members(p) for p in parts],
                                 "bytes": sum(len(p) for p in parts),
                                 "payload": payload.to_json()})
            out = run_payload(payload, self.packer.shared(payload.tree_key), *parts)
            task.scratch.mkdir(parents=True, exist_ok=True)
            unpack_result(task.scratch, out)
            results[task.id] = TaskResult(task.id, out["returncode"], out["seconds"])
            on_done(task, results[task.id])
        return results


def test_each_task_ships_only_its_captures_and_values_match_local(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_setup_cost(monkeypatch)
    root = make_project(tmp_path / "p")
    run_script(root, "train.py", OLD)
    local_root = tmp_path / "local"
    shutil.copytree(root, local_root)
    for project in (root, local_root):
        (project / "train.py").write_text(textwrap.dedent(NEW).lstrip())
    (run_id,) = run_ids(root / ".flowillower")
    run_dir = root / ".flowillower" / "runs" / run_id
    entries = _entries(run_dir)

    executor = PayloadExecutor(workers=2)
    remote = fw.replay("wdot", dir=root, workers=2, yes=True, echo=quiet, executor=executor)
    assert remote.ok, str(remote)
    local = fw.replay("wdot", dir=local_root, workers=1, yes=True, echo=quiet)
    assert local.ok, str(local)
    assert len(executor.shipped) == 2  # the run was split in two segments

    whole = len(checkpoint_archive(run_dir))
    firsts = []
    for task in executor.shipped:
        first = task["plan"]["first"]
        firsts.append(first)
        record, *captures = task["files"]
        assert record == sorted(["manifest.jsonl", f"{run_id}.jsonl"])
        # An inner-loop statement: every iteration re-executed from the segment's start.
        assert captures == [[entries[("start", first, 0)]["file"]]]
        assert task["bytes"] < whole / 4
        assert str(root) not in task["payload"] and str(tmp_path) not in task["payload"]
    assert sorted(firsts)[0] == 0 and sorted(firsts)[1] > 0
    # One archive per file for the whole replay: the record is shared, not packed twice.
    keys = [k for task in executor.shipped for k in task["parts"]]
    assert len(executor.packer.ckpts) == len(set(keys)) == 3

    (local_id,) = run_ids(local_root / ".flowillower")
    got = values(run_dir, "wdot", replayed=True)
    want = values(local_root / ".flowillower" / "runs" / local_id, "wdot", replayed=True)
    assert len(got) == 18 and got == want  # bit for bit: floats compared exactly
