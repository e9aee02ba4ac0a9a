"""Webhook messages: one JSON body that Slack, Discord and Feishu/Lark incoming webhooks
accept, and a POST that never raises. Shared by run-end notices and alerts (`alerts`)."""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import urlsplit

__all__ = ["webhook_body", "post_json", "post_error", "redact"]


def webhook_body(url: str, text: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    """The body for `url`'s service: Feishu/Lark and Discord get their own shapes; any
    other (Slack, a self-hosted receiver) gets `{"text": ..., **fields}`."""
    if "feishu" in url or "larksuite" in url:
        return {"msg_type": "text", "content": {"text": text}}
    if "discord" in url:
        return {"content": text}
    return {"text": text, **(fields or {})}


def redact(url: str) -> str:
    """The scheme and host of a webhook address: its path is the secret (Slack, Discord)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    return f"{parts.scheme}://{parts.hostname or ''}/…" if parts.scheme else "<not a url>"


def post_error(url: str, body: dict[str, Any], timeout: float = 5.0) -> str | None:
    """POST `body` as JSON: None when the receiver took it, else what went wrong (the
    address redacted, ready to show). Never raises."""
    import urllib.request  # only when posting: it costs ~13 ms to import

    try:
        data = json.dumps(body, default=str).encode()
        request = urllib.request.Request(url, data=data, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if 200 <= response.status < 300:
                return None
            problem = f"HTTP {response.status}"
    except Exception as exc:
        problem = str(exc) or type(exc).__name__
    return f"webhook {redact(url)} failed: {problem.replace(url, redact(url))}"


def post_json(url: str, body: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST `body` as JSON; on any failure print one line on stderr (the address
    redacted) and return False. Never raises: a dead webhook must not stop training."""
    problem = post_error(url, body, timeout)
    if problem is not None:
        print(f"flowillower: {problem}", file=sys.stderr)
    return problem is None
