"""What `fw.replay` returns: one outcome per run looked at, and the report as JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass
class RunOutcome:
    """What happened to one run."""

    run_id: str
    status: str  # replayed | failed | interrupted | skipped | complete
    names: list[str] = field(default_factory=list)
    message: str = ""
    strategy: str = ""
    code_version: str = ""
    estimate: float = 0.0
    seconds: float = 0.0
    values: dict[str, int] = field(default_factory=dict)
    tasks: int = 0  # worker processes used
    replay_file: str | None = None
    notes: list[str] = field(default_factory=list)
    origin: str = ""  # author@host, and how the run came here when not made here


@dataclass
class ReplayReport:
    """The result of `fw.replay`: one outcome per run looked at."""

    replay_id: str
    names: list[str]
    runs: list[RunOutcome]
    estimate: float = 0.0
    seconds: float = 0.0
    interrupted: bool = False
    cancelled: bool = False

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(r.status in ("replayed", "complete", "skipped")
                                            for r in self.runs)

    def outcome(self, run_id: str) -> RunOutcome:
        return next(r for r in self.runs if r.run_id == run_id)

    def __str__(self) -> str:
        lines = [f"replay {self.replay_id}: {', '.join(self.names)}"]
        for r in self.runs:
            head = f"  {r.run_id}  {r.status}"
            if r.values:
                head += "  " + ", ".join(f"{k}: {v} values" for k, v in r.values.items())
            if r.seconds:
                head += f"  ({r.seconds:.1f}s, estimated {r.estimate:.1f}s)"
            lines.append(head)
            for text in [*r.notes, r.message]:
                if text:
                    lines += ["      " + t for t in text.splitlines()]
        if self.interrupted:
            lines.append("  interrupted: unfinished runs were left without replayed values")
        lines.append(f"  took {self.seconds:.1f}s (estimated {self.estimate:.1f}s)")
        return "\n".join(lines)


def report_json(report: ReplayReport) -> str:
    """The report as JSON (for `flowillower replay --json`)."""
    return json.dumps({
        "replay_id": report.replay_id, "names": report.names, "ok": report.ok,
        "interrupted": report.interrupted, "estimate": report.estimate,
        "seconds": report.seconds,
        "runs": [r.__dict__ for r in report.runs],
    }, indent=2, default=str)
