"""What a replay prints while it works: the schedule, progress lines, worker failures.

Text only: the orchestrator (`replay.py`) decides when to print it and through which
`echo`; the final report's text is `ReplayReport.__str__` (report.py).
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from pathlib import Path

from .jobs import Job, progress
from .planner import TaskPlan


def fmt_s(seconds: float) -> str:
    """A duration for people: seconds below two minutes, else minutes."""
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def describe(names: list[str], workers: int, jobs: Iterable[Job], estimate: float) -> str:
    """The schedule shown before a replay starts: per run, who made it, the code version,
    where each statement was placed, the strategy, the tasks and the estimate."""
    lines = [f"hindsight replay of {', '.join(names)}  ({workers} worker"
             f"{'s' if workers > 1 else ''})"]
    for job in jobs:
        out = job.outcome
        if job.plan is None or job.finished:
            if out.status in ("failed", "skipped"):
                lines.append(f"  {out.run_id}  {out.status}: {out.message}")
            continue
        plan = job.plan
        lines.append(f"  {out.run_id}  by {out.origin}  code {out.code_version}  "
                     f"{', '.join(out.names)}")
        for p in job.placements:
            extra = f", renamed {p['renames']}" if p["renames"] else ""
            lines.append(f"      + {', '.join(p['names'])} at line {p['line']} "
                         f"({p['where']}{extra})")
        lines.append(f"      strategy: {plan.strategy}")
        whole = "whole script" if plan.info.outer is None else "after loops"
        tasks = ", ".join(f"[{t.emit_from},{t.stop})" if t.stop > t.first else
                          (whole if t.post_loop else "set-up") for t in plan.tasks)
        lines.append(f"      {len(plan.tasks)} task{'s' if len(plan.tasks) > 1 else ''}"
                     f" ({tasks}), estimated {fmt_s(plan.estimate)} of worker time")
        for note in plan.notes:
            lines.append(f"      note: {note}")
    lines.append(f"estimated time: {fmt_s(estimate)}")
    return "\n".join(lines)


def progress_line(jobs: Iterable[Job]) -> str:
    """`replaying: <run> done/total ...` for the runs still working ("" when none)."""
    parts = []
    for job in jobs:
        if job.finished or not job.tasks:
            continue
        done = total = 0
        for task in job.tasks:
            t: TaskPlan = task.meta["plan"]
            total += max(0, t.stop - t.emit_from)
            done += progress(task.scratch)[0]
        parts.append(f"{job.outcome.run_id[-8:]} {done}/{total}")
    return "replaying: " + "  ".join(parts) if parts else ""


def exit_text(code: int | None) -> str:
    """How a worker ended, in words (`status 1`, `signal SIGKILL`)."""
    if code is None:
        return "no exit status"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"status {code}"


def tail(path: Path, lines: int = 12) -> str:
    """The last lines of a worker's output, indented for the report."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "  (no output)"
    last = text.strip().splitlines()[-lines:]
    return "\n".join("  | " + line for line in last) if last else "  (no output)"
