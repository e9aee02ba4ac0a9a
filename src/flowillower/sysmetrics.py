"""System metrics: a sampler thread logging CPU, memory, disk, network and GPU use.

Needs the `[system]` extra (psutil; GPUs through NVML when nvidia-ml-py is installed).
Every `sample_every` seconds (1 s) the thread reads the gauges; every `interval` seconds
(10 s) it logs their means and the I/O rates over the interval under `system/`, as `sys`
values of the run (they stay out of the runs table's metric columns and the summary's
`last`). GPUs: the devices of `$CUDA_VISIBLE_DEVICES` when it is set, else the devices
on which NVML sees this process, numbered as the process sees them (`system/gpu0/...`).
The thread logs only once the run is on disk and stops when the run finishes.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["SystemSampler", "start", "sampler_of", "visible_gpus", "attach_from_env",
           "PROCESS_KEYS", "GPU_FIELDS"]

ENV = "FLOWILLOWER_SYSTEM_METRICS"  # seconds between logged means; unset or 0: off
MB = 2.0**20
# The keys logged for every run (the run page's panel asks for these).
PROCESS_KEYS = (
    "system/cpu/process_percent", "system/cpu/machine_percent",
    "system/memory/process_rss_mb", "system/memory/machine_percent",
    "system/disk/read_mb_s", "system/disk/write_mb_s", "system/disk/used_percent",
    "system/network/sent_mb_s", "system/network/recv_mb_s",
)
GPU_FIELDS = ("utilization_percent", "memory_percent", "memory_mb", "power_w",
              "temperature_c")


def _parse_visible(value: str) -> list[str]:
    """CUDA_VISIBLE_DEVICES entries up to the first empty or invalid one (as CUDA reads
    it: '-1' or '' hides every device)."""
    out = []
    for item in value.split(","):
        item = item.strip()
        if not item or item.startswith("-"):
            break
        out.append(item)
    return out


def visible_gpus(nvml: Any, env: dict[str, str] | None = None,
                 pid: int | None = None) -> list[tuple[int, Any]]:
    """(index as this process sees it, NVML handle) of the GPUs to sample.

    With $CUDA_VISIBLE_DEVICES: its entries, by index (NVML numbers devices in PCI bus
    order, as CUDA_DEVICE_ORDER=PCI_BUS_ID does) or by UUID prefix (`GPU-...`). Without
    it: only the devices on which NVML lists `pid` (this process) as a compute or
    graphics user, so a shared node's other jobs are never logged."""
    env = os.environ if env is None else env
    count = nvml.nvmlDeviceGetCount()
    handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
    listed = env.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        chosen = []
        for entry in _parse_visible(listed):
            if entry.isdigit():
                if int(entry) >= count:
                    break
                chosen.append(handles[int(entry)])
                continue
            match = [h for h in handles if _uuid(nvml, h).startswith(entry)]
            if len(match) != 1:
                break  # CUDA stops at an entry it cannot resolve
            chosen.append(match[0])
        return list(enumerate(chosen))
    me = os.getpid() if pid is None else pid
    mine = [h for h in handles if me in _pids(nvml, h)]
    return list(enumerate(mine))


def _uuid(nvml: Any, handle: Any) -> str:
    value = nvml.nvmlDeviceGetUUID(handle)
    return value.decode() if isinstance(value, bytes) else str(value)


def _pids(nvml: Any, handle: Any) -> set[int]:
    found: set[int] = set()
    for name in ("nvmlDeviceGetComputeRunningProcesses",
                 "nvmlDeviceGetGraphicsRunningProcesses"):
        try:
            found.update(int(p.pid) for p in getattr(nvml, name)(handle))
        except Exception:  # not supported on this device / driver
            continue
    return found


def _gpu_sample(nvml: Any, handle: Any) -> dict[str, float]:
    """One reading of a device; a field the device does not report is left out."""
    out: dict[str, float] = {}
    readers: list[tuple[str, Callable[[], float]]] = [
        ("utilization_percent", lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
        ("power_w", lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0),
        ("temperature_c", lambda: nvml.nvmlDeviceGetTemperature(handle, 0)),  # 0: the GPU die
    ]
    for name, read in readers:
        try:
            out[name] = float(read())
        except Exception:
            continue
    try:
        mem = nvml.nvmlDeviceGetMemoryInfo(handle)
        out["memory_mb"] = mem.used / MB
        out["memory_percent"] = 100.0 * mem.used / mem.total if mem.total else 0.0
    except Exception:
        pass
    return out


def _load_nvml() -> Any:
    """pynvml (nvidia-ml-py), initialised, or None without it or without a driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


class SystemSampler:
    """The sampler thread of one run (see the module docstring). `cpu_seconds`: the CPU
    time the thread itself used, which the benchmark reports as its cost."""

    def __init__(self, run: Any, interval: float = 10.0, sample_every: float = 1.0, *,
                 nvml: Any = "auto", psutil_module: Any = None,
                 gpus: Iterable[int] | str | None = None) -> None:
        import psutil as _psutil  # the [system] extra; ImportError tells the user

        self.run = run
        self.interval = max(float(interval), 0.01)
        self.sample_every = min(max(float(sample_every), 0.005), self.interval)
        self.psutil = psutil_module or _psutil
        self.nvml = _load_nvml() if nvml == "auto" else nvml
        self.gpu_choice = gpus
        self.gpus: list[tuple[int, Any]] = []
        self.process = self.psutil.Process()
        self.logged = 0  # means logged so far (their step)
        self.rounds = 0  # intervals completed, logged or not (not on disk yet)
        self.cpu_seconds = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True,
                                       name=f"flowillower-system-{run.id}")

    def start(self) -> SystemSampler:
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sampling (what the run's end does by itself) and wait for the thread."""
        self._stop.set()
        if self.thread.is_alive() and self.thread is not threading.current_thread():
            self.thread.join(timeout)

    def find_gpus(self) -> None:
        """Pick the GPUs to read (see `visible_gpus`), unless some are picked already."""
        if self.nvml is None or self.gpus:
            return
        try:
            if self.gpu_choice == "all":
                count = self.nvml.nvmlDeviceGetCount()
                self.gpus = [(i, self.nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
            elif self.gpu_choice is not None:
                self.gpus = [(i, self.nvml.nvmlDeviceGetHandleByIndex(i))
                             for i in self.gpu_choice]
            else:
                self.gpus = visible_gpus(self.nvml)
        except Exception:
            self.gpus = []

    def sample(self) -> dict[str, float]:
        """One reading of the gauges (the means of these are logged)."""
        ps, proc = self.psutil, self.process
        out = {"system/cpu/process_percent": proc.cpu_percent(None),
               "system/cpu/machine_percent": ps.cpu_percent(None)}
        try:
            out["system/memory/process_rss_mb"] = proc.memory_info().rss / MB
            out["system/memory/machine_percent"] = ps.virtual_memory().percent
        except Exception:
            pass
        for index, handle in self.gpus:
            for name, value in _gpu_sample(self.nvml, handle).items():
                out[f"system/gpu{index}/{name}"] = value
        return out

    def counters(self) -> dict[str, float]:
        """Cumulative machine disk and network bytes (the rates come from differences)."""
        out: dict[str, float] = {}
        try:
            disk = self.psutil.disk_io_counters()
            if disk is not None:
                out["disk/read"], out["disk/write"] = disk.read_bytes, disk.write_bytes
        except Exception:
            pass
        try:
            net = self.psutil.net_io_counters()
            out["network/sent"], out["network/recv"] = net.bytes_sent, net.bytes_recv
        except Exception:
            pass
        return out

    def rates(self, before: dict[str, float], after: dict[str, float],
               seconds: float) -> dict[str, float]:
        """Disk and network MB/s between two `counters()`, and the store disk's use."""
        out = {}
        for name, unit in (("disk/read", "disk/read_mb_s"), ("disk/write", "disk/write_mb_s"),
                           ("network/sent", "network/sent_mb_s"),
                           ("network/recv", "network/recv_mb_s")):
            if name in before and name in after and seconds > 0:
                out[f"system/{unit}"] = max(after[name] - before[name], 0) / MB / seconds
        try:
            out["system/disk/used_percent"] = self.psutil.disk_usage(
                str(self.run.store_root)).percent
        except Exception:
            pass
        return out

    def _loop(self) -> None:
        cpu0 = time.thread_time()
        self.find_gpus()
        self.sample()  # primes psutil's cpu_percent (its first answer is meaningless)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        start, before = time.monotonic(), self.counters()
        while not self._stop.wait(self.sample_every):
            if self.run.status is not None:
                break
            for name, value in self.sample().items():
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
            now = time.monotonic()
            if now - start >= self.interval - 1e-3:
                after = self.counters()
                means = {k: sums[k] / counts[k] for k in sums}
                means.update(self.rates(before, after, now - start))
                self.rounds += 1
                if not self._log(means):
                    break
                sums, counts = {}, {}
                start, before = now, after
                if not self.gpus:
                    self.find_gpus()  # a process takes its GPU after the run starts
            self.cpu_seconds = time.thread_time() - cpu0
        self.cpu_seconds = time.thread_time() - cpu0
        if _samplers.get(self.run.id) is self:
            del _samplers[self.run.id]

    def _log(self, means: dict[str, float]) -> bool:
        """Log one set of means; False once the run is finished."""
        run = self.run
        if run.status is not None:
            return False
        if not (run.dir / "run.json").is_file():
            return True  # not on disk yet: logging would create it (a set-up crash must not)
        try:
            run.log_metrics(means, step=self.logged, role="sys")
        except Exception:  # finished in between (or a value psutil got wrong): stop quietly
            return run.status is None
        self.logged += 1
        return True


# Run id -> its sampler, while sampling.
_samplers: dict[str, SystemSampler] = {}


def start(run: Any, interval: float = 10.0, sample_every: float = 1.0, *,
          gpus: Iterable[int] | str | None = None, nvml: Any = "auto") -> SystemSampler:
    """Sample system metrics for `run` until it finishes (`fw.system_metrics` for the
    current run; `fw.init` may call this directly: no import of `api` here). Replaces the
    run's earlier sampler."""
    old = _samplers.pop(run.id, None)
    if old is not None:
        old.stop()
    sampler = SystemSampler(run, interval, sample_every, gpus=gpus, nvml=nvml)
    _samplers[run.id] = sampler
    return sampler.start()


def sampler_of(run_id: str) -> SystemSampler | None:
    """The sampler of a run while it samples."""
    return _samplers.get(run_id)


def attach_from_env(run: Any) -> None:
    """Creation hook: sample every run when $FLOWILLOWER_SYSTEM_METRICS gives an interval
    in seconds (and psutil is installed; without it, one warning line on stderr)."""
    raw = os.environ.get(ENV, "").strip()
    try:
        interval = float(raw) if raw else 0.0
    except ValueError:
        interval = 0.0
    if interval <= 0 or run.rank != 0:
        return
    try:
        start(run, interval, min(1.0, interval))
    except ImportError:
        import sys

        print("flowillower: system metrics need psutil (pip install 'flowillower[system]')",
              file=sys.stderr)
