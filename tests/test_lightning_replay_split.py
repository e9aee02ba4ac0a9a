"""One Lightning run's epochs replayed over several workers: real Lightning, CPU.

The 6-epoch run of test_lightning_replay.py (Adam, StepLR, dropout, shuffled batches,
validation) is recorded once for the module with `FlowillowerCheckpoint`. A statement
added to `training_step` makes every epoch train again; with `workers=2` or `3` the run's
epochs are shared: a worker given [a, b) restores the capture of epoch a-1 and trains
epochs a..b-1 only. Its values must be bit-identical to a fresh run of the edited
script and to the replay by one worker; a worker that fails fails the run's replay and
nothing is stored.

The cost model only splits where it pays: on this box the process start-up (3-5 s for
torch and Lightning) outweighs 6 epochs of 12 small batches, so the end-to-end tests fix
the per-worker cost the planner estimates (`EpochSplit.of`) to split anyway.
"""

from __future__ import annotations

import io
import pickle
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

pl = pytest.importorskip("lightning.pytorch")
torch = pytest.importorskip("torch")

import flowillower as fw  # noqa: E402
from flowillower.hindsight import epoch_split  # noqa: E402
from flowillower.hindsight.executor import Executor, Task, TaskResult  # noqa: E402
from flowillower.hindsight.task import Packer, unpack_result  # noqa: E402
from flowillower.integrations.lightning_state import LightningCheckpoints, checkpoint_dir  # noqa: E402
from flowillower.store.reader import RunReader  # noqa: E402
from tests.conftest import clean_env  # noqa: E402
from tests.test_hindsight_replay import make_project, run_script  # noqa: E402
from tests.test_lightning_replay import SCRIPT  # noqa: E402

# Per batch (blocks skipping) and per epoch, both reading state carried across epochs.
STEP = '''        note("train")
        fw.log("g_NAME", float(self.net[0].weight.detach().sum()) + self.trainer.global_step)
'''
EPOCH_END = '''    def on_train_epoch_end(self):
        fw.log("w_NAME", float(self.net[0].weight.detach().norm()) + sum(self.step_losses)
               + self.lr_schedulers().get_last_lr()[0])
'''


def edited(tag: str) -> str:
    """The recorded script with the two statements, logging g_<tag> and w_<tag>."""
    new = textwrap.dedent(SCRIPT).lstrip()
    new = new.replace('        note("train")\n', STEP.replace("NAME", tag), 1)
    new = new.replace("    def on_train_epoch_end(self):\n", EPOCH_END.replace("NAME", tag))
    # After fit, outside any epoch: kept from the worker that ends the run only.
    new += f'fw.log("a_{tag}", float(trainer.global_step) + float(trainer.current_epoch))\n'
    assert new.count("fw.log(") == 3
    return new


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """(project root, the recorded run's folder): 6 epochs x 12 batches, captured."""
    root = make_project(tmp_path_factory.mktemp("lsplit") / "proj")
    run_script(root, "train.py", SCRIPT)
    (run_dir,) = (root / ".flowillower" / "runs").iterdir()
    return root, run_dir


@pytest.fixture(scope="module")
def fresh(recorded, tmp_path_factory) -> dict[str, dict[tuple, float]]:
    """g_fresh / w_fresh of the edited script run from scratch in this process."""
    root, _run_dir = recorded
    store = tmp_path_factory.mktemp("fresh") / ".flowillower"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("BATCH_LOG", raising=False)
        patch.setenv("FLOWILLOWER_DIR", str(store))
        patch.chdir(root)
        exec(compile(edited("fresh"), str(root / "train.py"), "exec"), {"__name__": "m"})
        fw.finish()
    return {kind: values(store, f"{kind}_fresh") for kind in ("g", "w", "a")}


def cheap_workers(monkeypatch) -> None:
    """The planner's per-worker cost fixed at one recorded epoch's (see the module's
    docstring): the epochs are shared among up to as many workers as asked."""
    real = epoch_split.EpochSplit.of.__func__
    monkeypatch.setattr(epoch_split.EpochSplit, "of", classmethod(
        lambda cls, *a: _cheap(real(cls, *a))))


@pytest.fixture
def cheap(monkeypatch) -> None:
    cheap_workers(monkeypatch)


def values(store: Path, name: str) -> dict[tuple, float]:
    out = {}
    for run in sorted((store / "runs").iterdir()):
        data = RunReader(run).load([name])
        if name in data.series:
            s = data.series[name]
            for coords, step, value in zip(data.ctx_coords[s.ctx], s.step.tolist(),
                                           s.values.tolist()):
                out[(tuple(int(c) for c in coords if c >= 0), step)] = value
    return out


def replay(root: Path, store: Path, tag: str, workers: int, tmp: Path):
    script = tmp / f"train_{tag}.py"
    script.write_text(edited(tag))
    printed: list[str] = []
    report = fw.replay(f"g_{tag},w_{tag},a_{tag}", dir=store.parent, script=script,
                       workers=workers, yes=True, echo=lambda *a, **k: printed.append(
                           " ".join(map(str, a))))
    return report, "\n".join(printed)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_shared_epochs_give_the_values_of_a_fresh_run(
        recorded, fresh, cheap, workers: int, tmp_path: Path) -> None:
    root, run_dir = recorded
    tag = f"x{workers}"
    report, printed = replay(root, root / ".flowillower", tag, workers, tmp_path)
    assert report.ok, str(report)
    outcome = report.runs[0]
    assert "every epoch re-executed: the statement(s) at line" in outcome.strategy
    if workers == 1:
        assert outcome.tasks == 1
    else:
        assert outcome.tasks >= workers  # the epochs really were shared
    got = {kind: values(root / ".flowillower", f"{kind}_{tag}") for kind in ("g", "w", "a")}
    assert [c for c, _ in got["w"]] == [(e,) for e in range(6)]
    assert len(got["g"]) == 6 * 12  # one per training batch, each epoch from one worker
    assert got["g"] == fresh["g"] and got["w"] == fresh["w"]  # bit-identical
    # After fit: one value, from the share that ends the run (the others stopped early).
    assert len(RunReader(run_dir).load([f"a_{tag}"]).series[f"a_{tag}"].values) == 1
    assert got["a"] == fresh["a"] and len(fresh["a"]) == 1
    assert len(set(got["w"].values())) == 6  # a real comparison: values moved
    assert RunReader(run_dir).load([f"w_{tag}"]).series[f"w_{tag}"].replayed.all()


def _tasks_line(printed: str) -> str:
    return next(line for line in printed.splitlines() if " task" in line and "estimated" in line)


def test_the_schedule_prints_the_split_only_where_it_pays(recorded, tmp_path: Path,
                                                          monkeypatch) -> None:
    """Declined at the prompt: when a worker's start-up costs more than all the epochs
    (as on a loaded box: 3-5 s against 6 short epochs; fixed here, the recorded times
    vary with the load) one worker does it all; with a start-up of one epoch's time the
    epochs are shared and the schedule says how."""
    root, _run_dir = recorded
    script = tmp_path / "train.py"
    script.write_text(edited("plan"))

    def schedule(workers: int) -> str:
        printed: list[str] = []
        report = fw.replay("g_plan,w_plan", dir=root, script=script, workers=workers,
                           echo=printed.append, confirm=lambda _question: False)
        assert report.cancelled
        return "\n".join(printed)

    real = epoch_split.EpochSplit.of.__func__
    with monkeypatch.context() as patch:
        patch.setattr(epoch_split.EpochSplit, "of", classmethod(
            lambda cls, *a: _costly(real(cls, *a))))
        assert "1 task (whole script)" in _tasks_line(schedule(3))
    cheap_workers(monkeypatch)
    printed = schedule(3)
    line = _tasks_line(printed)
    spans = [(int(a), int(b)) for a, b in re.findall(r"\[(\d+),(\d+)\)", line)]
    assert len(spans) >= 3 and spans[0][0] == 0 and spans[-1][1] == 6
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # they tile epochs 0..5
    assert ("note: with several workers, the epochs may be shared among them: a worker "
            "restores the capture of the epoch before its first (it may start at epochs "
            "1-5)") in printed


def _costly(split):
    split.fixed = 10 * sum(split.times)  # sharing would save under 5%
    return split


def _cheap(split):
    if split is not None:
        split.fixed = sum(split.times) / len(split.times)
    return split


def test_a_share_starts_only_after_a_captured_epoch(recorded, cheap,
                                                    tmp_path: Path) -> None:
    """Without a usable capture of epoch 2, no worker may start at epoch 3."""
    import json

    from flowillower.hindsight.analysis import analyze
    from flowillower.hindsight.planner import load_run_info, plan_run, schedule
    from flowillower.integrations.lightning_state import ledger_file

    root, run_dir = recorded
    copy = tmp_path / ".flowillower"
    shutil.copytree(root / ".flowillower", copy, ignore=shutil.ignore_patterns("git"))
    run_copy = copy / "runs" / run_dir.name
    source = edited("p")
    forget = LightningCheckpoints(run_copy).epochs[2]["file"]
    for forget_epoch, workers in ((None, 2), (2, 2), (2, 5)):
        if forget_epoch is not None:
            ledger = ledger_file(run_copy)
            ledger.write_text("".join(line + "\n" for line in ledger.read_text().splitlines()
                                      if json.loads(line)["file"] != forget))
        plan = plan_run(load_run_info(run_copy), analyze(source, ["g_p", "w_p"], None), source)
        schedule([plan], workers)
        starts = [t.first for t in plan.tasks]
        assert len(starts) >= 2 and starts[0] == 0 and plan.tasks[-1].stop == 6
        assert all(t.loop == "epoch" for t in plan.tasks)
        assert [t.emit_run_level for t in plan.tasks] == [False] * (len(starts) - 1) + [True]
        if forget_epoch is not None:
            assert 3 not in starts, starts
        else:
            # Cut where the recorded epoch times are halved: the shares differ by less
            # than one epoch (and the capture loaded by the second).
            head, tail = plan.tasks
            assert abs(head.estimate - tail.estimate) <= max(plan.epochs.times) + 0.1


def test_the_files_a_share_starts_from(recorded) -> None:
    """What an executor without a shared disk would hand the worker starting at epoch
    e: the capture of e-1 and the earlier files its tensors point into, and nothing else."""
    _root, run_dir = recorded
    captures = LightningCheckpoints(run_dir)
    for epoch in range(6):
        names = captures.needed_files(epoch)
        entry = captures.epochs[epoch]
        assert names[0] == entry["file"]
        assert names[1:] == [captures.files[seq] for seq in entry["refs"]]
        # Restoring needs no other file: the others removed, the capture still loads.
        keep = LightningCheckpoints(run_dir)
        keep.files = {seq: name for seq, name in keep.files.items() if name in names}
        assert keep.load(epoch)["loops"]


def test_a_failed_share_fails_the_run_and_stores_nothing(recorded, cheap,
                                                         tmp_path: Path) -> None:
    """The captures a second worker would start from are corrupted (same size, other
    bytes): that worker fails on the digest check, the run's replay fails with the
    reason, no retry trains around it, and none of the first worker's values is kept."""
    root, run_dir = recorded
    copy = tmp_path / "copy" / ".flowillower"
    shutil.copytree(root / ".flowillower", copy)
    run_copy = copy / "runs" / run_dir.name
    captures = LightningCheckpoints(run_copy)
    for epoch in range(1, 5):
        target = checkpoint_dir(run_copy) / captures.epochs[epoch]["file"]
        data = bytearray(target.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    before = set(run_copy.glob("replays/*.fwl"))  # other tests' replays of the shared run
    report, _printed = replay(root, copy, "bad", 2, tmp_path)
    outcome = report.runs[0]
    assert not report.ok and outcome.status == "failed"
    assert "UntrustedCheckpoint" in outcome.message and "sha256" in outcome.message
    assert re.search(r"worker 1 \(epochs [1-5]\.\.5\) exited with status 1", outcome.message)
    assert values(copy, "g_bad") == {} and values(copy, "w_bad") == {}
    assert set(run_copy.glob("replays/*.fwl")) == before  # nothing of this replay


class _Counted(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(4, 1)
        self.trained: list[int] = []

    def training_step(self, batch, batch_idx):
        self.trained.append(self.current_epoch)
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("min_epochs,captures", [(None, "none"), (5, "none"),
                                                 (None, "another trainer's")])
def test_a_share_without_usable_captures_trains_from_the_start_then_stops(
        recorded, tmp_path: Path, monkeypatch, min_epochs, captures) -> None:
    """A worker handed epochs [2, 4) of 6 whose captures did not reach it (an executor
    that ships none), or were taken of another trainer (other optimizers), trains from
    epoch 0 and stops after epoch 3, marking epochs 2 and 3 only; `min_epochs=5` keeps it
    training to epoch 4 (the driver drops those values)."""
    from flowillower.hindsight import session
    from flowillower.integrations.lightning import FlowillowerCheckpoint, FlowillowerLogger

    marks: list[str] = []

    class Replay:
        plan = {"run_dir": str(recorded[1] if captures != "none" else tmp_path / "none"),
                "callback_loop": "epoch",
                "first": 2, "stop": 4, "post_loop": False, "scratch": str(tmp_path)}

        def mark(self, text: str) -> None:
            marks.append(text)

    monkeypatch.setattr(session, "current", Replay)
    data = torch.utils.data.TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    logger = FlowillowerLogger(project="share", dir=tmp_path / ".flowillower")
    module = _Counted()
    trainer = pl.Trainer(max_epochs=6, min_epochs=min_epochs, logger=logger,
                         callbacks=[FlowillowerCheckpoint()], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu")
    trainer.fit(module, torch.utils.data.DataLoader(data, batch_size=8))
    logger.finish()
    assert marks == ["iter 2", "iter 3"]
    last = 4 if min_epochs else 3
    assert module.trained == [e for e in range(last + 1) for _ in range(2)]


class IsolatedWorkers(Executor):
    """An executor as Ray's or Slurm's: each task packed (`Packer`), its shared archives
    (`ckpt_parts`, each shipped once) unpacked by `run_payload` in a process and folder
    of its own while the project (repo and store) is renamed away. Keeps each worker's
    log and the files it was handed, by the epoch its share starts at."""

    def __init__(self, project: Path, workers: int) -> None:
        super().__init__(workers)
        self.project = project
        self.logs: dict[int, str] = {}
        self.members: dict[int, set[str]] = {}

    def run(self, tasks: list[Task], on_done: Callable[[Task, TaskResult], None],
            on_tick: Callable[[], None] | None = None) -> dict[str, TaskResult]:
        code = ("import pickle; from pathlib import Path; "
                "from flowillower.hindsight.task import run_payload; "
                "p, tree, parts = pickle.loads(Path('job.pkl').read_bytes()); "
                "r = run_payload(p, tree, *parts); "
                "Path('out.pkl').write_bytes(pickle.dumps(r))")
        packer, works, firsts = Packer(), [], []
        base = Path(tempfile.mkdtemp(prefix="fw-lsplit-"))  # outside the project
        for n, task in enumerate(tasks):
            payload = packer.pack(task)
            assert str(self.project) not in payload.to_json()  # no driver path travels
            parts = [packer.shared(k) for k in payload.ckpt_parts]
            handed = set().union(*map(_tar_files, parts)) if parts else set()
            # The one-archive form (`ckpt_key`) holds exactly the files of the parts.
            assert _tar_files(packer.shared(payload.ckpt_key)) == handed
            firsts.append(int(payload.plan["first"]))
            self.members[firsts[-1]] = handed
            works.append(base / str(n))
            works[-1].mkdir()
            (works[-1] / "job.pkl").write_bytes(pickle.dumps(
                (payload.__dict__, packer.shared(payload.tree_key), parts)))
        hidden = self.project.with_name(self.project.name + "-hidden")
        self.project.rename(hidden)
        try:  # the workers side by side, as a cluster's nodes would run them
            procs = [subprocess.Popen([sys.executable, "-c", code], cwd=work,
                                      env=clean_env(), stderr=subprocess.PIPE, text=True)
                     for work in works]
            errors = [proc.communicate(timeout=300)[1] for proc in procs]
        finally:
            hidden.rename(self.project)
        results = {}
        for task, work, first, proc, err in zip(tasks, works, firsts, procs, errors):
            assert proc.returncode == 0, err
            out = pickle.loads((work / "out.pkl").read_bytes())
            task.scratch.mkdir(parents=True, exist_ok=True)
            unpack_result(task.scratch, out)
            self.logs[first] = out["files"].get("output.log", b"").decode()
            results[task.id] = TaskResult(task.id, out["returncode"], out["seconds"])
            on_done(task, results[task.id])
        shutil.rmtree(base)
        return results


def _tar_files(data: bytes | None) -> set[str]:
    if data is None:
        return set()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name for m in tar.getmembers() if m.isfile()}


def test_a_share_on_a_worker_without_the_drivers_disk_restores_its_capture(
        recorded, fresh, cheap, tmp_path: Path) -> None:
    """Shares run as a cluster executor runs them (self-contained payloads, the project
    out of reach): the second share is handed the capture of the epoch before its first
    (with the manifest and digest record) and restores it instead of training from epoch
    0; the values are the fresh run's, bit for bit."""
    root, run_dir = recorded
    script = tmp_path / "train_iso.py"
    script.write_text(edited("iso"))
    iso = IsolatedWorkers(root, workers=2)
    report = fw.replay("g_iso,w_iso,a_iso", dir=root, script=script, workers=2, yes=True,
                       echo=lambda *a, **k: None, executor=iso)
    assert report.ok, str(report)
    assert report.runs[0].tasks == 2
    starts = sorted(iso.logs)
    assert starts[0] == 0 and len(starts) == 2
    second = iso.logs[starts[1]]
    assert (f"epochs {starts[1]}..5 are trained, from the capture of epoch "
            f"{starts[1] - 1}") in second, second
    assert "no capture reached this worker" not in second
    # The first share ships no capture; the second only those it restores from.
    assert iso.members[0] == set()
    inside = f"store/runs/{run_dir.name}/checkpoints/lightning"
    assert iso.members[starts[1]] == {
        *(f"{inside}/{n}" for n in LightningCheckpoints(run_dir).needed_files(starts[1] - 1)),
        f"{inside}/manifest.jsonl",
        f"store/local/checkpoints/{run_dir.name}.lightning.jsonl"}
    got = {kind: values(root / ".flowillower", f"{kind}_iso") for kind in ("g", "w", "a")}
    assert got["g"] == fresh["g"] and got["w"] == fresh["w"] and got["a"] == fresh["a"]
    assert len(got["g"]) == 6 * 12 and len(set(got["w"].values())) == 6
