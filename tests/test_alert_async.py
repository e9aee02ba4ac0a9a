"""`fw.alert` never waits for a webhook: a real receiver on 127.0.0.1 that takes seconds to
answer still gets the alert, while the training thread goes on at once; pending alerts
are flushed with a deadline (also when the script ends), and a full queue drops alerts
instead of growing or blocking."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import wait_for

import flowillower as fw
from flowillower.alerts import flush_alerts
from flowillower.notify import WebhookSender
from flowillower.store.reader import RunReader


class SlowReceiver:
    """A webhook that holds every request `delay` seconds (or until released)."""

    def __init__(self, delay: float) -> None:
        self.bodies: list[dict] = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.release.wait(delay)
                receiver.bodies.append(body)
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook/SECRET"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow() -> Iterator[SlowReceiver]:
    receiver = SlowReceiver(delay=2.0)
    yield receiver
    receiver.close()


def test_alert_returns_at_once_and_still_arrives(slow):
    run = fw.init(project="alerts", snapshot=False)
    fw.log("loss", 1.0, step=0)
    took = []
    for i in range(3):
        start = time.perf_counter()
        assert fw.alert(f"slow {i}", "the webhook takes 2 s", "warn", webhook=slow.url)
        took.append(time.perf_counter() - start)
        fw.log("loss", 0.5, step=i + 1)  # training goes on meanwhile
    # Synchronous posting took 2 s per alert; queued, a call is a small fraction of that.
    assert max(took) < 0.5, took
    assert slow.bodies == []  # none has been answered yet
    wait_for(lambda: len(slow.bodies) == 3, timeout=60, what="the three alerts")
    assert [b["alert"]["title"] for b in slow.bodies] == ["slow 0", "slow 1", "slow 2"]
    fw.finish()
    events = [e["title"] for e in RunReader(run.dir).load().events if e["event"] == "alert"]
    assert events == ["slow 0", "slow 1", "slow 2"]


def test_flush_waits_for_pending_alerts_at_most_its_deadline():
    hung = SlowReceiver(delay=60.0)
    try:
        fw.init(project="alerts", snapshot=False)
        assert fw.alert("stuck", webhook=hung.url)
        start = time.monotonic()
        assert flush_alerts(timeout=1.0) == 1  # still pending: the receiver holds it
        assert time.monotonic() - start < 10  # the deadline (1 s), with room for the box
        fw.finish()
        hung.release.set()
        assert flush_alerts(timeout=30) == 0  # answered: nothing pending any more
        assert [b["alert"]["title"] for b in hung.bodies] == ["stuck"]
    finally:
        hung.close()


def test_a_full_queue_drops_alerts_and_says_so(capfd):
    hung = SlowReceiver(delay=60.0)
    sender = WebhookSender(capacity=2)
    try:
        taken = [sender.submit(hung.url, {"text": str(i)}, timeout=30) for i in range(5)]
        # the first is being posted (or still queued), the next fill the queue; the rest
        # are dropped, never blocking the caller
        assert taken[:2] == [True, True] and taken[-1] is False
        assert sender.dropped >= 2
        err = capfd.readouterr().err
        assert "alert(s) dropped" in err and "SECRET" not in err
    finally:
        hung.release.set()
        assert sender.flush(30) == 0
        hung.close()


SCRIPT = """
import sys, time
import flowillower as fw
fw.init(project="alerts", dir=sys.argv[2], snapshot=False)
fw.log("loss", 1.0, step=0)
start = time.perf_counter()
for i in range(int(sys.argv[3])):
    fw.alert("last words", f"alert {i}, sent as the script ends", webhook=sys.argv[1])
print(f"alerts took {time.perf_counter() - start:.3f}", flush=True)
fw.finish()
"""


def test_a_script_that_ends_still_sends_its_last_alert(tmp_path, slow):
    script = tmp_path / "train.py"
    script.write_text(textwrap.dedent(SCRIPT))
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(script), slow.url, str(tmp_path / "store"), "1"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert float(out.split()[-1]) < 0.5  # the call itself did not wait for the webhook
    assert [b["alert"]["title"] for b in slow.bodies] == ["last words"]  # exit flushed it
    assert time.monotonic() - start < 60


def test_a_script_that_ends_waits_at_most_the_deadline(tmp_path):
    hung = SlowReceiver(delay=120.0)
    try:
        script = tmp_path / "train.py"
        script.write_text(textwrap.dedent(SCRIPT))
        start = time.monotonic()
        subprocess.run([sys.executable, str(script), hung.url, str(tmp_path / "store"),
                        "10"], capture_output=True, text=True, timeout=100, check=True)
        # Ten posts, each given up after 5 s: 50 s without a deadline; the exit waits
        # EXIT_DEADLINE (5 s) and goes.
        assert time.monotonic() - start < 30
        assert hung.bodies == []
    finally:
        hung.close()


def test_flush_after_finish_includes_the_rules_last_check():
    quick = SlowReceiver(delay=0.0)
    try:
        fw.init(project="alerts", snapshot=False)
        rules = fw.alert_rules(quick.url, nan=["loss"], check_every=60)  # a check a minute
        fw.log("loss", float("nan"), step=0)
        fw.finish()  # the rules make their last check once the run has ended
        assert flush_alerts(timeout=30) == 0
        assert [b["alert"]["title"] for b in quick.bodies] == ["loss is nan"]
        assert not rules.thread.is_alive()
    finally:
        quick.close()


def test_finish_sends_pending_alerts_waiting_at_most_its_deadline(slow):
    fw.init(project="alerts", snapshot=False)
    fw.log("loss", 1.0, step=0)
    fw.alert("before the end", webhook=slow.url)  # the receiver answers after 2 s
    fw.finish()
    assert [b["alert"]["title"] for b in slow.bodies] == ["before the end"]
    hung = SlowReceiver(delay=120.0)
    try:
        fw.init(project="alerts", snapshot=False)
        fw.log("loss", 1.0, step=0)
        for i in range(10):  # 50 s of posts (each given up after 5 s)
            fw.alert(f"stuck {i}", webhook=hung.url)
        start = time.monotonic()
        fw.finish()
        assert time.monotonic() - start < 30  # FINISH_DEADLINE (5 s), with room for the box
    finally:
        hung.close()
        flush_alerts(60)
