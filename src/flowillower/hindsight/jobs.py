"""One run's replay job: its transplanted code, its plan and its workers' workspace.

`prepare_job` carries the current script's new statements into the run's code snapshot
and plans the replay; `materialize` extracts the snapshot into a scratch folder (never
the user's working tree), writes the transplanted script and one plan file per task, and
builds the worker tasks; `progress` reads what a worker has done so far.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import FlowillowerError
from ..store.catalog import Store
from .analysis import analyze
from .executor import Task, TaskResult
from .planner import RunInfo, RunPlan, plan_json, plan_run
from .report import RunOutcome
from .session import REPLAY_ENV
from .stretches import Stretch
from .transplant import transplant


@dataclass
class Job:
    """A run being replayed."""

    outcome: RunOutcome
    plan: RunPlan | None = None
    source: str = ""
    relpath: str = ""
    snapshot: str = ""
    placements: list[dict[str, Any]] = field(default_factory=list)
    diff: str = ""
    workdir: Path | None = None
    tree: Path | None = None
    tasks: list[Task] = field(default_factory=list)
    results: dict[str, TaskResult] = field(default_factory=dict)
    started: float = 0.0
    attempt: int = 0
    finished: bool = False
    notebook: bool = False  # the script is the run's executed notebook cells
    # A resumed run or a fork is replayed as several jobs, one per stretch (its own code
    # and checkpoints: stretches.py), sharing the run's outcome; `group` lists them all.
    stretch: Stretch | None = None
    group: list[Job] = field(default_factory=list)
    version: str = ""  # this job's code version (the outcome joins a group's)

    @property
    def part(self) -> str:
        """Folder and task-id suffix telling a group's jobs apart ("" for a whole run)."""
        if self.stretch is None:
            return ""
        return f"{self.stretch.run_id}.seg{self.stretch.segment}"


def prepare_job(job: Job, info: RunInfo, store: Store, script: Path | None) -> None:
    """Transplant the wanted statements into the run's snapshot and plan the replay;
    raises FlowillowerError (or TransplantError) saying why a run cannot be replayed."""
    from ..gitops.snapshot import read_file

    out = job.outcome
    if info.changed:
        path = info.store.dir / info.changed[0]
        raise FlowillowerError(
            f"refusing to load checkpoint {path}: its size differs from what this "
            f"machine wrote ({len(info.changed)} file(s) changed since); delete the run's "
            "checkpoints/ folder to replay it by re-executing")
    meta = info.meta
    git = meta.get("git") or {}
    sha = git.get("snapshot")
    if not sha:
        reason = git.get("error") or "the run recorded no code snapshot"
        raise FlowillowerError(f"no code snapshot ({reason}): nothing to replay")
    job.snapshot = sha
    root = Path(git.get("root") or meta.get("cwd") or ".")
    run_script = meta.get("script")
    argv = meta.get("argv") or []
    if not run_script and argv:
        run_script = os.path.join(meta.get("cwd") or "", argv[0])
    if (info.run_dir / "notebook.json").is_file() \
            or os.path.basename(run_script or "") == "ipykernel_launcher.py":
        # The kernel's executed cells are the script (NotReplayable says why not).
        from .notebook import job_sources

        job.relpath, old_src, new_src, notes = job_sources(info.run_dir, meta, script)
        job.notebook = True
        out.notes += notes
        _transplanted(job, info, old_src, new_src, sha)
        return
    if not run_script or not run_script.endswith(".py"):
        raise FlowillowerError(f"the run was not started from a Python script "
                               f"(argv: {argv[:2]}); only scripts can be replayed")
    rel = os.path.relpath(run_script, root)
    if rel.startswith(".."):
        raise FlowillowerError(f"the script {run_script} lies outside the snapshot root {root}")
    job.relpath = rel
    try:
        old_src = read_file(store.git_dir, sha, rel)
    except Exception as exc:
        raise FlowillowerError(f"the code snapshot {sha[:10]} is missing {rel} "
                               f"({type(exc).__name__}: {exc})") from None
    if isinstance(old_src, bytes):
        old_src = old_src.decode("utf-8")
    if not out.names and script is None:
        new_src = old_src  # only `--watch`: nothing to carry over, the script may be gone
    else:
        new_src = _current_script(script, [root / rel, store.root.parent / rel,
                                           Path.cwd() / rel])
    _transplanted(job, info, old_src, new_src, sha)


def _current_script(script: Path | None, candidates: list[Path]) -> str:
    """The script as it is now: `script`, else where the run found it, else here."""
    new_path = script or next((c for c in candidates if c.is_file()), candidates[0])
    try:
        return new_path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FlowillowerError(f"cannot read the current script {new_path}: {exc}; pass "
                               "script= (--script) to name it") from None


def _transplanted(job: Job, info: RunInfo, old_src: str, new_src: str, sha: str) -> None:
    """Carry the new statements into `old_src` and plan the replay."""
    out, rel = job.outcome, job.relpath
    result = transplant(old_src, new_src, out.names, label=f"snapshot {sha[:10]}")
    job.source = result.source
    job.placements = [
        {"names": p.names, "line": p.old_line, "from_line": p.new_line, "where": p.where,
         "renames": p.renames, "helpers": p.helpers} for p in result.placements]
    job.diff = "".join(difflib.unified_diff(
        old_src.splitlines(keepends=True), result.source.splitlines(keepends=True),
        f"a/{rel}", f"b/{rel}"))
    digest = hashlib.sha256(result.source.encode()).hexdigest()[:12]
    job.version = f"{sha[:10]}+{digest}" if result.changed else sha[:10]
    statements = analyze(result.source, out.names, info.outer)
    job.plan = plan_run(info, statements, result.source)
    if job.stretch is None:  # else the run's outcome is the group's (see replay.py)
        out.code_version = job.version
        out.notes += job.plan.notes
        out.strategy = job.plan.strategy
    if job.plan.dropped:
        out.names = [n for n in out.names if n not in job.plan.dropped]


def materialize(job: Job, base: Path, git_dir: Path) -> None:
    """Extract the snapshot, write the transplanted script and the task plans."""
    from ..gitops.snapshot import checkout_snapshot

    assert job.plan is not None
    out = job.outcome
    job.workdir = base / out.run_id / job.part if job.part else base / out.run_id
    tree = job.workdir / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    job.workdir.mkdir(parents=True, exist_ok=True)
    try:
        checkout_snapshot(git_dir, job.snapshot, tree)
    except Exception as exc:
        raise FlowillowerError(f"cannot extract code snapshot {job.snapshot[:10]}: "
                               f"{exc}") from None
    job.tree = tree
    (tree / job.relpath).parent.mkdir(parents=True, exist_ok=True)
    (tree / job.relpath).write_text(job.source, encoding="utf-8")
    meta = job.plan.info.meta
    git = meta.get("git") or {}
    root = Path(git.get("root") or meta.get("cwd") or ".")
    _link_skipped(git, root, tree)
    cwd_rel = os.path.relpath(meta.get("cwd") or root, root)
    cwd = tree / cwd_rel if not cwd_rel.startswith("..") else tree
    cwd.mkdir(parents=True, exist_ok=True)
    script = tree / job.relpath
    # A notebook's kernel command line (`-f kernel.json`) is not the script's.
    argv = [] if job.notebook else list(meta.get("argv") or [])[1:]
    import flowillower

    package_parent = str(Path(flowillower.__file__).resolve().parent.parent)
    job.tasks = []
    for t in job.plan.tasks:
        scratch = job.workdir / f"attempt{job.attempt}-task{t.index}"
        if scratch.exists():
            shutil.rmtree(scratch)
        scratch.mkdir(parents=True)
        plan_path = scratch / "plan.json"
        plan_path.write_text(plan_json(job.plan, t, scratch, meta.get("project")))
        env = dict(os.environ)
        env.pop("FLOWILLOWER_RUN_ID", None)
        env[REPLAY_ENV] = str(plan_path)
        env["PYTHONUNBUFFERED"] = "1"
        env.update(recorded_threads(job.plan, env))
        env["PYTHONPATH"] = os.pathsep.join(
            [package_parent, *filter(None, [env.get("PYTHONPATH")])])
        part = f"@{job.part}" if job.part else ""
        job.tasks.append(Task(f"{out.run_id}{part}#{job.attempt}.{t.index}",
                              [sys.executable, str(script), *argv], cwd, env, scratch,
                              t.estimate, {"job": job, "plan": t}))


def recorded_threads(plan: RunPlan, env: dict[str, str]) -> dict[str, str]:
    """Thread counts for a worker: those the run recorded (CPU float reductions depend
    on them), unless the environment already fixes them."""
    meta = plan.info.store.meta or {}
    threads = meta.get("torch_threads")
    if not isinstance(threads, int) and plan.info.skips is not None:
        threads = plan.info.skips.threads  # a framework callback's recording
    if not isinstance(threads, int) or threads < 1:
        return {}
    return {var: str(threads) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
            if var not in env}


def _link_skipped(git: dict[str, Any], root: Path, tree: Path) -> None:
    """Files too big for the snapshot: link the current copies (read by the script)."""
    for item in git.get("skipped") or []:
        rel = item[0] if isinstance(item, (list, tuple)) else str(item)
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            continue  # run.json is data: a link is only ever made inside the tree
        source, target = root / rel, tree / rel
        if source.exists() and not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                target.symlink_to(source)
            except OSError:
                pass


def progress(scratch: Path) -> tuple[int, set[str]]:
    """(iterations finished, other marks) from a worker's progress file."""
    try:
        text = (scratch / "progress").read_text(encoding="utf-8")
    except OSError:
        return 0, set()
    done = 0
    marks = set()
    for line in text.splitlines():
        if line.startswith("iter "):
            done += 1
        elif line:
            marks.add(line)
    return done, marks


def force_inner(plan: RunPlan) -> list:
    """The plan's statements, each now needing its inner loops re-executed."""
    for statement in plan.statements:
        statement.needs.add("inner")
    return plan.statements
