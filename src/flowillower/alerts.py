"""Alerts: `fw.alert(title, text, level)` and opt-in rules that send one for you.

An alert goes to a webhook in the formats run-end notices use (`notify`: Slack, Discord,
Feishu/Lark, or any receiver taking `{"text": ...}`) and is recorded in the run as an
`alert` event. Rules (`fw.alert_rules`) watch what the run wrote: a watcher thread reads
the new frames of the run's record files every `check_every` seconds, off the training
thread and without any cost on the logging path, and alerts when

* a metric becomes NaN or infinite (once, until the metric is finite again),
* a metric stops improving for N evaluations (once, until it improves),
* no metric is logged for T minutes (once, until values come again).

Posting is never done by the thread that raises an alert: `fw.alert` records the event,
queues the post for the background sender (`notify.send_later`) and returns in
microseconds, whatever the webhook does. Pending alerts are flushed with a deadline
(`flush_alerts`, and at the interpreter's exit); a process killed with SIGKILL loses
those still queued (the run's events keep them). A webhook that fails prints one line on
stderr and is otherwise ignored.
"""

from __future__ import annotations

import math
import os
import threading
import time
from pathlib import Path
from typing import Any

from . import lifecycle
from .notify import EXIT_DEADLINE, flush, send_later, webhook_body

__all__ = ["alert", "alert_rules", "flush_alerts", "AlertRules", "LEVELS", "FINISH_DEADLINE"]

LEVELS = ("info", "warn", "error")
FINISH_DEADLINE = 5.0  # seconds fw.finish() waits for the alerts still queued
ENV_WEBHOOK = "FLOWILLOWER_WEBHOOK"


def _send(run: Any, webhook: str | None, title: str, text: str, level: str) -> bool:
    if run is not None:
        try:
            run.event("alert", title=title, text=text, level=level)
        except Exception:
            pass
    url = webhook or os.environ.get(ENV_WEBHOOK)
    if not url:
        return False
    where = f" ({run.name}, {run.id})" if run is not None else ""
    message = f"[{level}] {title}{where}" + (f": {text}" if text else "")
    fields = {"alert": {"title": title, "text": text, "level": level,
                        "run": None if run is None else {"id": run.id, "name": run.name}}}
    return send_later(url, webhook_body(url, message, fields))


def flush_alerts(timeout: float = EXIT_DEADLINE) -> int:
    """Wait up to `timeout` seconds for the alerts still queued to be posted (and first
    for the rules of finished runs to make their last check); returns how many are still
    pending (0: every one was sent, or failed and said so on stderr)."""
    end = time.monotonic() + timeout
    for rules in list(_rules.values()):
        if rules.run.status is not None and rules.thread is not threading.current_thread():
            rules._wake.set()  # its last check now, not at its next tick
            rules.thread.join(max(0.0, end - time.monotonic()))
    return flush(max(0.0, end - time.monotonic()))


# fw.finish() waits for the alerts raised so far (this module is above run.py).
lifecycle.wait_at_finish(lambda: flush_alerts(FINISH_DEADLINE))

def alert(title: str, text: str = "", level: str = "warn", *, webhook: str | None = None
          ) -> bool:
    """Send an alert about the current run to `webhook` (default: the webhook of the run's
    `alert_rules`, else $FLOWILLOWER_WEBHOOK) and record it in the run. Returns at once,
    True when the post was queued for the background sender (False: no webhook, or its
    queue is full); a failing webhook prints one stderr line and never raises. A no-op
    under `fw.debug(True)` and on ranks that do not record."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, not {level!r}")
    from .api import active_run

    run = active_run()
    if run is None:  # fw.debug(True) or a rank that does not record: a no-op
        return False
    if webhook is None:
        rules = _rules.get(run.id)
        webhook = rules.webhook if rules is not None else None
    return _send(run, webhook, str(title), str(text), level)


class _Tail:
    """The new intact frames of one record file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset = path, 0
        self.keys: dict[int, tuple[str, str]] = {}
        self.contexts: dict[int, dict[str, int]] = {}

    def rows(self) -> list[tuple]:
        from .store.format import last_frame_end
        from .store.reader import decode_values

        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
        except OSError:
            return []
        end = last_frame_end(chunk)
        if not end:
            return []
        self.offset += end
        decoded = decode_values(chunk[:end])
        self.keys.update(decoded.keys)
        self.contexts.update(decoded.contexts)
        decoded.keys, decoded.contexts = self.keys, self.contexts
        return list(decoded.rows(lambda name, role: role == "metric"))


class AlertRules:
    """The rules of one run and the thread checking them (see `alert_rules`)."""

    def __init__(self, run: Any, webhook: str | None, nan: bool | list[str],
                 stall: dict[str, int | tuple[int, str]], silent_minutes: float | None,
                 check_every: float) -> None:
        self.run, self.webhook = run, webhook
        self.nan = nan
        self.stall = {k: (v, "min") if isinstance(v, int) else (int(v[0]), v[1])
                      for k, v in (stall or {}).items()}
        for name, (count, mode) in self.stall.items():
            if count < 1 or mode not in ("min", "max"):
                raise ValueError(f"stall[{name!r}]: give N >= 1 or (N, 'min'|'max')")
        self.silent = None if silent_minutes is None else float(silent_minutes) * 60.0
        self.check_every = float(check_every)
        self.sent: list[tuple[str, str]] = []  # (rule, metric) of each alert sent
        self._bad: set[str] = set()  # metrics now NaN / inf (alerted)
        self._best: dict[str, tuple[float, int, bool]] = {}  # best, evals since, alerted
        self._last_value = time.time()
        self._silent_sent = False
        self._tails: dict[Path, _Tail] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()  # check now (`flush_alerts` after the run ended)
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"flowillower-alerts-{run.id}")

    def stop(self, timeout: float = 5.0) -> None:
        """Stop watching (the run's end does this by itself) and wait for the thread."""
        self._stop.set()
        self._wake.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def _loop(self) -> None:
        # Short waits: the last check comes within half a second of the run's end.
        due = time.monotonic() + self.check_every
        while True:
            self._wake.wait(min(0.5, self.check_every))
            self._wake.clear()
            if self._stop.is_set():
                break
            finished = self.run.status is not None
            if finished or time.monotonic() >= due:
                self.check()
                due = time.monotonic() + self.check_every
            if finished:
                break
        if _rules.get(self.run.id) is self:
            del _rules[self.run.id]

    def _fire(self, rule: str, metric: str, title: str, text: str, level: str) -> None:
        self.sent.append((rule, metric))
        _send(self.run, self.webhook, title, text, level)

    def check(self, now: float | None = None) -> None:
        """Read what the run wrote since the last check and apply the rules."""
        run_dir = Path(self.run.dir)
        for path in sorted(run_dir.glob("data*.fwl")):
            tail = self._tails.setdefault(path, _Tail(path))
            for name, _role, kind, _coords, step, t, value in tail.rows():
                self._last_value = max(self._last_value, t)
                self._silent_sent = False
                if kind in ("float", "int"):
                    self._value(name, step, float(value))
        now = time.time() if now is None else now
        if (self.silent is not None and not self._silent_sent and self.run.status is None
                and now - self._last_value > self.silent):
            self._silent_sent = True
            minutes = (now - self._last_value) / 60.0
            self._fire("silent", "", "no metric logged",
                       f"nothing logged for {minutes:.1f} minutes", "warn")

    def _value(self, name: str, step: int, value: float) -> None:
        if self.nan is True or (self.nan and name in self.nan):
            if not math.isfinite(value):
                if name not in self._bad:
                    self._bad.add(name)
                    self._fire("nan", name, f"{name} is {value}",
                               f"{name} became {value} at step {step}", "error")
                return
            self._bad.discard(name)
        rule = self.stall.get(name)
        if rule is None or not math.isfinite(value):
            return
        patience, mode = rule
        best, since, alerted = self._best.get(name, (math.inf if mode == "min" else -math.inf,
                                                     0, False))
        if (value < best) if mode == "min" else (value > best):
            self._best[name] = (value, 0, False)
            return
        since += 1
        if since >= patience and not alerted:
            alerted = True
            self._fire("stall", name, f"{name} stopped improving",
                       f"no better value than {best:.6g} ({mode}) for {since} evaluations, "
                       f"up to step {step}", "warn")
        self._best[name] = (best, since, alerted)


# Run id -> its rules, while watching.
_rules: dict[str, AlertRules] = {}


def alert_rules(webhook: str | None = None, *, nan: bool | list[str] = True,
                stall: dict[str, int | tuple[int, str]] | None = None,
                silent_minutes: float | None = None, check_every: float = 5.0,
                run: Any = None) -> AlertRules | None:
    """Watch the current run (or `run`) until it finishes and alert through `webhook`
    (default $FLOWILLOWER_WEBHOOK) when a metric turns NaN/inf (`nan`: True for every
    metric or a list of names), a metric of `stall` ({name: N} or {name: (N, "max")})
    has not improved for N evaluations, or nothing was logged for `silent_minutes`.
    Replaces the run's earlier rules; None under `fw.debug(True)` or a silent rank."""
    if run is None:
        from .api import active_run

        run = active_run()
        if run is None:
            return None
    old = _rules.pop(run.id, None)
    if old is not None:
        old.stop()
    rules = AlertRules(run, webhook, nan, stall or {}, silent_minutes, check_every)
    _rules[run.id] = rules
    rules.thread.start()
    return rules
