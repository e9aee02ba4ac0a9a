"""The docs stay true: every public function and command is documented, and the guide's
Python examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import flowillower as fw
from flowillower import api
from flowillower.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
DOCS = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
GUIDE_BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "guide.md").read_text(), re.S)


@pytest.mark.parametrize("name", [n for n in fw.__all__ if n not in ("Run", "FlowillowerError")])
def test_public_function_documented(name):
    assert f"fw.{name}" in DOCS, f"fw.{name} is not mentioned in README.md or docs/"


@pytest.mark.parametrize("command", sorted(cli_main.commands))
def test_cli_command_documented(command):
    assert f"flowillower {command}" in DOCS, f"`flowillower {command}` is not documented"


@pytest.mark.parametrize("index", range(len(GUIDE_BLOCKS)))
def test_guide_example_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(GUIDE_BLOCKS[index], f"guide.md example {index}", "exec"), namespace)
    if api._current is not None and api._current.status is None:
        api._current.finish()
