"""Whose runs a replay may execute: runs from elsewhere are data, never code.

A replay runs a run's code snapshot (with the new `fw.log` lines transplanted in) on this
machine. A run that arrived through `pull` carries code someone else pushed; a run whose
run.json names another host came by some other route (a copied store, a synced folder).
Both are left out of a replay unless the user trusts them explicitly: `--trust` (all such
runs) or `--trust-author NAME` (runs whose every recorded author is NAME: run.json's
`user` and, for a pulled run, the pull record's `author`). `-y` only skips the question.

Recorded authors and hosts are what the run says about itself; a teammate can write any
name there. `--trust-author` is a convenience for teams whose remote is shared by people
who trust each other's code; the pull record (kept in `<store>/local/`, never pushed) is
what cannot be forged by a pushed run.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..store.provenance import pulled_info

TrustArg = bool | str | Iterable[str] | None


def this_host() -> str:
    """This machine's hostname, as `run.json` records it."""
    return socket.gethostname()


@dataclass(frozen=True)
class Origin:
    """Where a run came from, as far as this machine can tell."""

    run_id: str
    author: str | None  # run.json `user`
    host: str | None  # run.json `host`
    pulled: dict[str, Any] | None  # the local pull record, None if never pulled

    @property
    def local(self) -> bool:
        """Made here: never pulled and recorded on this host."""
        return self.pulled is None and self.host == this_host()

    def authors(self) -> set[str]:
        """Every author the run and its pull record name."""
        names = {self.author, (self.pulled or {}).get("author")}
        return {str(n) for n in names if n}

    def describe(self) -> str:
        """`alice@gpu-box`, plus how it came here when not made here."""
        text = f"{self.author or '?'}@{self.host or '?'}"
        if self.pulled is not None:
            remote = self.pulled.get("remote") or "?"
            author = self.pulled.get("author")
            by = f" by {author}" if author and author != self.author else ""
            text += f", pulled from {remote}{by}"
        elif not self.local:
            text += ", recorded on another host"
        return text


def origin(store_root: Path, run_dir: Path) -> Origin:
    """The origin of the run in `run_dir` (run.json and the local pull record)."""
    try:
        meta = json.loads((Path(run_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    user, host = meta.get("user"), meta.get("host")
    return Origin(Path(run_dir).name, None if user is None else str(user),
                  None if host is None else str(host),
                  pulled_info(Path(store_root), Path(run_dir).name))


class TrustPolicy:
    """Which runs from elsewhere the user chose to trust.

    `trust`: False/None (none), True (all), an author name or a list of author names.
    """

    def __init__(self, trust: TrustArg = False) -> None:
        self.all = trust is True
        if trust is None or isinstance(trust, bool):
            names: Iterable[str] = ()
        elif isinstance(trust, str):
            names = [trust]
        else:
            names = list(trust)
        self.authors = frozenset(str(n).strip() for n in names if str(n).strip())

    def allows(self, run: Origin) -> bool:
        """Whether a replay may execute this run's code and load its state."""
        if run.local or self.all:
            return True
        authors = run.authors()
        return bool(authors) and authors <= self.authors

    def refusal(self, run: Origin) -> str:
        """Why `run` is left out, and what would let it in."""
        hint = " ".join(f"--trust-author {a}" for a in sorted(run.authors()))
        return (f"from elsewhere ({run.describe()}): not replayed, its code would run on "
                f"this machine; trust it with --trust or {hint or '--trust-author NAME'} (fw.replay(..., trust=...))")


def left_out_summary(runs: list[Origin]) -> str:
    """The lines printed when runs from elsewhere were left out."""
    ids = "\n".join(f"  {r.run_id}  by {r.describe()}" for r in runs)
    authors = sorted(set().union(*(r.authors() for r in runs)))
    by_author = " ".join(f"--trust-author {a}" for a in authors) or "--trust-author NAME"
    return (f"left out {len(runs)} run(s) from elsewhere, whose code would run on this "
            f"machine:\n{ids}\nto replay them: --trust (all of them) or {by_author} "
            "(fw.replay(..., trust=True or trust=[names]))")
