"""A command whose dependency is missing still exists and says what to install.

Each test runs the real CLI in a subprocess in which a module is made unimportable
(`sys.modules[name] = None`, or a finder making one of flowillower's command modules
fail the way a missing third-party import would), then reads --help and the error.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

OPTIONAL = ("replay", "ui", "export", "deploy", "demo")

# Makes importing TARGET fail like a module whose first line is `import torch`.
_NEEDS_TORCH = """
import importlib.abc, importlib.machinery
class _NeedsTorch(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        return importlib.machinery.ModuleSpec(name, self) if name == TARGET else None
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        import torch  # noqa: F401
sys.meta_path.insert(0, _NeedsTorch())
"""


def cli(tmp_path: Path, argv: list[str], block: tuple[str, ...] = (),
        needs_torch: str | None = None) -> subprocess.CompletedProcess:
    code = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in block)
    if needs_torch:
        code += f"TARGET = {needs_torch!r}\n" + _NEEDS_TORCH
    code += "from flowillower.cli import main\nmain(sys.argv[1:], prog_name='flowillower')\n"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)


def listed(help_text: str) -> dict[str, str]:
    """Command name -> its one-line summary, from `flowillower --help`."""
    lines = help_text.split("Commands:", 1)[1].splitlines()
    return {line.split()[0]: line.split(None, 1)[1] if len(line.split()) > 1 else ""
            for line in lines if line.startswith("  ") and line.strip()}


@pytest.fixture
def store(tmp_path) -> Path:
    runs = tmp_path / "project" / ".flowillower" / "runs"  # FLOWILLOWER_DIR of conftest
    runs.mkdir(parents=True)
    return runs.parent


def test_all_commands_listed_normally(tmp_path):
    proc = cli(tmp_path, ["--help"])
    assert proc.returncode == 0, proc.stderr
    commands = listed(proc.stdout)
    for name in OPTIONAL:
        assert name in commands and "unavailable" not in commands[name]


def test_missing_extra_at_import_keeps_the_command_and_names_the_extra(tmp_path):
    target = "flowillower.examples.flow_matching.cli"
    proc = cli(tmp_path, ["--help"], block=("torch",), needs_torch=target)
    assert proc.returncode == 0, proc.stderr
    commands = listed(proc.stdout)
    assert set(OPTIONAL) <= set(commands)
    assert commands["demo"] == "(unavailable) needs torch: pip install 'flowillower[demo]'"
    proc = cli(tmp_path, ["demo", "train", "model.width=8"], block=("torch",),
               needs_torch=target)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: `flowillower demo` needs torch, which is not installed: "
        "pip install 'flowillower[demo]'"]


def test_missing_torch_for_replay_names_the_torch_extra(tmp_path):
    proc = cli(tmp_path, ["replay", "val_acc", "-y"], block=("torch",),
               needs_torch="flowillower.cli.replay")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "pip install 'flowillower[torch]'" in proc.stderr


def test_a_broken_flowillower_module_is_a_bug_not_a_missing_extra(tmp_path):
    proc = cli(tmp_path, ["--help"], block=("flowillower.cli.replay",))
    assert proc.returncode == 0, proc.stderr
    commands = listed(proc.stdout)
    assert commands["replay"] == "(unavailable) failed to import: a bug in flowillower"
    proc = cli(tmp_path, ["replay", "val_acc", "-y"], block=("flowillower.cli.replay",))
    assert proc.returncode == 1
    assert "flowillower.cli.replay failed to import" in proc.stderr
    assert "bug in flowillower" in proc.stderr
    assert "pip install" not in proc.stderr
    assert "Traceback" in proc.stderr  # the original error, for the bug report
    # The other commands are unaffected.
    ok = cli(tmp_path, ["ls", "--help"], block=("flowillower.cli.replay",))
    assert ok.returncode == 0 and "List runs" in ok.stdout


def test_all_optional_modules_broken_still_lists_every_command(tmp_path):
    block = ("flowillower.cli.replay", "flowillower.cli.ui",
             "flowillower.examples.flow_matching.cli")
    proc = cli(tmp_path, ["--help"], block=block)
    assert proc.returncode == 0, proc.stderr
    commands = listed(proc.stdout)
    for name in OPTIONAL:
        assert commands[name].startswith("(unavailable)"), (name, commands)
    for name in ("export", "deploy", "ui"):
        proc = cli(tmp_path, [name, "x"], block=block)
        assert proc.returncode == 1 and "flowillower.cli.ui failed to import" in proc.stderr


def test_missing_dependency_at_run_time_says_what_to_install(tmp_path, store):
    proc = cli(tmp_path, ["ui", "--no-browser", "--port", "1"], block=("uvicorn",))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "Error: `flowillower ui` needs uvicorn, a dependency of flowillower that is "
        "missing: reinstall it (pip install --force-reinstall flowillower)"]
    out = tmp_path / "site"
    proc = cli(tmp_path, ["export", str(out)], block=("starlette",))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "`flowillower export` needs starlette" in proc.stderr
    assert not out.exists()


def test_parquet_without_pyarrow_names_the_parquet_extra(tmp_path, store):
    target = tmp_path / "values.parquet"
    proc = cli(tmp_path, ["df", "-o", str(target)], block=("pyarrow", "fastparquet"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "pip install 'flowillower[parquet]'" in proc.stderr
    assert not target.exists()
    # With pyarrow present the same command writes the file.
    pytest.importorskip("pyarrow")
    proc = cli(tmp_path, ["df", "-o", str(target)])
    assert proc.returncode == 0, proc.stderr
    assert target.is_file()


def test_a_missing_flowillower_module_at_run_time_is_not_called_an_extra(tmp_path, store):
    proc = cli(tmp_path, ["export", str(tmp_path / "site")],
               block=("flowillower.server.export",))
    assert proc.returncode == 1
    assert "pip install" not in proc.stderr
    assert "ModuleNotFoundError" in proc.stderr and "flowillower.server.export" in proc.stderr
