"""`PUT /api/runs/{run}/fetched-media`: a pulled run's media, fetched when it is opened.

The run page calls it before drawing images: for a run `pull --no-media` brought, it
fetches that run's media and artifacts from the remote it came from
(`gitops.pullmedia`); for any other run it answers at once. A remote that cannot be
reached is a 502 whose message says so; the page shows it and keeps working.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .routing import ApiError, Endpoint, P

__all__ = ["media_fetch_endpoints"]


def media_fetch_endpoints(store_root: Path) -> list[Endpoint]:
    """The on-demand media endpoint over the store at `store_root`."""

    def fetch_media(run: str) -> dict[str, Any]:
        from ..gitops.pullmedia import MediaFetchError, fetch_run_media  # git on demand

        try:
            return fetch_run_media(store_root, run)
        except ValueError as exc:
            raise ApiError(404, str(exc)) from None
        except MediaFetchError as exc:
            raise ApiError(502, str(exc)) from None

    run = P("run", where="path", required=True, max_length=200, description="the run id")
    return [Endpoint("PUT", "/api/runs/{run}/fetched-media", fetch_media,
                     "Fetch a pulled run's media left on its remote (pull --no-media)", [run],
                     mutating=True, tag="runs")]
