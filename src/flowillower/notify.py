"""Webhook messages: one JSON body that Slack, Discord and Feishu/Lark incoming webhooks
accept, and a POST that never raises. Shared by run-end notices and alerts (`alerts`).

Alerts are posted by a background sender (`send_later`), never by the thread that raised
them: a slow or dead webhook (up to `timeout` seconds a post) must not stall training.
Its queue is bounded (`QUEUE_SIZE`: an alert past it is dropped with one stderr line);
`flush` waits for what is pending up to a deadline, and so does the interpreter's exit
(`EXIT_DEADLINE`). A process killed with SIGKILL loses the alerts still queued; each is
recorded in its run's events when raised, so the run keeps them anyway.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

__all__ = ["webhook_body", "post_json", "post_error", "redact", "WebhookSender",
           "send_later", "flush", "QUEUE_SIZE", "EXIT_DEADLINE"]

QUEUE_SIZE = 100  # alerts waiting to be posted; a burst past it is dropped, said once
EXIT_DEADLINE = 5.0  # seconds the interpreter's exit waits for pending alerts


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


class WebhookSender:
    """Posts queued webhook bodies one after another from a daemon thread."""

    def __init__(self, capacity: int = QUEUE_SIZE) -> None:
        self.capacity = capacity
        self.dropped = 0
        self._cond = threading.Condition()
        self._items: deque[tuple[str, dict[str, Any], float]] = deque()
        self._busy = 0  # posts in progress
        self._owner = -1  # pid whose thread serves the queue (none after a fork)

    def submit(self, url: str, body: dict[str, Any], timeout: float = 5.0) -> bool:
        """Queue one post; False (and one stderr line per burst) when the queue is full."""
        with self._cond:
            if self._owner != os.getpid():  # first use, or a forked child: a new thread
                self._items.clear()
                self._busy, self._owner = 0, os.getpid()
                threading.Thread(target=self._serve, daemon=True,
                                 name="flowillower-webhooks").start()
            if len(self._items) >= self.capacity:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % self.capacity == 0:
                    print(f"flowillower: {self.dropped} alert(s) dropped: {self.capacity} "
                          f"are waiting for {redact(url)}", file=sys.stderr)
                return False
            self._items.append((url, body, timeout))
            self._cond.notify_all()
        return True

    def pending(self) -> int:
        """Posts queued or in progress."""
        with self._cond:
            return len(self._items) + self._busy

    def flush(self, timeout: float) -> int:
        """Wait until every queued post is done, at most `timeout` seconds; returns how
        many are still pending (0: all sent or failed)."""
        end = time.monotonic() + max(0.0, timeout)
        with self._cond:
            if self._owner != os.getpid():
                return 0  # nothing was queued by this process
            while self._items or self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return len(self._items) + self._busy

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                url, body, timeout = self._items.popleft()
                self._busy += 1
            try:
                post_json(url, body, timeout)
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()


_sender = WebhookSender()


def send_later(url: str, body: dict[str, Any], timeout: float = 5.0) -> bool:
    """POST `body` to `url` from the background sender; returns at once (True: queued)."""
    return _sender.submit(url, body, timeout)


def flush(timeout: float = EXIT_DEADLINE) -> int:
    """Wait up to `timeout` seconds for queued alerts to be posted; returns how many are
    still pending (they may still go out while the process lives)."""
    return _sender.flush(timeout)


atexit.register(flush, EXIT_DEADLINE)  # a script's last alerts go out before it ends
