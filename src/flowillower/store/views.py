"""Saved views: named UI views (a page with its filter, columns and chart panels) kept
in the store, one small JSON file per view under ``<store>/views/``.

A view is the UI's URL hash (``#/charts?sel=a,b&x=step&group=arg:lr``): every page
writes its whole state there, so saving the hash saves the view. One file per view,
named by a digest of the view's name, keeps two tabs or two users saving different views
from overwriting each other, and a save of the same name replaces that view atomically.
Files are read back defensively: a damaged or hand-edited file is skipped, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

__all__ = ["SavedViews", "ViewError", "MAX_VIEWS", "MAX_HASH", "MAX_NAME"]

MAX_NAME = 100
MAX_HASH = 8000
MAX_VIEWS = 500
_MAX_FILE = 64 * 1024  # a view file is a few hundred bytes; anything huge is not ours


class ViewError(ValueError):
    """A view we refuse to save or delete, with what to fix."""


def _check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ViewError("a view needs a name")
    name = name.strip()
    if len(name) > MAX_NAME:
        raise ViewError(f"a view name has at most {MAX_NAME} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ViewError("a view name cannot contain control characters")
    return name


def _check_hash(view_hash: Any) -> str:
    if not isinstance(view_hash, str) or not view_hash.startswith("#/"):
        raise ViewError("a view is a UI address starting with '#/' (the part after the "
                        "page's '#')")
    if len(view_hash) > MAX_HASH:
        raise ViewError(f"a view address has at most {MAX_HASH} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in view_hash):
        raise ViewError("a view address cannot contain control characters")
    return view_hash


class SavedViews:
    """The saved views of the store at `store_root` (``<store>/views/*.json``)."""

    def __init__(self, store_root: str | os.PathLike[str]) -> None:
        self.folder = Path(store_root) / "views"

    def _path(self, name: str) -> Path:
        # A digest, not the name: any name is a safe, fixed-length file name.
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:24]
        return self.folder / f"{digest}.json"

    def list(self) -> list[dict[str, Any]]:
        """Every readable view, sorted by name (case-insensitive)."""
        if not self.folder.is_dir() or self.folder.is_symlink():
            return []
        views = []
        for path in sorted(self.folder.glob("*.json")):
            view = self._read(path)
            if view is not None:
                views.append(view)
        return sorted(views, key=lambda v: (v["name"].casefold(), v["name"]))

    def _read(self, path: Path) -> dict[str, Any] | None:
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size > _MAX_FILE:
                return None
            doc = json.loads(path.read_text(encoding="utf-8"))
            name, view_hash = _check_name(doc.get("name")), _check_hash(doc.get("hash"))
        except (OSError, ValueError, AttributeError, UnicodeDecodeError):
            return None
        if path.name != self._path(name).name:  # renamed by hand: not the file we'd write
            return None
        saved = doc.get("saved")
        return {"name": name, "hash": view_hash,
                "saved": saved if isinstance(saved, (int, float)) else None}

    def get(self, name: str) -> dict[str, Any] | None:
        """The view called `name`, or None."""
        return self._read(self._path(_check_name(name)))

    def save(self, name: str, view_hash: str) -> dict[str, Any]:
        """Save (or replace) the view `name` pointing at the UI address `view_hash`."""
        name, view_hash = _check_name(name), _check_hash(view_hash)
        path = self._path(name)
        if self.folder.is_symlink():
            raise ViewError(f"{self.folder} is a link; refusing to write through it")
        self.folder.mkdir(parents=True, exist_ok=True)
        if not path.exists() and len(list(self.folder.glob("*.json"))) >= MAX_VIEWS:
            raise ViewError(f"at most {MAX_VIEWS} saved views; delete some first")
        doc = {"name": name, "hash": view_hash, "saved": round(time.time(), 3)}
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp")
        try:
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, path)  # readers see the old view or the new one, never half
        except BaseException:
            tmp.unlink(missing_ok=True)  # full disk: no leftover, the old view stays
            raise
        return doc

    def delete(self, name: str) -> bool:
        """Forget the view `name`; False when there was none."""
        path = self._path(_check_name(name))
        if path.is_symlink() or not path.is_file():
            return False
        path.unlink()
        return True
