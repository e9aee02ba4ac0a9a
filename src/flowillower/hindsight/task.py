"""Self-contained replay tasks, for executors whose workers share no disk with the driver.

A local task is a command line over folders on this machine (`executor.Task`). `pack`
turns one into a `Payload` that names no driver path: the extracted snapshot with the
transplanted script (a tar, shared by every segment of the run), the checkpoint files
its segment reads (`needed_files`: the start it enters at, the inner-loop ends of the
iterations it skips, the final state, and the earlier files their tensors point into),
each its own small tar shared by every segment that needs it, plus the run's manifest
and this machine's digest record of its files (loaded only after the worker checks them
against that record exactly as a local replay does); for a share of a callback-captured
run's epochs (Lightning), the recorder's capture it starts from, the files that capture
points into, and that recorder's manifest and record; the plan with its paths made
relative, the recorded argv and the thread counts. `run_payload` runs on
the worker: it unpacks into a private temporary folder, runs the script there and
returns what the scratch folder holds afterwards (the value frames, the progress marks,
the log) as bytes; `unpack_result` writes that into the task's scratch folder on the
driver, where the replay merges it as if the task had run locally. The driver alone
writes `replays/*.fwl`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from .ckpt_files import CKPT_DIRNAME, MANIFEST

# Environment that decides a worker's numerics; everything else is the worker's own.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "PYTHONHASHSEED",
               "CUBLAS_WORKSPACE_CONFIG")
RESULT_LIMIT = 1 << 30  # bytes a worker may send back for one task


@dataclass
class Payload:
    """Everything a remote worker needs for one task, without the driver's disk."""

    task_id: str
    run_id: str
    tree_key: str  # which shared tree archive (`Packer.trees`)
    ckpt_key: str | None  # one archive of this task's checkpoint files (None: no checkpoints)
    plan: dict[str, Any]
    script: str  # the script, relative to the tree
    cwd: str  # the working directory, relative to the tree
    args: list[str]  # the recorded command-line arguments after the script
    env: dict[str, str] = field(default_factory=dict)
    # The same files as `ckpt_key`, one shared archive each (manifest and record first):
    # an executor ships each once, to every task that needs it.
    ckpt_parts: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)


def _key(text: str) -> str:
    """A name for a shared archive that says nothing about the driver's paths."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tar(add: list[tuple[Path, str]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path, name in add:
            if path.exists():
                tar.add(str(path), arcname=name)
    return buf.getvalue()


def _within(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def tar_tree(tree: Path, roots: list[Path]) -> bytes:
    """The extracted snapshot as a tar. Links (files too big for the snapshot, linked
    from the project; links committed to the repository) travel as the bytes they point
    to when those lie in the tree or the project, and are left out otherwise: a task
    never carries other files of this machine."""
    roots = [r.resolve() for r in roots]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.dereference = True
        tar.add(str(tree), arcname="tree", recursive=False)
        for top, dirs, files in os.walk(tree):
            for name in sorted(dirs) + sorted(files):
                path = Path(top) / name
                arc = "tree/" + path.relative_to(tree).as_posix()
                if path.is_symlink():
                    target = path.resolve()
                    if target.exists() and _within(target, roots):
                        tar.add(str(path), arcname=arc)  # a linked folder: all of it
                    continue
                tar.add(str(path), arcname=arc, recursive=False)
            dirs[:] = [d for d in dirs if not (Path(top) / d).is_symlink()]
    return buf.getvalue()


def needed_files(run_dir: Path, plan: dict[str, Any]) -> list[str] | None:
    """The checkpoint files a task with `plan` (first, stop, skip, restore_first,
    restore_final) reads, with the earlier files their tensors point into; None when the
    run's manifest lines do not list those (`refs`, written since issue 18): then all."""
    from .ckpt_store import CheckpointStore

    store = CheckpointStore(run_dir, plan.get("ckpt_subdir"))
    wanted: list[dict[str, Any] | None] = []
    if plan.get("restore_first") and plan.get("first", 0) < plan.get("stop", 0):
        wanted.append(store.start(plan["first"]))
    for i in plan.get("skip") or []:
        n_inner = store.iters.get(i, {}).get("n_inner", 0)
        wanted += [store.entries.get(("inner", i, m)) for m in range(n_inner)]
    if plan.get("restore_final"):
        wanted.append(store.final())
    entries = [e for e in wanted if e is not None]
    if any("refs" not in e for e in entries):
        return None
    by_seq = {e["seq"]: e["file"] for e in store.entries.values()}
    seqs: set[int] = set()
    todo = [e["seq"] for e in entries]
    refs = {e["seq"]: e.get("refs", []) for e in store.entries.values()}
    while todo:
        seq = todo.pop()
        if seq not in seqs:
            seqs.add(seq)
            todo += refs.get(seq, [])
    return sorted(by_seq[s] for s in seqs if s in by_seq)


def checkpoint_archive(run_dir: Path, names: list[str] | None = None,
                       with_record: bool = True, subdir: str | None = None) -> bytes:
    """A tar of a run's checkpoint files `names` (None: the whole folder, manifest
    included), laid out as a worker's private store; `with_record` adds the manifest and
    this machine's digest record of the run's files. `subdir`: a resumed segment's own
    folder (`seg<N>`, checked by `CheckpointStore`) instead of the run's first."""
    from . import ledger
    from .ckpt_store import CheckpointStore

    run_id = Path(run_dir).name
    folder = CheckpointStore(run_dir, subdir).dir if subdir else Path(run_dir) / CKPT_DIRNAME
    inside = f"store/runs/{run_id}/{CKPT_DIRNAME}" + (f"/{subdir}" if subdir else "")
    if names is None:
        add = [(folder, inside)]
    else:
        add = [(folder / name, f"{inside}/{name}") for name in names]
        if with_record:
            add.append((folder / MANIFEST, f"{inside}/{MANIFEST}"))
    if with_record:
        add.append((ledger.run_ledger(Path(run_dir)),
                    f"store/local/checkpoints/{run_id}.jsonl"))
    return _tar(add)


def _capture_folder(run_dir: Path, loop: str) -> Any:
    """The callback recorder's captures of the run at `run_dir` whose manifest says its
    captures end `loop` indices (a `CapturedIterations`; None: no such recorder). The
    plan names the loop, never the recorder: hindsight knows no framework."""
    from .callback_captures import recorders

    return next((c for c in recorders(run_dir) if c.replay.get("loop") == loop), None)


class Packer:
    """Builds payloads; each tree and checkpoint archive is built (and shipped) once."""

    def __init__(self) -> None:
        self.trees: dict[str, bytes] = {}
        self.ckpts: dict[str, bytes] = {}  # one per checkpoint file (and run record)
        self._sets: dict[str, tuple[Path, list[str] | None, str | None]] = {}  # a task's whole set
        self._set_bytes: dict[str, bytes] = {}
        # A share of a callback-captured run's epochs: its capture files, one archive.
        self._capture_sets: dict[str, list[tuple[Path, str]]] = {}

    def pack(self, task: Any) -> Payload:
        """The payload of `task` (an `executor.Task` made by `jobs.materialize`)."""
        job = task.meta["job"]
        tree = Path(job.tree)
        plan = json.loads((task.scratch / "plan.json").read_text(encoding="utf-8"))
        run_dir = Path(plan["run_dir"])
        run_id = run_dir.name
        tree_key = "tree:" + _key(str(job.workdir))
        if tree_key not in self.trees:
            git = (job.plan.info.meta.get("git") or {}) if job.plan else {}
            project = [Path(git["root"])] if git.get("root") else []
            self.trees[tree_key] = tar_tree(tree, [tree, *project])
        ckpt_key, parts = None, []
        if plan.get("checkpoints"):
            names = needed_files(run_dir, plan)
            sub = plan.get("ckpt_subdir")  # a resumed segment's own folder, if any
            parts = [self._part(run_dir, None, "record", sub)]
            if names is None:  # a run recorded before refs: its whole folder
                parts.append(self._part(run_dir, None, "all", sub))
            else:
                parts += [self._part(run_dir, [name], name, sub) for name in names]
            ckpt_key = "ckptset:" + _key(f"{run_dir}\n{sub or ''}\n" + "\n".join(
                names or ["*"]))
            self._sets[ckpt_key] = (run_dir, names, sub)
        elif plan.get("callback_loop") and plan.get("restore_first"):
            ckpt_key, parts = self._capture_parts(run_dir, str(plan["callback_loop"]),
                                                  int(plan["first"]) - 1)
        # Paths on the driver mean nothing there: the worker fills in its own.
        plan["run_dir"] = plan["scratch"] = None
        script = Path(task.argv[1]).relative_to(tree).as_posix()
        cwd = Path(task.cwd).relative_to(tree).as_posix()
        env = {k: v for k, v in task.env.items() if k in THREAD_VARS}
        return Payload(task.id, run_id, tree_key, ckpt_key, plan, script, cwd,
                       list(task.argv[2:]), env, parts)

    def _part(self, run_dir: Path, names: list[str] | None, what: str,
              sub: str | None = None) -> str:
        """The key of one shared checkpoint archive ("record": manifest and digest
        record; "all": the whole folder; else the file named) of the run's first
        recording, or of a resumed segment's own folder `sub`."""
        key = "ckpt:" + _key(f"{run_dir}\n{sub or ''}\n{what}")
        if key not in self.ckpts:
            if what == "record":
                self.ckpts[key] = checkpoint_archive(run_dir, [], subdir=sub)
            elif what == "all":
                self.ckpts[key] = checkpoint_archive(run_dir, None, False, sub)
            else:
                self.ckpts[key] = checkpoint_archive(run_dir, names, False, sub)
        return key

    def _capture_parts(self, run_dir: Path, loop: str,
                       index: int) -> tuple[str | None, list[str]]:
        """The archive key and shared parts of the callback recorder's capture of `loop`
        index `index` (a share of a run's epochs starts right after it): its manifest
        and this machine's digest record of its files, then each file restoring it
        reads, laid out as the worker's private store. (None, []) when no recorder of
        `loop` captured `index`: the worker then says why it trains from the start."""
        captures = _capture_folder(run_dir, loop)
        if captures is None or index not in captures.entries:
            return None, []
        store_root = run_dir.parent.parent

        def arc(path: Path) -> str:
            return "store/" + path.relative_to(store_root).as_posix()

        names = captures.needed_files(index)
        record = [(captures.dir / MANIFEST, arc(captures.dir / MANIFEST)),
                  (captures.ledger, arc(captures.ledger))]
        files = [[(captures.dir / n, arc(captures.dir / n))] for n in names]
        parts = []
        for add in [record, *files]:
            key = "ckpt:" + _key(f"{run_dir}\n{captures.dir.name}\n{add[0][1]}")
            if key not in self.ckpts:
                self.ckpts[key] = _tar(add)
            parts.append(key)
        set_key = "ckptset:" + _key(f"{run_dir}\n{captures.dir.name}\n" + "\n".join(names))
        self._capture_sets[set_key] = [pair for add in [record, *files] for pair in add]
        return set_key, parts

    def shared(self, key: str | None) -> bytes | None:
        """The bytes of a shared archive: a tree, one checkpoint part, or (`ckpt_key`) a
        task's checkpoint files in one archive."""
        if key is None:
            return None
        if key in self._sets:
            if key not in self._set_bytes:
                run_dir, names, sub = self._sets[key]
                self._set_bytes[key] = checkpoint_archive(run_dir, names, subdir=sub)
            return self._set_bytes[key]
        if key in self._capture_sets:
            if key not in self._set_bytes:
                self._set_bytes[key] = _tar(self._capture_sets[key])
            return self._set_bytes[key]
        return self.trees.get(key, self.ckpts.get(key))


def _safe_extract(data: bytes, into: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            parts = PurePosixPath(member.name).parts
            if member.name.startswith("/") or ".." in parts:
                raise ValueError(f"refusing archive member {member.name!r}")
            if member.issym() or member.islnk():
                raise ValueError(f"refusing link in archive: {member.name!r}")
        tar.extractall(into, filter="data")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """A script must not outlive its (killed) worker process."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def run_payload(payload: dict[str, Any] | Payload, tree: bytes,
                *ckpts: bytes | None) -> dict[str, Any]:
    """On a worker: unpack, run the task's script, return its scratch files and status.
    `ckpts`: the task's checkpoint archive(s) (`ckpt_key`, or each of `ckpt_parts`).

    Returns `{"returncode", "seconds", "files": {relative path: bytes}, "host"}`.
    """
    import socket

    if isinstance(payload, Payload):
        payload = dict(payload.__dict__)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowillower-task-") as tmp:
        root = Path(tmp)
        _safe_extract(tree, root)
        for ckpt in ckpts:
            if ckpt is not None:
                _safe_extract(ckpt, root)
        scratch = root / "scratch"
        scratch.mkdir()
        plan = dict(payload["plan"])
        plan["run_dir"] = str(root / "store" / "runs" / payload["run_id"])
        plan["scratch"] = str(scratch)
        plan_path = scratch / "plan.json"
        plan_path.write_text(json.dumps(plan), encoding="utf-8")
        import flowillower

        from .session import REPLAY_ENV

        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FLOWILLOWER_") and k != "PYTHONPATH"}
        env.update(payload.get("env") or {})
        env[REPLAY_ENV] = str(plan_path)
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONPATH"] = str(Path(flowillower.__file__).resolve().parent.parent)
        tree_dir = root / "tree"
        cwd = tree_dir / payload["cwd"]
        cwd.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, str(tree_dir / payload["script"]), *payload["args"]]
        with open(scratch / "output.log", "wb") as log:
            proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    preexec_fn=_die_with_parent)
            try:
                code = proc.wait()
            except BaseException:  # cancelled: take the script down with us
                proc.kill()
                proc.wait()
                raise
        files: dict[str, bytes] = {}
        total = 0
        for path in sorted(scratch.rglob("*")):
            if path.is_file() and path.name != "plan.json" and not path.is_symlink():
                data = path.read_bytes()
                total += len(data)
                if total > RESULT_LIMIT:
                    raise RuntimeError("the task's results exceed 1 GiB")
                files[path.relative_to(scratch).as_posix()] = data
    return {"returncode": code, "seconds": time.perf_counter() - t0, "files": files,
            "host": socket.gethostname()}


def unpack_result(scratch: Path, result: dict[str, Any]) -> None:
    """Write a worker's returned files into the task's scratch folder (driver side)."""
    scratch = Path(scratch).resolve()
    for rel, data in result.get("files", {}).items():
        target = (scratch / rel).resolve()
        if scratch not in target.parents:
            raise ValueError(f"a worker returned a file outside its scratch folder: {rel!r}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, target)


def write_failure(scratch: Path, reason: str) -> None:
    """Append why a remote task produced nothing to its log (shown in the report)."""
    scratch.mkdir(parents=True, exist_ok=True)
    with open(scratch / "output.log", "a", encoding="utf-8") as fh:
        fh.write(reason.rstrip() + "\n")
