"""Alerts: `fw.alert` and the opt-in rules post to a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import wait_for

import flowillower as fw
from flowillower.alerts import flush_alerts
from flowillower.notify import redact, webhook_body
from flowillower.store.reader import RunReader


class Receiver:
    """A webhook receiver: records every JSON body; answers `status`."""

    def __init__(self, status: int = 200) -> None:
        self.bodies: list[dict] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.paths.append(self.path)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/T000/SECRET123"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def alerts(self, rule_word: str) -> list[dict]:
        return [b for b in self.bodies if rule_word in b["text"]]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


def test_fw_alert_posts_title_text_level_and_records_an_event(receiver):
    run = fw.init(project="alerts", name="night-run")
    fw.log("loss", 1.0)
    assert fw.alert("disk almost full", "12 GB left", "error", webhook=receiver.url)
    wait_for(lambda: receiver.bodies, timeout=30, what="the alert (posted in the background)")
    body = receiver.bodies[0]
    assert body["text"] == f"[error] disk almost full (night-run, {run.id}): 12 GB left"
    assert body["alert"] == {"title": "disk almost full", "text": "12 GB left",
                             "level": "error", "run": {"id": run.id, "name": "night-run"}}
    assert receiver.paths == ["/hooks/T000/SECRET123"]
    with pytest.raises(ValueError):
        fw.alert("x", level="panic")
    fw.finish()
    events = [e for e in RunReader(run.dir).load().events if e["event"] == "alert"]
    assert [(e["title"], e["level"]) for e in events] == [("disk almost full", "error")]


def test_webhook_formats_are_the_services_own():
    assert webhook_body("https://discord.com/api/webhooks/1/x", "hi") == {"content": "hi"}
    assert webhook_body("https://open.feishu.cn/open-apis/bot/v2/hook/x", "hi") == {
        "msg_type": "text", "content": {"text": "hi"}}
    assert webhook_body("https://hooks.slack.com/services/T/B/x", "hi", {"a": 1}) == {
        "text": "hi", "a": 1}
    assert redact("https://hooks.slack.com/services/T/B/secret") == "https://hooks.slack.com/…"


def test_nan_alert_once_and_stall_alert(receiver):
    run = fw.init(project="alerts")
    rules = fw.alert_rules(receiver.url, nan=["loss"], stall={"val/acc": (3, "max")},
                           check_every=0.05)
    assert rules is not None
    for step in range(5):
        fw.log("loss", 1.0 / (step + 1), step=step)
    for step in range(5, 40):  # NaN at every step from here: one alert, not 35
        fw.log("loss", float("nan"), step=step)
        fw.flush()
    wait_for(lambda: receiver.alerts("loss became nan"), timeout=30, what="the NaN alert")
    for step, acc in enumerate([0.5, 0.6, 0.7, 0.65, 0.7, 0.69]):
        fw.log("val/acc", acc, step=step)
        fw.flush()
    wait_for(lambda: receiver.alerts("val/acc stopped improving"), timeout=30,
             what="the stall alert")
    fw.log("loss", math.inf, step=40)  # still not finite: no new alert
    fw.finish()
    wait_for(lambda: not rules.thread.is_alive(), timeout=30, what="the watcher to stop")
    nan_alerts = receiver.alerts("loss")
    assert len(nan_alerts) == 1 and "at step 5" in nan_alerts[0]["text"]
    assert nan_alerts[0]["alert"]["level"] == "error"
    stall = receiver.alerts("val/acc")
    assert len(stall) == 1
    assert "no better value than 0.7 (max) for 3 evaluations" in stall[0]["alert"]["text"]
    assert rules.sent == [("nan", "loss"), ("stall", "val/acc")]
    assert RunReader(run.dir).status == "success"


def test_nan_alert_again_after_the_metric_recovers(receiver):
    fw.init(project="alerts")
    rules = fw.alert_rules(receiver.url, check_every=0.05)
    for step, v in enumerate([1.0, float("nan"), float("nan"), 0.5, float("-inf")]):
        fw.log("loss", v, step=step)
    fw.finish()
    wait_for(lambda: not rules.thread.is_alive(), timeout=30)
    texts = [b["text"] for b in receiver.bodies]
    assert len(texts) == 2 and "nan at step 1" in texts[0] and "-inf at step 4" in texts[1]


def test_silence_alert_once(receiver):
    fw.init(project="alerts")
    fw.log("loss", 1.0)
    rules = fw.alert_rules(receiver.url, silent_minutes=0.3 / 60, check_every=0.05)
    wait_for(lambda: receiver.alerts("no metric logged"), timeout=30, what="silence alert")
    wait_for(lambda: len(rules.sent) == 1 and rules.thread.is_alive(), timeout=5)
    fw.log("loss", 0.5)  # values again: re-armed
    fw.flush()
    wait_for(lambda: len(receiver.alerts("no metric logged")) == 2, timeout=30)
    fw.finish()


def test_failing_webhook_never_breaks_logging(capfd):
    dead = Receiver(status=500)
    try:
        run = fw.init(project="alerts")
        rules = fw.alert_rules(dead.url, check_every=0.05)
        for step in range(20):
            fw.log("loss", float("nan") if step >= 10 else 1.0, step=step)
        fw.flush()
        wait_for(lambda: dead.bodies, timeout=30, what="the (failing) post")
        assert fw.alert("still here", webhook=dead.url) is True  # queued; fails later
        fw.log("after", 1.0)
        fw.finish()
        wait_for(lambda: not rules.thread.is_alive(), timeout=30)
        assert flush_alerts(30) == 0
    finally:
        dead.server.shutdown()
        dead.server.server_close()
    err = capfd.readouterr().err.splitlines()
    failures = [line for line in err if "webhook" in line]
    assert len(failures) == 2  # one line per failed post: the rule's and fw.alert's
    assert all("HTTP" in line and "SECRET123" not in line for line in failures)
    data = RunReader(run.dir).load()
    assert RunReader(run.dir).status == "success" and "after" in data.series
    assert len(data.series["loss"].values) == 20


def test_guide_example_sends_what_it_says(receiver, monkeypatch, tmp_path):
    """docs/guide.md, "System metrics, alerts and heartbeats": its example, run as written
    with $FLOWILLOWER_WEBHOOK pointing at the receiver."""
    import re
    from pathlib import Path

    guide = (Path(__file__).resolve().parents[1] / "docs" / "guide.md").read_text()
    section = guide.split("## System metrics, alerts and heartbeats", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```py\n(.*?)```", section, re.S)
    monkeypatch.setenv("FLOWILLOWER_WEBHOOK", receiver.url)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "guide.md system example", "exec"), namespace)
    wait_for(lambda: len(receiver.bodies) == 2, timeout=30, what="the example's two alerts")
    texts = sorted(b["alert"]["title"] + ": " + b["alert"]["text"] for b in receiver.bodies)
    assert texts == ["loss is nan: loss became nan at step 60",
                     "training done: watched ran 100 steps"]
    assert namespace["run"].status == "success"


def test_alert_is_a_no_op_under_debug(receiver):
    fw.debug(True)
    assert fw.alert("quiet", webhook=receiver.url) is False
    assert fw.alert_rules(receiver.url) is None and fw.system_metrics() is None
    assert receiver.bodies == []
