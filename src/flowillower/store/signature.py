"""A run folder's signature: a few stats that change when the index must read it again.

The index (`store.index`) keeps each run's signature and re-reads a run only when it
differs. A finished run's folder changes when summary.json, replays/ or notes/ appear, and
its subfolders when a replay or a note is added; a live run also appends to its frame
files, which no folder notices, so its signature is the long one.
"""

from __future__ import annotations

import os
from pathlib import Path

from .segments import segment_number

# What may change in a run folder, and where it shows. Creating summary.json, replays/ or
# notes/ changes the folder's own mtime; a new replay or note changes its subfolder's;
# only a live run appends to data.fwl without any folder noticing.
FINISHED_PARTS = ("", "replays", "notes")
LIVE_PARTS = ("", "replays", "notes", "data.fwl", "run.json")


def signature(run_dir: str | Path, live: bool = True, names: list[str] | None = None,
              own: os.stat_result | None = None) -> str:
    """Cheap change detector: a few stats, no reads (plain strings: pathlib costs more
    than the stat itself at 10,000 runs). `names`: the folder's listing, taken after its
    own stat (`own`), when the caller has them: parts it lacks are not stat'ed."""
    parts = []
    base = os.fspath(run_dir)
    for rel in (LIVE_PARTS if live else FINISHED_PARTS):
        if rel and names is not None and rel not in names:
            parts.append("-")
            continue
        try:
            st = own if own is not None and not rel else os.stat(base + "/" + rel if rel
                                                                 else base)
            parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    if live:  # a resumed run appends to its newest segment file (store/segments.py)
        try:
            segs = [n for n in (os.listdir(base) if names is None else names)
                    if n.startswith("data.seg")]
            if segs:
                st = os.stat(base + "/" + max(segs, key=segment_number))
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
        except OSError:
            parts.append("-")
    return "|".join(parts)


def first_look(path: str) -> tuple[str, list[str]] | None:
    """The signature and listing of a run folder the index has never seen: the folder's
    stat first, then its listing, then its parts (a change after the stat shows at the
    next sync, never hides). The short signature when the run has finished
    (summary.json), the long one otherwise. None when the folder is gone."""
    try:
        st = os.stat(path)
        names = os.listdir(path)
    except OSError:
        return None
    live = "summary.json" not in names
    return signature(path, live, names, st), names
