"""The saved-views endpoints: list, save and delete named UI views of the store.

A view is a UI address (the URL hash with every setting of a page); the files live in
``<store>/views/`` (`store/views.py`). Saving and deleting are mutating requests, so
they get the same CSRF / token checks as every other edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..store.views import MAX_HASH, MAX_NAME, SavedViews, ViewError
from .routing import ApiError, Endpoint, P

__all__ = ["saved_view_endpoints"]


def saved_view_endpoints(store_root: Path) -> list[Endpoint]:
    """The `/api/views` endpoints over the store at `store_root`."""
    views = SavedViews(store_root)

    def list_views() -> dict[str, Any]:
        return {"views": views.list()}

    def save_view(body: dict[str, Any]) -> dict[str, Any]:
        try:
            saved = views.save(body.get("name", ""), body.get("hash", ""))
        except ViewError as exc:
            raise ApiError(400, str(exc)) from None
        except OSError as exc:  # a full or read-only disk: say so, keep the old view
            raise ApiError(507, f"could not save the view: {exc.strerror or exc}") from None
        return {"ok": True, "view": saved, "views": views.list()}

    def delete_view(name: str) -> dict[str, Any]:
        try:
            found = views.delete(name)
        except ViewError as exc:
            raise ApiError(400, str(exc)) from None
        if not found:
            raise ApiError(404, f"no saved view named {name!r}")
        return {"ok": True, "views": views.list()}

    name = P("name", where="path", required=True, max_length=MAX_NAME * 4,
             description="the view's name")
    return [
        Endpoint("GET", "/api/views", list_views, "Saved views of this store", tag="views"),
        Endpoint("PUT", "/api/views", save_view, "Save (or replace) a named view",
                 body={"type": "object", "additionalProperties": False,
                       "required": ["name", "hash"], "properties": {
                           "name": {"type": "string", "maxLength": MAX_NAME},
                           "hash": {"type": "string", "maxLength": MAX_HASH}}},
                 mutating=True, tag="views"),
        Endpoint("DELETE", "/api/views/{name}", delete_view, "Forget a saved view", [name],
                 mutating=True, tag="views"),
    ]
