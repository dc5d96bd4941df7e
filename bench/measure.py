"""Measurement: per-operation latency, process CPU time, peak RSS and machine facts.

CPU is *process* CPU (``time.process_time``: user + system of every thread), so RocksDB's
background flush/compaction threads and any SeqVault background work are charged to the system
that caused them: that is the paper's CPU axis, not just the calling thread's share.
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def percentiles_ms(lat_ns: np.ndarray) -> dict[str, float]:
    if len(lat_ns) == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan"),
                "max_ms": float("nan"), "mean_ms": float("nan")}
    ms = lat_ns / 1e6
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99),
            "max_ms": float(ms.max()), "mean_ms": float(ms.mean())}


def run_ops(
    op: Callable[[Any], Any],
    args: Iterable[Any],
    *,
    max_seconds: float,
    warmup: int = 0,
    units: Callable[[Any, Any], int] | None = None,
) -> dict[str, Any]:
    """Run ``op(arg)`` for each arg until exhausted or ``max_seconds`` pass.

    Returns latency percentiles, ops/s, CPU seconds per op and, when ``units`` is given
    (``units(arg, result)`` -> e.g. events appended or returned), units per op and per second.
    The first ``warmup`` ops run untimed so one-off costs (first page-in, caches) don't count
    as tail latency.
    """
    it = iter(args)
    for _ in range(warmup):
        try:
            op(next(it))
        except StopIteration:
            break
    gc.collect()
    lat: list[int] = []
    # Per-op CPU time of the calling thread: the op's service time without the time it sat
    # descheduled. On a shared machine wall-clock tails mostly measure other processes; these
    # percentiles don't (they miss I/O waits, which a warm page cache makes rare for reads).
    tcpu: list[int] = []
    thread_ns = time.thread_time_ns
    n_units = 0
    perf = time.perf_counter_ns
    cpu0, wall0 = time.process_time(), perf()
    deadline = wall0 + int(max_seconds * 1e9)
    for arg in it:
        c0 = thread_ns()
        t0 = perf()
        result = op(arg)
        t1 = perf()
        tcpu.append(thread_ns() - c0)
        lat.append(t1 - t0)
        if units is not None:
            n_units += units(arg, result)
        if t1 > deadline:
            break
    wall = (perf() - wall0) / 1e9
    cpu = time.process_time() - cpu0
    n = len(lat)
    out: dict[str, Any] = {"ops": n, "seconds": wall, "cpu_seconds": cpu,
                           "ops_per_s": n / wall if wall else float("nan"),
                           "cpu_ms_per_op": 1e3 * cpu / n if n else float("nan")}
    out.update(percentiles_ms(np.asarray(lat, dtype=np.float64)))
    out.update({f"tcpu_{k}": v
                for k, v in percentiles_ms(np.asarray(tcpu, dtype=np.float64)).items()})
    if units is not None:
        out["units"] = n_units
        out["units_per_op"] = n_units / n if n else float("nan")
        out["units_per_s"] = n_units / wall if wall else float("nan")
        out["cpu_us_per_unit"] = 1e6 * cpu / n_units if n_units else float("nan")
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, wall seconds, process CPU seconds) of one call."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    result = fn()
    return result, time.perf_counter() - t0, time.process_time() - cpu0


def peak_rss_bytes() -> int:
    """This process's peak resident set size.

    Linux: ``VmHWM`` from /proc/self/status, *not* ``ru_maxrss``: the kernel carries the
    parent's high-water mark into ``ru_maxrss`` across fork + exec, so a worker started by a
    parent that once held the whole bulk-load table would report the parent's peak.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    # ru_maxrss is KiB on Linux, bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def reset_peak_rss() -> bool:
    """Reset this process's ``VmHWM`` (Linux: ``echo 5 > /proc/self/clear_refs``) so that the
    next ``peak_rss_bytes`` is the peak of one step alone. False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_bytes() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


class NoiseMeter:
    """How busy the machine was with *other* work while process ``pid`` ran a step.

    The benchmark machine may be shared (CI, other jobs): CPU used by other processes and time
    stolen by the hypervisor both inflate latency tails, so the report shows them per system.
    """

    def __init__(self, pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.proc = psutil.Process(pid)
        self.t0 = time.perf_counter()
        self.cpu0 = psutil.cpu_times()
        self.own0 = self._own()
        self.load0 = os.getloadavg()[0]

    def _own(self) -> float:
        try:
            t = self.proc.cpu_times()
        except self._psutil.Error:  # the worker exited
            return self.own0 if hasattr(self, "own0") else 0.0
        return t.user + t.system

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.t0
        cpu1 = self._psutil.cpu_times()

        def busy(c) -> float:
            return sum(getattr(c, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq"))

        mine = self._own() - self.own0
        other = busy(cpu1) - busy(self.cpu0) - mine
        steal = getattr(cpu1, "steal", 0.0) - getattr(self.cpu0, "steal", 0.0)
        return {"wall_seconds": wall, "own_cpu_seconds": mine,
                "other_cpu_seconds": max(other, 0.0), "steal_seconds": steal,
                "loadavg_max": max(self.load0, os.getloadavg()[0])}


def add_conditions(total: dict[str, float], step: dict[str, float]) -> dict[str, float]:
    out = dict(total)
    for k, v in step.items():
        out[k] = max(out.get(k, 0.0), v) if k == "loadavg_max" else out.get(k, 0.0) + v
    return out


def machine_info() -> dict[str, Any]:
    import psutil

    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("numpy", "pyarrow", "rocksdict", "zstandard", "msgpack", "lmdb", "seqvault"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "missing"
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "filesystem": _filesystem_of(os.getcwd()),
        # Other work on the machine skews tail latency; the report shows the load it ran under.
        "loadavg": list(os.getloadavg()),
        "nice": os.nice(0),
    }


def _filesystem_of(path: str) -> str:
    try:
        import psutil

        best = None
        for part in psutil.disk_partitions(all=True):
            if path.startswith(part.mountpoint) and (
                best is None or len(part.mountpoint) > len(best.mountpoint)
            ):
                best = part
        return f"{best.fstype} on {best.device}" if best else "unknown"
    except Exception:  # informational only
        return "unknown"
