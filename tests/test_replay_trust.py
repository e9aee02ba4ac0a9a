"""Runs from elsewhere are data, never code: replay neither executes a run that came from
someone else nor unpickles a checkpoint this machine did not write (issue 13, item 5).

Real scripts in real git repos, real worker processes. The training script writes a
marker file whenever it runs with $FW_TEST_MARKER set (a replay worker inherits it), so
"not executed" is a checked fact; the malicious checkpoints create a file when unpickled.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

import flowillower as fw
from flowillower.cli import main
from flowillower.hindsight import ledger
from flowillower.store.provenance import local_dir, mark_pulled
from flowillower.store.reader import RunReader
from tests.conftest import clean_env

PY = sys.executable

OLD = '''
    import os
    import numpy as np
    import flowillower as fw

    if os.environ.get("FW_TEST_MARKER"):
        with open(os.environ["FW_TEST_MARKER"], "a") as fh:
            fh.write("ran\\n")
    rng = np.random.RandomState(fw.arg("seed", 0))
    w = np.zeros(4)
    with fw.checkpointing(w=w, rng=rng, every=1):
        for epoch in fw.loop("epoch", range(3)):
            for step in fw.loop("step", range(4)):
                w += 0.1 * rng.randn(4)
            fw.log("loss", float(w.sum()))
'''
NEW = OLD.replace('            fw.log("loss", float(w.sum()))',
                  '            fw.log("loss", float(w.sum()))\n'
                  '            fw.log("wmax", float(w.max()))\n'
                  '            fw.log("wmin", float(w.min()))')


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)


def _project(path: Path, source: str = OLD) -> Path:
    """A git project with one recorded run of `source` (checkpoints every epoch)."""
    path.mkdir(parents=True)
    _git(path, "init", "-q")
    _git(path, "config", "user.email", "t@example.com")
    _git(path, "config", "user.name", "t")
    (path / "train.py").write_text(textwrap.dedent(source).lstrip())
    proc = subprocess.run([PY, "train.py"], cwd=path, env=clean_env(), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return path


def _run_dir(root: Path) -> Path:
    (run,) = [p for p in (root / ".flowillower" / "runs").iterdir() if p.is_dir()]
    return run


def _values(run_dir: Path, name: str) -> list[float]:
    series = RunReader(run_dir).load([name]).series
    return [float(v) for v in series[name].values] if name in series else []


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A recorded run, the new script in place, a reference run of the new script, and
    the marker path replay workers would write."""
    root = _project(tmp_path / "proj")
    ref = _project(tmp_path / "ref", NEW)
    (root / "train.py").write_text(textwrap.dedent(NEW).lstrip())
    marker = tmp_path / "executed"
    monkeypatch.setenv("FW_TEST_MARKER", str(marker))
    return {"root": root, "run": _run_dir(root), "ref": _run_dir(ref), "marker": marker,
            "store": root / ".flowillower"}


def _replay_cli(root: Path, *args: str):
    return CliRunner().invoke(main, ["replay", *args, "--dir", str(root)])


def test_pulled_run_is_not_executed_without_trust(project: dict) -> None:
    run = project["run"]
    mark_pulled(project["store"], run.name, "origin", author="alice", host="alices-box")
    result = _replay_cli(project["root"], "wmax", "-y")  # -y: no question, still no trust
    assert result.exit_code == 0, result.output
    assert "left out 1 run(s) from elsewhere" in result.output
    assert run.name in result.output and "pulled from origin" in result.output
    assert "--trust" in result.output and "--trust-author alice" in result.output
    assert not project["marker"].exists()  # the script never ran
    assert not (run / "replays").exists()
    # Another author's name does not let it in either.
    result = _replay_cli(project["root"], "wmax", "-y", "--trust-author", "bob")
    assert result.exit_code == 0 and "left out 1 run(s)" in result.output
    assert not project["marker"].exists()


def test_trust_author_and_trust_replay_pulled_runs(project: dict) -> None:
    run = project["run"]
    user = json.loads((run / "run.json").read_text())["user"]
    mark_pulled(project["store"], run.name, "origin", author=user, host="elsewhere")
    result = _replay_cli(project["root"], "wmax", "-y", "--trust-author", "nobody",
                         "--trust-author", user)
    assert result.exit_code == 0, result.output
    assert "left out" not in result.output
    host = json.loads((run / "run.json").read_text())["host"]
    # The schedule names each run's author and host, and how it came here.
    assert f"by {user}@{host}, pulled from origin" in result.output
    assert project["marker"].read_text() == "ran\n"  # one worker ran the script
    assert _values(run, "wmax") == _values(project["ref"], "wmax")
    # The pull record's author counts too: a run.json naming a trusted user is not enough.
    project["marker"].unlink()
    (local_dir(project["store"]) / "pulled" / f"{run.name}.json").unlink()
    mark_pulled(project["store"], run.name, "origin", author="mallory")
    report = fw.replay("wmin", dir=project["root"], yes=True, echo=lambda _t: None,
                       trust=[user])
    assert report.outcome(run.name).status == "skipped"
    assert "--trust-author" in report.outcome(run.name).message
    assert not project["marker"].exists()
    report = fw.replay("wmin", dir=project["root"], yes=True, echo=lambda _t: None,
                       trust=True)
    assert report.outcome(run.name).status == "replayed", str(report)
    assert _values(run, "wmin") == _values(project["ref"], "wmin")


def test_run_recorded_on_another_host_is_untrusted(project: dict) -> None:
    """No pull record, but run.json names another host: it came by some other route."""
    run = project["run"]
    meta = json.loads((run / "run.json").read_text())
    meta["host"] = "someone-elses-box"
    (run / "run.json").write_text(json.dumps(meta))
    lines: list[str] = []
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lines.append)
    assert report.outcome(run.name).status == "skipped"
    assert "recorded on another host" in "\n".join(lines)
    assert not project["marker"].exists()
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lines.append, trust=True)
    assert report.ok and report.outcome(run.name).status == "replayed", str(report)
    assert project["marker"].exists()


def _evil_pickle(marker: Path, size: int | None = None) -> bytes:
    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    data = pickle.dumps(Evil())
    if size is not None:  # same size as the file it replaces: pickle ignores the tail
        assert len(data) <= size
        data += b"\0" * (size - len(data))
    return data


def test_replaced_checkpoint_is_refused_before_planning(project: dict,
                                                        tmp_path: Path) -> None:
    run = project["run"]
    files = sorted((run / "checkpoints").glob("c*.pkl"))
    assert files
    unpickled = tmp_path / "unpickled"
    files[1].write_bytes(_evil_pickle(unpickled))  # another size than what was written
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lambda _t: None)
    outcome = report.outcome(run.name)
    assert outcome.status == "failed"
    assert f"refusing to load checkpoint {files[1]}" in outcome.message
    assert not unpickled.exists() and not project["marker"].exists()
    assert not (run / "replays").exists()


def test_same_size_replacement_is_refused_by_its_digest(project: dict,
                                                        tmp_path: Path) -> None:
    """Every checkpoint replaced by a malicious pickle of exactly the same size: the
    size check passes, the sha256 check in the worker refuses before unpickling."""
    run = project["run"]
    unpickled = tmp_path / "unpickled"
    files = sorted((run / "checkpoints").glob("c*.pkl"))
    for path in files:
        path.write_bytes(_evil_pickle(unpickled, path.stat().st_size))
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lambda _t: None)
    outcome = report.outcome(run.name)
    assert outcome.status == "failed", str(report)
    assert "UntrustedCheckpoint: refusing to load checkpoint" in outcome.message
    assert "sha256" in outcome.message and str(run / "checkpoints" / "c0") in outcome.message
    assert not unpickled.exists()
    assert not (run / "replays").exists()


def test_checkpoints_without_a_local_record_are_never_loaded(project: dict,
                                                             tmp_path: Path) -> None:
    """Checkpoints that came from elsewhere (no record in <store>/local/) are ignored,
    even malicious ones in a trusted run: the run is re-executed, values exact."""
    run = project["run"]
    unpickled = tmp_path / "unpickled"
    for path in (run / "checkpoints").glob("c*.pkl"):
        path.write_bytes(_evil_pickle(unpickled))
    ledger.run_ledger(run).unlink()
    lines: list[str] = []
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lines.append)
    assert report.ok, str(report)
    assert "not written on this machine" in "\n".join(lines)
    assert not unpickled.exists()
    assert _values(run, "wmax") == _values(project["ref"], "wmax")


def test_checkpoint_ledger_lives_outside_the_run(project: dict) -> None:
    """The digests sit in <store>/local/checkpoints/, beside runs/: push (run folders
    only) never sends them, and each recorded file's digest matches its bytes."""
    run = project["run"]
    path = ledger.run_ledger(run)
    assert path == project["store"] / "local" / "checkpoints" / f"{run.name}.jsonl"
    digests = ledger.read(path)
    files = sorted(p.name for p in (run / "checkpoints").glob("c*.pkl"))
    assert sorted(digests) == files and len(files) == 7  # 3 x (start, inner) + final
    import hashlib

    for name in files:
        data = (run / "checkpoints" / name).read_bytes()
        assert digests[name] == (hashlib.sha256(data).hexdigest(), len(data))


def test_torch_checkpoints_load_with_weights_only(tmp_path: Path) -> None:
    """Model, optimizer, scheduler and RNG states load under torch's weights_only=True;
    an object torch refuses there is loaded in full only because its file is verified."""
    torch = pytest.importorskip("torch")
    from flowillower.hindsight.checkpoint import CheckpointStore

    class Loader:  # a stateful data loader whose state holds a custom object
        def __init__(self) -> None:
            self.pos = Cursor(0)

        def state_dict(self) -> dict:
            return {"pos": self.pos}

        def load_state_dict(self, state: dict) -> None:
            self.pos = state["pos"]

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    run = fw.init(dir=tmp_path / "a", snapshot=False)
    with fw.checkpointing(net=net, opt=opt, sched=sched, every=1):
        for _ in fw.loop("epoch", range(2)):
            for _ in fw.loop("step", range(2)):
                net(torch.randn(4, 3)).sum().backward()
                opt.step()
            sched.step()
    fw.finish()
    store = CheckpointStore(run.dir)
    for entry in store.entries.values():
        store.load(entry)
    assert store.loaded_with and set(store.loaded_with.values()) == {"weights_only"}
    run = fw.init(dir=tmp_path / "b", snapshot=False)
    with fw.checkpointing(loader=Loader(), every=1):
        for _ in fw.loop("epoch", range(1)):
            pass
    fw.finish()
    store = CheckpointStore(run.dir)
    state = store.load(store.start(0))
    assert state["objects"]["loader"]["pos"] == Cursor(0)
    assert set(store.loaded_with.values()) == {"full"}


class Cursor:
    def __init__(self, at: int) -> None:
        self.at = at

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cursor) and other.at == self.at


def test_run_pulled_for_real_is_not_executed_without_trust(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """A teammate pushes a run to a bare remote; `flowillower pull` brings it (without
    its checkpoints); `replay -y` leaves it out, `replay --trust` runs its snapshot."""
    alice = _project(tmp_path / "alice")
    remote = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    cli = [PY, "-m", "flowillower"]
    for args in (["push", str(remote), "--dir", str(alice)],
                 ["pull", str(remote), "--dir", str(tmp_path / "bob")]):
        proc = subprocess.run([*cli, *args], env=clean_env(), capture_output=True, text=True,
                              timeout=120, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    bob = tmp_path / "bob"
    run = _run_dir(bob)
    assert run.name == _run_dir(alice).name and not (run / "checkpoints").exists()
    script = bob / "train.py"
    script.write_text(textwrap.dedent(NEW).lstrip())
    marker = tmp_path / "executed"
    monkeypatch.setenv("FW_TEST_MARKER", str(marker))
    result = _replay_cli(bob, "wmax", "-y", "--script", str(script))
    assert result.exit_code == 0, result.output
    assert "left out 1 run(s) from elsewhere" in result.output
    assert f"pulled from {remote}" in result.output
    assert not marker.exists() and not (run / "replays").exists()
    result = _replay_cli(bob, "wmax", "-y", "--trust", "--script", str(script))
    assert result.exit_code == 0, result.output
    assert marker.read_text() == "ran\n"
    ref = _run_dir(_project(tmp_path / "ref", NEW))
    assert _values(run, "wmax") == _values(ref, "wmax")


def test_a_refused_inner_checkpoint_is_not_worked_around(project: dict,
                                                         tmp_path: Path) -> None:
    """Only the inner-loop states replaced (same size): the worker refuses the first one
    it needs, and the run fails naming it instead of being retried without them."""
    run = project["run"]
    unpickled = tmp_path / "unpickled"
    manifest = (run / "checkpoints" / "manifest.jsonl").read_text().splitlines()
    inner = [json.loads(line)["file"] for line in manifest
             if json.loads(line).get("kind") == "inner"]
    assert len(inner) == 3
    for name in inner:
        path = run / "checkpoints" / name
        path.write_bytes(_evil_pickle(unpickled, path.stat().st_size))
    report = fw.replay("wmax", dir=project["root"], yes=True, echo=lambda _t: None)
    outcome = report.outcome(run.name)
    assert outcome.status == "failed", str(report)
    assert f"refusing to load checkpoint {run / 'checkpoints' / inner[0]}" in outcome.message
    assert not outcome.notes and not unpickled.exists()
    assert not (run / "replays").exists()
