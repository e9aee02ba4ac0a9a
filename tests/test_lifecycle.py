"""How runs end: normal exit, exceptions, signals, kill -9, webhooks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

import flowillower as fw
from flowillower.run import Run
from flowillower.store.format import valid_length
from flowillower.store.reader import RunReader
from tests.conftest import only_run, wait_for

LOGGING_FOREVER = """
import time, flowillower as fw
fw.init(project="p")
i = 0
print("started", flush=True)
while True:
    fw.log_metrics({"step_value": float(i), "t": time.time()}, step=i)
    i += 1
    if i % 100 == 0:
        time.sleep(0.001)
"""


def test_exit_without_finish_is_success(run_script, store_dir):
    run_script("import flowillower as fw\nfw.log('x', 1.0)\n")
    reader = RunReader(only_run(store_dir))
    assert reader.status == "success" and reader.summary["last"]["x"] == 1.0


def test_uncaught_exception_marks_failed_with_traceback(run_script, store_dir):
    proc = run_script(
        """
        import flowillower as fw
        fw.log("x", 1.0)
        def train():
            raise RuntimeError("diverged at step 7")
        train()
        """, check=False)
    assert proc.returncode == 1 and "diverged at step 7" in proc.stderr  # user still sees it
    reader = RunReader(only_run(store_dir))
    assert reader.status == "failed"
    assert "RuntimeError: diverged at step 7" in reader.summary["error"]
    assert "in train" in reader.summary["error"]


def test_keyboard_interrupt_marks_killed(run_script, store_dir):
    run_script("import flowillower as fw\nfw.log('x', 1.0)\nraise KeyboardInterrupt\n",
               check=False)
    assert RunReader(only_run(store_dir)).status == "killed"


def _start_logging(tmp_path):
    script = tmp_path / "forever.py"
    script.write_text(textwrap.dedent(LOGGING_FOREVER))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, stdout=subprocess.PIPE,
                            env={**os.environ})
    assert proc.stdout.readline().strip() == b"started"
    return proc


def test_sigterm_flushes_and_marks_killed(tmp_path, store_dir):
    proc = _start_logging(tmp_path)

    def frames_written() -> bool:  # the writer has flushed values at least once
        files = list((store_dir / "runs").glob("*/data.fwl"))
        return bool(files) and valid_length(files[0].read_bytes()) > 0

    wait_for(frames_written, timeout=30, what="the first frames on disk")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == -signal.SIGTERM  # still dies by the signal, as callers expect
    reader = RunReader(only_run(store_dir))
    assert reader.status == "killed"
    values = reader.load().series["step_value"].values
    assert len(values) > 100 and list(values) == list(map(float, range(len(values))))


def test_kill_9_loses_at_most_the_last_second(tmp_path, store_dir):
    """kill -9 at random moments, 20 times: the store opens, old data is all there."""
    import random

    rng = random.Random(7)
    for attempt in range(20):
        proc = _start_logging(tmp_path)
        time.sleep(rng.uniform(0.05, 1.6))
        kill_time = time.time()
        proc.kill()
        proc.wait(10)
        run_dirs = sorted((store_dir / "runs").iterdir(), key=lambda p: p.stat().st_mtime)
        reader = RunReader(run_dirs[-1])
        assert reader.status == "killed", attempt
        data = reader.load()
        if "t" not in data.series:
            continue  # killed before the first flush: allowed (< 1 s of data)
        times = data.series["t"].values
        steps = data.series["step_value"].values
        # Every value is intact and in order, with no gap ...
        assert list(steps) == list(map(float, range(len(steps))))
        # ... and nothing older than a second before the kill is missing.
        assert times[-1] >= kill_time - 1.0, (attempt, kill_time - times[-1])
    rows = fw.dataframe(dir=store_dir)
    assert len(rows) == 20 and set(rows["status"]) == {"killed"}


TORN = b"FWLs\x99\x99\x00\x00garbage"  # the start of a frame whose write was cut short


def test_resume_writing_after_torn_tail(run_script, store_dir):
    """A process dies in the middle of writing a frame; the run is picked up again (same
    run id) and writes on: the torn bytes are cut, old and new values all read back."""
    proc = run_script("""
        import os, flowillower as fw
        run = fw.init(project="p")
        fw.log_metrics({"a": 1.0, "b": 10.0}, step=0)
        run.flush()
        print(run.id, flush=True)
        os._exit(0)  # gone without finishing, like kill -9
    """)
    run_id = proc.stdout.strip()
    data_file = store_dir / "runs" / run_id / "data.fwl"
    good = data_file.read_bytes()
    assert valid_length(good) == len(good) > 0
    with open(data_file, "ab") as fh:
        fh.write(TORN)  # the crash happened mid-write
    assert RunReader(data_file.parent).load().series["a"].values.tolist() == [1.0]

    resumed = Run("p", run_id=run_id, snapshot=False)  # e.g. a restarted job
    resumed.log_metrics({"a": 2.0, "b": 20.0}, step=1)
    resumed.flush()
    data = data_file.read_bytes()
    assert data.startswith(good)  # what was written before stays as it was
    assert b"garbage" not in data and valid_length(data) == len(data) > len(good)
    resumed.log_metrics({"a": 3.0}, step=2)
    resumed.finish()
    data = data_file.read_bytes()
    assert b"garbage" not in data and valid_length(data) == len(data)
    reader = RunReader(data_file.parent)
    series = reader.load().series
    assert series["a"].step.tolist() == [0, 1, 2]
    assert series["a"].values.tolist() == [1.0, 2.0, 3.0]
    assert series["b"].values.tolist() == [10.0, 20.0]
    assert reader.status == "success"


def test_eight_processes_log_into_one_project(tmp_path, store_dir):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import sys, flowillower as fw
        worker = int(sys.argv[1])
        fw.init(project="sweep", name=f"w{worker}")
        lr = fw.arg("lr", 0.0)
        for step in fw.loop("step", range(5000)):
            fw.log_metrics({"worker": float(worker), "value": float(step)})
    """))
    procs = [subprocess.Popen([sys.executable, str(script), str(w), "--kwargs", f"lr={w / 10}"],
                              cwd=tmp_path) for w in range(8)]
    assert [p.wait(60) for p in procs] == [0] * 8
    df = fw.dataframe("lr", "worker", "value", dir=store_dir)
    assert len(df) == 8 * 5000
    for name, group in df.groupby("run_name"):
        worker = int(name[1:])
        assert (group["worker"] == worker).all()  # nothing interleaved between runs
        assert (group["lr"] == worker / 10).all()
        assert group["value"].tolist() == [float(s) for s in range(5000)]


class _Hook(BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self):  # noqa: N802 - http.server naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.path, json.loads(body)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def webhook_server():
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_finish_notifies_webhook(webhook_server):
    run = fw.init(name="notify-me")
    fw.log("acc", 0.93)
    fw.finish(notify=webhook_server + "/slack")
    path, payload = _Hook.received[0]
    assert path == "/slack"
    assert "notify-me" in payload["text"] and "success" in payload["text"]
    assert payload["run"]["last"]["acc"] == 0.93 and payload["run"]["id"] == run.id


def test_webhook_formats(webhook_server):
    from flowillower.lifecycle import webhook_payload

    run = fw.init(name="r")
    summary = {"status": "failed", "duration": 3.0, "last": {"loss": 0.5}}
    assert webhook_payload("https://discord.com/api/webhooks/1", run, summary)["content"]
    feishu = webhook_payload("https://open.feishu.cn/open-apis/bot/v2/hook/x", run, summary)
    assert feishu["msg_type"] == "text" and "failed" in feishu["content"]["text"]


def test_failing_webhook_warns_and_never_raises():
    run = fw.init()
    fw.log("x", 1.0)
    with pytest.warns(UserWarning, match="webhook") as caught:
        fw.finish(notify="http://127.0.0.1:9/services/T0SECRET/B0SECRET")
    assert run.status == "success"
    # A webhook's path is its secret (Slack, Discord): the warning names the host only.
    assert all("SECRET" not in str(w.message) for w in caught)


def test_forked_child_cannot_end_the_parents_run(store_dir):
    run = fw.init()
    fw.log("x", 1.0)
    pid = os.fork()
    if pid == 0:  # a DataLoader-style worker killed by SIGTERM, or exiting normally
        try:
            run.finish("killed")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert not (run.dir / "summary.json").exists()
    fw.log("x", 2.0)
    fw.finish()
    reader = RunReader(run.dir)
    assert reader.status == "success" and reader.load().series["x"].values.tolist() == [1.0, 2.0]
