"""`flowillower replay NAME --runs FILTER` replays exactly the runs the filter selects."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from tests.conftest import clean_env
from tests.test_replay_trust import NEW, OLD, PY, _project, _replay_cli, _values


def test_runs_filter_selects_which_runs_replay(tmp_path: Path) -> None:
    root = _project(tmp_path / "proj")  # seed 0
    proc = subprocess.run([PY, "train.py", "--kwargs", "seed=1"], cwd=root, env=clean_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    runs = {}
    for run in (root / ".flowillower" / "runs").iterdir():
        runs[json.loads((run / "summary.json").read_text())["args"]["seed"]] = run
    assert set(runs) == {0, 1}
    (root / "train.py").write_text(textwrap.dedent(NEW).lstrip())
    assert OLD != NEW

    result = _replay_cli(root, "wmax", "--runs", "seed == 1", "-y")

    assert result.exit_code == 0, result.output
    assert len(_values(runs[1], "wmax")) == 3  # one value per epoch, replayed
    assert _values(runs[0], "wmax") == []  # not selected: untouched
    assert not (runs[0] / "replays").exists()
