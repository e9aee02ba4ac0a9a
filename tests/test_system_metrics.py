"""System metrics: psutil for real; the GPU path with a mocked NVML (a stand-in module
answering like pynvml for four devices: no GPU is needed to run these tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import wait_for

import flowillower as fw
from flowillower import sysmetrics
from flowillower.store.reader import RunReader, read_summary
from flowillower.sysmetrics import PROCESS_KEYS, SystemSampler, visible_gpus

psutil = pytest.importorskip("psutil")


def _system_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flowillower-system-")]


def test_sampler_logs_real_process_and_machine_values_and_stops_at_finish():
    run = fw.init(project="sys")
    fw.log("loss", 1.0)
    sampler = fw.system_metrics(interval=0.2, sample_every=0.04)
    assert sampler is not None and sysmetrics.sampler_of(run.id) is sampler
    wait_for(lambda: sampler.logged >= 3, timeout=30, what="three logged means")
    fw.finish()
    wait_for(lambda: not sampler.thread.is_alive(), timeout=30, what="the sampler to stop")
    assert sysmetrics.sampler_of(run.id) is None
    data = RunReader(run.dir).load()
    for key in PROCESS_KEYS:
        series = data.series[key]
        assert series.role == "sys" and len(series.values) >= 3, key
    rss = data.series["system/memory/process_rss_mb"].values
    assert (rss > 5).all() and (rss < psutil.virtual_memory().total / 2**20).all()
    machine = data.series["system/cpu/machine_percent"].values
    assert ((machine >= 0) & (machine <= 100)).all()
    used = data.series["system/disk/used_percent"].values
    assert abs(used[-1] - psutil.disk_usage(str(run.store_root)).percent) < 5
    times = data.series["system/cpu/process_percent"].time
    assert (times[1:] > times[:-1]).all()  # charted against wall time: it moves on
    steps = data.series["system/cpu/process_percent"].step
    assert list(steps) == list(range(len(steps)))
    # System values stay out of the summary's metrics (and the webhook text built on it).
    assert set(read_summary(run.dir)["last"]) == {"loss"}


def test_each_run_gets_its_own_sampler_and_no_thread_leaks():
    first = fw.init(project="sys")
    fw.log("x", 1.0)
    a = fw.system_metrics(interval=0.1, sample_every=0.02)
    wait_for(lambda: a.logged >= 1, timeout=30)
    second = fw.init(project="sys")  # finishes the first run
    fw.log("x", 2.0)
    b = fw.system_metrics(interval=0.1, sample_every=0.02)
    assert a is not b and b.run is second
    wait_for(lambda: not a.thread.is_alive(), timeout=30, what="the first run's sampler")
    wait_for(lambda: b.logged >= 1, timeout=30)
    fw.finish()
    wait_for(lambda: not _system_threads(), timeout=30, what="no sampler thread left")
    for run in (first, second):
        assert "system/cpu/process_percent" in RunReader(run.dir).load().series


def test_sampler_never_creates_a_run_that_logged_nothing(tmp_path):
    run = fw.init(project="sys")
    sampler = fw.system_metrics(interval=0.05, sample_every=0.01)
    wait_for(lambda: sampler.rounds >= 3, timeout=30, what="three intervals")
    assert not run.dir.exists() and sampler.logged == 0
    fw.finish()
    wait_for(lambda: not sampler.thread.is_alive(), timeout=30)
    assert not run.dir.exists()


class FakeNVML:
    """pynvml's calls the sampler makes, for four devices; device i's utilisation grows
    by one per reading from 10 * i, so means are predictable."""

    def __init__(self, pids: dict[int, list[int]] | None = None) -> None:
        self.reads = [0, 0, 0, 0]
        self.pids = pids or {}

    def nvmlDeviceGetCount(self):
        return 4

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetUUID(self, h):
        return f"GPU-{h}a1b2c3-0000-1111-2222-33334444555{h}".encode()

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=p) for p in self.pids.get(h, [])]

    def nvmlDeviceGetUtilizationRates(self, h):
        self.reads[h] += 1
        return SimpleNamespace(gpu=10 * h + self.reads[h])

    def nvmlDeviceGetPowerUsage(self, h):
        return 250_000 + h  # milliwatts

    def nvmlDeviceGetTemperature(self, h, sensor):
        if h == 1:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")  # a field some boards lack
        return 60 + h

    def nvmlDeviceGetMemoryInfo(self, h):
        return SimpleNamespace(used=(h + 1) * 2**30, total=80 * 2**30)


def test_visible_devices_follow_cuda_visible_devices():
    nvml = FakeNVML(pids={1: [os.getpid()], 3: [999999]})
    pick = lambda env: [h for _i, h in visible_gpus(nvml, env)]  # noqa: E731
    assert pick({"CUDA_VISIBLE_DEVICES": "2,0"}) == [2, 0]
    assert pick({"CUDA_VISIBLE_DEVICES": "GPU-3a1b"}) == [3]  # a UUID prefix
    assert pick({"CUDA_VISIBLE_DEVICES": "1,7,2"}) == [1]  # CUDA stops at a bad entry
    assert pick({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert pick({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert pick({"CUDA_VISIBLE_DEVICES": "GPU-"}) == []  # ambiguous: matches all four
    # Unset: only the devices this process uses, never the other jobs' (shared node).
    assert pick({}) == [1]


def test_gpu_values_logged_per_visible_device_with_mocked_nvml(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    nvml = FakeNVML()
    run = fw.init(project="sys")
    fw.log("x", 1.0)
    sampler = SystemSampler(run, interval=0.2, sample_every=0.04, nvml=nvml).start()
    wait_for(lambda: sampler.logged >= 2, timeout=30)
    fw.finish()
    wait_for(lambda: not sampler.thread.is_alive(), timeout=30)
    series = RunReader(run.dir).load().series
    # gpu0 is NVML device 3 (first in CUDA_VISIBLE_DEVICES), gpu1 is device 1.
    assert series["system/gpu0/power_w"].values[0] == pytest.approx(250.003)
    assert series["system/gpu1/power_w"].values[0] == pytest.approx(250.001)
    assert series["system/gpu0/temperature_c"].values[0] == 63
    assert "system/gpu1/temperature_c" not in series  # not supported: left out
    assert series["system/gpu0/memory_mb"].values[0] == 4 * 1024
    assert series["system/gpu1/memory_percent"].values[0] == pytest.approx(2 / 80 * 100)
    util = series["system/gpu0/utilization_percent"].values
    assert 31 <= util[0] < util[1] <= 30 + nvml.reads[3]  # means of growing readings
    assert not any(k.startswith(("system/gpu2", "system/gpu3")) for k in series)
    assert nvml.reads[0] == nvml.reads[2] == 0  # invisible devices are never read


ENV_SCRIPT = """
import sys
from pathlib import Path
import flowillower as fw
fw.init(project="sys")
i = 0
while not Path(sys.argv[1]).exists():
    fw.log("loss", 1.0, step=i)
    i += 1
    fw.flush()
"""


def test_setting_turns_sampling_on_for_every_run(tmp_path, store_dir):
    script = tmp_path / "env_train.py"
    script.write_text(ENV_SCRIPT)
    stop = tmp_path / "stop"
    env = {**os.environ, "FLOWILLOWER_SYSTEM_METRICS": "0.2"}
    proc = subprocess.Popen([sys.executable, str(script), str(stop)], cwd=tmp_path, env=env)
    try:
        def sampled() -> Path | None:
            for run_dir in (store_dir / "runs").glob("*"):
                series = RunReader(run_dir).load(["system/cpu/machine_percent"]).series
                if series and len(series["system/cpu/machine_percent"].values) >= 2:
                    return run_dir
            return None

        wait_for(sampled, timeout=60, interval=0.2, what="system values from the script")
    finally:
        stop.touch()
        assert proc.wait(timeout=60) == 0


def test_run_page_charts_system_values_against_wall_time(page, tmp_path, monkeypatch):
    """The run page's System panel (system.js): one chart per key the run holds, GPUs
    included (mocked NVML), x in wall-clock seconds; a run without them has no panel."""
    from conftest import require_browser, ui_server

    require_browser()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    root = tmp_path / "ui" / ".flowillower"
    run = fw.init(project="sys", name="sampled", dir=root)
    fw.log("loss", 1.0)
    sampler = SystemSampler(run, interval=0.1, sample_every=0.02, nvml=FakeNVML()).start()
    wait_for(lambda: sampler.logged >= 3, timeout=30)
    fw.finish()
    wait_for(lambda: not sampler.thread.is_alive(), timeout=30)
    plain = fw.init(project="sys", name="plain", dir=root)
    fw.log("loss", 1.0)
    fw.finish()
    data = RunReader(run.dir).load()
    keys = sorted(k for k in data.series if k.startswith("system/"))
    assert "system/gpu0/power_w" in keys and len(keys) == len(PROCESS_KEYS) + 5
    with ui_server(root) as base:
        page.goto(f"{base}#/run/{run.id}")
        card = page.locator("section.system-card")
        card.wait_for()
        charts = card.locator(".chart")
        wait_for(lambda: charts.count() == len(keys), timeout=30, what="one chart per key")
        shown = sorted(charts.nth(i).get_attribute("data-key") for i in range(len(keys)))
        assert shown == keys
        power = card.locator(".chart[data-key='system/gpu0/power_w']")
        drawn = wait_for(lambda: power.evaluate("el => el.fwData()"), timeout=30,
                         what="the power chart drawn")
        times = data.series["system/gpu0/power_w"].time
        assert drawn["x"] == pytest.approx(list(times), abs=1e-3)  # wall time, not steps
        assert drawn["series"][0]["values"][0] == pytest.approx(250.002)
        page.goto(f"{base}#/run/{plain.id}")
        page.locator("h1.run-name", has_text="plain").wait_for()
        page.locator("section.card h2", has_text="Environment").wait_for()
        page.wait_for_load_state("networkidle")
        assert page.locator("section.system-card").count() == 0


def test_init_option_samples_the_run(tmp_path):
    run = fw.init(project="p", dir=tmp_path / ".flowillower", system_metrics=0.2)
    fw.log("loss", 1.0, step=0)

    def sampled() -> bool:
        fw.flush()
        series = RunReader(run.dir).load(["system/cpu/machine_percent"]).series
        return bool(series) and len(series["system/cpu/machine_percent"].values) >= 2

    wait_for(sampled, timeout=60, interval=0.2, what="system values from fw.init's option")
    (sampler,) = [t for t in threading.enumerate() if t.name == f"flowillower-system-{run.id}"]
    fw.finish()
    wait_for(lambda: not sampler.is_alive(), timeout=30, what="the sampler to stop")
