"""A pulled run's media, fetched when it is opened (after `pull --no-media`).

Only that run's ref is fetched, from the remote its pull record names, and only its
`media/` and `artifacts/` files are written, through the same checks as any pull
(`incoming`), added, never replacing a file here. A run made on this machine, or one with
nothing left on the remote, costs a look at its pull record and no git process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import GitError
from ..store.provenance import pulled_info
from .incoming import valid_run_id
from .pull import pull

__all__ = ["MediaFetchError", "fetch_run_media"]


class MediaFetchError(GitError):
    """The remote a run came from cannot give its media now (unreachable, run gone)."""


def fetch_run_media(store_root: Path, run_id: str) -> dict[str, Any]:
    """Fetch the media and artifacts `pull --no-media` left on the remote for `run_id`.

    Returns `{"run", "pulled" (whether the run came by pull), "files_added",
    "media_left" (still missing afterwards), "remote", "refused"}`; raises
    `MediaFetchError` when the remote cannot be reached and `ValueError` for a value
    that is not a run id.
    """
    if not valid_run_id(run_id):
        raise ValueError(f"not a run id: {run_id!r}")
    store_root = Path(store_root).resolve()
    if not (store_root / "runs" / run_id / "run.json").is_file():
        raise ValueError(f"no run {run_id} here")
    record = pulled_info(store_root, run_id)
    out: dict[str, Any] = {"run": run_id, "pulled": record is not None, "files_added": 0,
                           "media_left": int((record or {}).get("media_left") or 0),
                           "remote": (record or {}).get("remote"), "refused": []}
    if record is None or not out["media_left"] or record.get("error"):
        return out
    remote = str(record.get("remote") or record.get("url") or "")
    try:
        got = pull(store_root, remote, run_ids=[run_id], media_only=True)
    except GitError as exc:
        raise MediaFetchError(f"could not fetch the media of run {run_id} from {remote}: "
                              f"the remote cannot be reached now ({exc})") from None
    out["files_added"] = got["files_added"]
    out["refused"] = got["refused"].get(run_id, []) + [
        why for rid, why in got["runs_refused"] if rid == run_id]
    after = pulled_info(store_root, run_id) or {}
    out["media_left"] = int(after.get("media_left") or 0)
    return out
