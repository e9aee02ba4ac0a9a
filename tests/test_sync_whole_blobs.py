"""Big blobs (record files, images, artifacts) reach a remote whole, never as deltas of
another run's blob, so a remote serves a filtered pull of a few runs as they are stored
instead of rebuilding delta chains and searching new deltas (`fastimport.WHOLE_ABOVE`).

Real bare remotes; the packs' object kinds read with `git verify-pack -v`. Packs are
kept as packs on both sides (`transfer.unpackLimit = 1` in the test's HOME), as they are
for pushes and pulls of more than 100 objects.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from flowillower.gitops.fastimport import WHOLE_ABOVE
from flowillower.gitops.pullselect import RunSelection
from flowillower.gitops.sync import pull, push
from flowillower.queries.filters import parse_filter
from tests.conftest_git import bare_remote, git, isolate_home, make_run

SHARED = os.urandom(3 * WHOLE_ABOVE)  # what every run's artifact starts with
IDS = [f"20261202-10{i:02d}00-cccccc{i:02d}" for i in range(6)]


def _pack_kinds(git_dir: Path) -> dict[str, bool]:
    """{object id: stored as a delta} of every packed object of `git_dir`."""
    kinds: dict[str, bool] = {}
    for idx in sorted((git_dir / "objects" / "pack").glob("*.idx")):
        for line in git(git_dir, "verify-pack", "-v", str(idx)).splitlines():
            fields = line.split()
            if len(fields) >= 5 and len(fields[0]) == 40 and fields[1] in (
                    "blob", "tree", "commit", "tag"):
                kinds[fields[0]] = len(fields) >= 7  # depth and base: a delta
    return kinds


@pytest.fixture
def pushed(tmp_path, monkeypatch) -> tuple[Path, Path, dict[str, str]]:
    """Six runs whose 200 KB artifacts share all but their last 4 KB (ideal delta
    material), pushed to a bare remote. Returns (store, remote, {run id: artifact id})."""
    isolate_home(monkeypatch, tmp_path, "[transfer]\n\tunpackLimit = 1\n")
    store = tmp_path / "store"
    for i, run_id in enumerate(IDS):
        run = make_run(store, run_id, None, {"artifacts/state.bin": SHARED + os.urandom(4096)})
        meta = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**meta, "project": "pick" if i % 3 == 0
                                                  else "other"}))
    remote = bare_remote(tmp_path / "remote.git")
    result = push(store, str(remote))
    assert result["new"] == len(IDS)
    big = {run_id: git(store / "git", "rev-parse",
                       f"refs/flowillower/runs/{run_id}:artifacts/state.bin").strip()
           for run_id in IDS}
    return store, remote, big


def test_big_blobs_reach_the_remote_whole(pushed):
    store, remote, big = pushed
    kinds = _pack_kinds(remote)
    assert set(big.values()) <= set(kinds)  # all in the pushed pack
    assert [rid for rid, sha in big.items() if kinds[sha]] == []  # none is a delta
    # ... and the store keeps them whole too (packed by fast-import, or loose).
    mine = _pack_kinds(store / "git")
    assert [rid for rid, sha in big.items() if mine.get(sha)] == []


def test_a_filtered_pull_gets_the_stored_objects_not_new_deltas(pushed, tmp_path):
    store, remote, big = pushed
    mate = tmp_path / "mate"
    got = pull(mate, str(remote), runs=RunSelection.parse("project == 'pick'", parse_filter))
    picked = [IDS[0], IDS[3]]
    assert got["runs_added"] == 2 and sorted(p.name for p in (mate / "runs").iterdir()) == picked
    for run_id in picked:  # exact bytes
        assert (mate / "runs" / run_id / "artifacts" / "state.bin").read_bytes() == \
            (store / "runs" / run_id / "artifacts" / "state.bin").read_bytes()
    # The remote sent both artifacts as it stores them: whole (a remote that had to
    # search deltas again would have sent one as a delta of the other).
    kinds = _pack_kinds(mate / "git")
    assert [big[rid] for rid in picked if kinds[big[rid]]] == []
    assert not {big[rid] for rid in IDS if rid not in picked} & set(kinds)  # not fetched


def test_a_grown_run_still_goes_as_a_delta_of_its_previous_version(pushed, tmp_path):
    store, remote, big = pushed
    grown = store / "runs" / IDS[1] / "artifacts" / "state.bin"
    # A run that gained data (a resumed run's record file grows the same way).
    with open(grown, "ab") as fh:
        fh.write(os.urandom(1024))
    result = push(store, str(remote))
    assert result["updated"] == 1 and result["new"] == 0
    new = git(store / "git", "rev-parse",
              f"refs/flowillower/runs/{IDS[1]}:artifacts/state.bin").strip()
    assert new != big[IDS[1]]
    kinds = _pack_kinds(remote)
    assert kinds[new]  # sent as a delta of the version the remote had: 1 KB, not 200
