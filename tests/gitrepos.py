"""Runnable projects for end-to-end tests that run `train.py` (see `conftest_git.make_repo`
with `runnable=True`); kept as a name for the tests that import it from here."""

from __future__ import annotations

from functools import partial

from tests.conftest_git import STATES, fingerprint, git
from tests.conftest_git import make_repo as _make_repo

make_repo = partial(_make_repo, runnable=True)

__all__ = ["STATES", "fingerprint", "git", "make_repo"]
