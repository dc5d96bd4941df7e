"""The workloads, run against one store in one process (``run.py`` gives each system its own).

Order matters and is the same for every system: load -> quiesce -> verify -> reads -> sweep ->
profiles -> appends (per durability, per batch size) -> 90/10 mix -> the same mix with one hot
user -> reads during merge -> a clean bulk load of every event the store now holds (disk
comparison) -> a many-user ``append_batch`` load into a fresh store. The appends change the
data the later phases see, identically for every system, because every system receives the
same generated events (how many of them depends on each system's speed: the append workloads
are time-bounded; the clean load replays exactly what each system received).
"""

from __future__ import annotations

import cProfile
import io
import itertools
import os
import pstats
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bench import measure
from bench import workload as wl
from bench.workload import WorkloadConfig


@dataclass(frozen=True)
class RunConfig:
    """Sizes and time limits of one benchmark run (the data set is ``workload``)."""

    workload: WorkloadConfig = field(default_factory=WorkloadConfig)
    load_durability: str = "batch"
    durabilities: tuple[str, ...] = ("batch", "sync")
    batch_sizes: tuple[int, ...] = (1, 20, 100)
    append_events_max: int = 200_000  # events generated per append workload
    append_seconds: float = 3.0
    read_lasts: tuple[int, ...] = (100, 1_000, 10_000)
    read_ops: int = 5_000
    read_seconds: float = 3.0
    sweep_lasts: tuple[int, ...] = (100, 10_000)
    sweep_ops: int = 2_000
    sweep_seconds: float = 1.5
    mix_ops: int = 20_000
    mix_seconds: float = 5.0
    mix_read_last: int = 1_000
    mix_append_batch: int = 20
    # The hot-user mix: this share of the appended events and of the reads go to one user.
    hot_share: float = 0.4
    # Many-user batch load: users x events each, in append_batch calls of call_rows rows.
    batchload_users: int = 20_000
    batchload_events_per_user: int = 3
    batchload_call_rows: int = 20_000
    merge_read_last: int = 1_000
    merge_min_seconds: float = 1.0
    merge_read_rate: float = 500.0  # reads/s offered while the merge runs
    verify_users: int = 24
    profile_seconds: float = 2.0
    warmup: int = 20

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        d = dict(d)
        d["workload"] = WorkloadConfig.from_dict(d["workload"])
        for k, v in d.items():
            if isinstance(v, list):
                d[k] = tuple(v)
        return cls(**d)


PRESETS: dict[str, RunConfig] = {
    "default": RunConfig(),
    "full": RunConfig(
        workload=WorkloadConfig(
            n_users=20_000,
            sweep_lengths=(100, 300, 1_000, 3_000, 10_000, 30_000, 100_000),
            sweep_users=(64, 64, 64, 32, 32, 8, 4),
        ),
        durabilities=("none", "batch", "sync"),
        append_events_max=1_000_000,
        append_seconds=10.0,
        read_ops=20_000,
        read_seconds=10.0,
        sweep_ops=5_000,
        sweep_seconds=5.0,
        mix_ops=50_000,
        mix_seconds=15.0,
        batchload_users=1_000_000,
        batchload_call_rows=100_000,
        merge_min_seconds=3.0,
        verify_users=200,
    ),
    # Seconds, not minutes: the smoke test (tests/bench/test_bench_smoke.py) runs this one.
    "tiny": RunConfig(
        workload=WorkloadConfig(n_users=40, median_len=50, max_len=3_000,
                                sweep_lengths=(100, 2_000), sweep_users=(2, 1)),
        durabilities=("batch",),
        batch_sizes=(1, 20),
        append_events_max=400,
        append_seconds=0.2,
        read_lasts=(100, 1_000),
        read_ops=30,
        read_seconds=0.2,
        sweep_lasts=(100,),
        sweep_ops=20,
        sweep_seconds=0.2,
        mix_ops=40,
        mix_seconds=0.2,
        batchload_users=300,
        batchload_call_rows=200,
        merge_min_seconds=0.05,
        verify_users=6,
        profile_seconds=0.05,
        warmup=2,
    ),
}


def open_store(system: str, path: str, durability: str, cap: int):
    if system == "seqvault":
        from bench.seqvault_adapter import SeqVaultStore

        return SeqVaultStore(path, durability, cap)
    from bench.rocks_baselines import RocksBlobStore, RocksEventStore

    cls = {"rocks_blob": RocksBlobStore, "rocks_event": RocksEventStore}[system]
    return cls(path, durability, cap)


def _n(result: dict) -> int:
    return len(result["ts"])


def _profile(ops: Callable[[], Any], max_seconds: float, top: int = 18) -> str:
    """cProfile of calling ``ops()`` (one operation) repeatedly for ``max_seconds``.

    Time-bounded rather than count-bounded so rare expensive steps (a memtable seal, a segment
    roll) show up in proportion, as they do in the throughput figures.
    """
    prof = cProfile.Profile()
    n = 0
    deadline = time.perf_counter() + max_seconds
    prof.enable()
    while time.perf_counter() < deadline:
        if ops() is StopIteration:
            break
        n += 1
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    # Keep the table, drop pstats' preamble.
    lines = [ln.rstrip() for ln in buf.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return f"{n} operations profiled\n" + "\n".join(lines[start:])


class Runner:
    """Runs every workload of ``cfg`` against ``system``, storing into ``path``."""

    def __init__(self, system: str, cfg: RunConfig, path: str) -> None:
        self.system, self.cfg, self.path = system, cfg, path
        self.w = cfg.workload
        self.users, self.lengths = wl.all_users(self.w)
        self.population, _ = wl.population_users(self.w)
        self.cohorts = wl.sweep_users(self.w)
        self.out: dict[str, Any] = {"system": system, "notes": []}
        self.store = None
        # What each append workload really wrote: (regenerate the stream, row indices), so the
        # clean bulk load can replay exactly the events this system received.
        self.appended: list[tuple[Callable[[], dict], np.ndarray]] = []
        self.peak_rss = 0

    def steps(self) -> list[str]:
        """The run as small named steps, identical for every system, so that ``run.py`` can
        alternate systems step by step: on a shared machine, other work then disturbs every
        system alike instead of whichever happened to run during a busy minute."""
        c = self.cfg
        out = ["load"]
        out += [f"reads:{last}:{skew}" for last in c.read_lasts for skew in ("uniform", "zipf")]
        out += [f"sweep:{length}:{last}" for length, _ in self.cohorts for last in c.sweep_lasts]
        out += ["profiles"]
        out += [f"appends:{d}:{b}" for d in c.durabilities for b in c.batch_sizes]
        out += ["mix", "hotmix", "merge", "cleanload", "batchload"]
        return out

    def do(self, step: str) -> None:
        """Run one step; its peak RSS (VmHWM reset before it, where Linux allows) is kept."""
        reset = measure.reset_peak_rss()
        try:
            self._do(step)
        finally:
            peak = measure.peak_rss_bytes()
            self.peak_rss = max(self.peak_rss, peak)
            if reset:
                self.out.setdefault("step_peak_rss_bytes", {})[step] = peak

    def _do(self, step: str) -> None:
        name, *args = step.split(":")
        if name == "load":
            self.out["rss_start_bytes"] = measure.current_rss_bytes()
            self.store = open_store(self.system, self.path, self.cfg.load_durability,
                                    self.w.blob_cap)
            self.durability = self.cfg.load_durability
            if hasattr(self.store, "features"):
                self.out["notes"].append(f"engine features: {self.store.features}")
            self.phase_load()
            self.phase_verify()
            # Reopen once: how long opening a loaded store takes (index checkpoint, WAL replay).
            self.store.close()
            t0 = time.perf_counter()
            self.store = open_store(self.system, self.path, self.durability, self.w.blob_cap)
            self.out["open_seconds"] = time.perf_counter() - t0
        elif name == "reads":
            self.step_reads(int(args[0]), args[1])
        elif name == "sweep":
            self.step_sweep(int(args[0]), int(args[1]))
        elif name == "profiles":
            self.phase_profiles()
        elif name == "appends":
            self.step_appends(args[0], int(args[1]))
        elif name == "mix":
            self._ensure_durability(self.cfg.load_durability)
            self.phase_mix()
        elif name == "hotmix":
            self._ensure_durability(self.cfg.load_durability)
            self.phase_hot_mix()
        elif name == "merge":
            self.phase_merge()
        elif name == "cleanload":
            self.phase_clean_load()
        elif name == "batchload":
            self.phase_batch_load()
        else:
            raise ValueError(f"unknown step {step!r}")

    def finish(self) -> dict[str, Any]:
        self.out["disk_bytes_end"] = self.store.disk_bytes()
        self.store.close()
        self.out["peak_rss_bytes"] = max(self.peak_rss, measure.peak_rss_bytes())
        return self.out

    def run(self) -> dict[str, Any]:
        """Every step in order, in this process (for profiling one system by hand; run.py
        drives workers step by step instead)."""
        for step in self.steps():
            self.do(step)
        return self.finish()

    # ------------------------------------------------------------------ phases
    def phase_load(self) -> None:
        hist = wl.iter_histories(self.w, self.users, self.lengths)
        prepared = None
        if hasattr(self.store, "prepare_bulk"):
            # run.py leaves the Parquet input beside the stores (the scratch directory).
            prepared = self.store.prepare_bulk(hist, os.path.dirname(self.path) or ".")
        if prepared is not None:
            # The input file is written before the clock starts; the ingest reads and parses it
            # inside the timed region (the RocksDB loaders get numpy arrays: a handicap for
            # SeqVault, noted in the report).
            loader, _ = prepared
            gen_cpu = 0.0
            events, wall, cpu = measure.timed(loader)
        else:
            hist = wl.iter_histories(self.w, self.users, self.lengths)
            gen_cpu = self._generation_cpu()
            events, wall, cpu = measure.timed(lambda: self.store.load(hist))
        _, q_wall, q_cpu = measure.timed(self.store.quiesce)
        disk = self.store.disk_bytes()
        stats = self.store.stats()
        self.out["load"] = {
            "events": events,
            "users": len(self.users),
            "stored_events": self.store.stored_events,
            "method": getattr(self.store, "load_method", "write batches"),
            "seconds": wall,
            # The generator runs inside the timed load (streamed, to keep memory flat); its
            # CPU, measured separately, is subtracted so only the store's work is charged.
            "events_per_s": events / max(wall - gen_cpu, 1e-9),
            "cpu_us_per_event": 1e6 * max(cpu - gen_cpu, 0.0) / max(events, 1),
            "generator_seconds": gen_cpu,
            "quiesce_seconds": q_wall,
            "quiesce_cpu_seconds": q_cpu,
            "disk_bytes": disk,
            "disk_bytes_per_event": disk / max(self.store.stored_events, 1),
            "index_bytes_per_user": stats.get("index_bytes_per_user"),
            "stats": stats.get("raw", {}),
            "rss_after_load_bytes": measure.current_rss_bytes(),
        }

    def _generation_cpu(self) -> float:
        t0 = time.process_time()
        for _ in wl.iter_histories(self.w, self.users, self.lengths):
            pass
        return time.process_time() - t0

    def phase_verify(self) -> None:
        """Every system must return the reference answer, or its timings mean nothing."""
        rng = np.random.default_rng(self.w.seed + 5)
        k = min(self.cfg.verify_users, len(self.users))
        idx = rng.choice(len(self.users), k, replace=False)
        idx = np.union1d(idx, [len(self.users) - 1])  # always include the longest cohort user
        checked, mismatches = 0, []
        for i in idx.tolist():
            user, n = int(self.users[i]), int(self.lengths[i])
            hist = wl.user_history(self.w, user, n)
            for last in (1, 100, 10_000):
                want_n = min(last, n, self.w.blob_cap) if self.system == "rocks_blob" else last
                want = wl.expected_last(hist, min(want_n, n))
                got = self.store.read_last(user, last)
                checked += 1
                for c in wl.EVENT_COLUMNS:
                    if not np.array_equal(np.asarray(got[c]), want[c]):
                        mismatches.append(f"user {user} last {last} column {c}")
                        break
        unknown = self.store.read_last(-987_654_321, 10)
        if _n(unknown) != 0:
            mismatches.append("unknown user is not empty")
        self.out["verify"] = {"reads_checked": checked + 1, "mismatches": mismatches[:20],
                              "n_mismatches": len(mismatches)}

    def _reads(self, users: np.ndarray, seconds: float, last: int) -> dict:
        store = self.store
        return measure.run_ops(lambda u: store.read_last(u, last), users.tolist(),
                               max_seconds=seconds, warmup=self.cfg.warmup,
                               units=lambda _a, r: _n(r))

    def step_reads(self, last: int, skew: str) -> None:
        j = self.cfg.read_lasts.index(last)
        rng = np.random.default_rng([self.w.seed, 10, j, skew == "zipf"])
        n_ops = self.cfg.read_ops + self.cfg.warmup
        users = wl.pick_users(rng, self.population, n_ops, skew, self.w.user_zipf_a)
        r = self._reads(users, self.cfg.read_seconds, last)
        self.out.setdefault("reads", []).append({"last": last, "users": skew, **r})

    def step_sweep(self, length: int, last: int) -> None:
        uids = dict(self.cohorts)[length]
        users = np.resize(uids, self.cfg.sweep_ops + self.cfg.warmup)
        r = self._reads(users, self.cfg.sweep_seconds, last)
        self.out.setdefault("sweep", []).append({"history": length, "last": last, **r})

    def phase_profiles(self) -> None:
        """cProfile of the target workloads, shown in the report where a target is missed."""
        store, secs = self.store, self.cfg.profile_seconds
        profiles = {}
        if self.system == "seqvault":  # reads change nothing: only the profiled system pays
            zipf = iter(wl.pick_users(np.random.default_rng([self.w.seed, 40]), self.population,
                                      1_000_000, "zipf", self.w.user_zipf_a).tolist())
            profiles["read last 100, Zipf users (merged data)"] = _profile(
                lambda: store.read_last(next(zipf), 100), secs)
        long_users = self._cohort_at_least(10_000)
        if long_users is not None:
            cycle = iter(np.resize(long_users, 1_000_000).tolist())
            profiles["read last 10,000"] = _profile(
                lambda: store.read_last(next(cycle), 10_000), secs)
        for batch in (1, 100):
            stream = wl.event_stream(self.w, self.population, 200_000, salt=900 + batch)
            starts = iter(range(0, 200_000 - batch + 1, batch))
            done = [0]

            def one(batch=batch, stream=stream, starts=starts, done=done):
                i = next(starts, None)
                if i is None:
                    return StopIteration
                store.append_events(wl.slice_columns(stream, i, i + batch))
                done[0] = i + batch
                return None

            profiles[f"append, batch {batch}"] = _profile(one, secs)
            self._record(lambda b=batch: wl.event_stream(
                self.w, self.population, 200_000, salt=900 + b), np.arange(done[0]), stream)
        self.out.setdefault("profiles", {}).update(profiles)

    def _cohort_at_least(self, n: int) -> np.ndarray | None:
        for length, uids in self.cohorts:
            if length >= n:
                return uids
        return None

    def _record(self, make: Callable[[], dict], rows: np.ndarray, stream: dict) -> None:
        """Note what an append workload wrote (``rows`` of the stream ``make`` regenerates)."""
        self.appended.append((make, rows))
        hot = self.hot_user()[0]
        self.hot_appended = getattr(self, "hot_appended", 0) + int(
            np.sum(stream[wl.USER_COLUMN][rows] == hot))

    def _ensure_durability(self, durability: str) -> None:
        """Reopen the store at ``durability`` (SeqVault fixes it at open; RocksDB per write)."""
        if durability == self.durability:
            return
        self.store.close()
        t0 = time.perf_counter()
        self.store = open_store(self.system, self.path, durability, self.w.blob_cap)
        self.out.setdefault("reopen_seconds", []).append(time.perf_counter() - t0)
        self.durability = durability

    def step_appends(self, durability: str, batch: int) -> None:
        self._ensure_durability(durability)
        # A fixed salt per (durability, batch): every system appends the same events.
        salt = 1 + self.cfg.durabilities.index(durability) * 10 + self.cfg.batch_sizes.index(batch)
        n_events = min(self.cfg.append_events_max, batch * 20_000)
        stream = wl.event_stream(self.w, self.population, n_events, salt)
        done = [0]

        def slices():
            for i in range(0, n_events - batch + 1, batch):
                done[0] = i + batch  # every slice handed out is appended (warm-up included)
                yield wl.slice_columns(stream, i, i + batch)

        r = measure.run_ops(self.store.append_events, slices(),
                            max_seconds=self.cfg.append_seconds,
                            warmup=self.cfg.warmup, units=lambda a, _r: len(a["ts"]))
        self._record(lambda: wl.event_stream(self.w, self.population, n_events, salt),
                     np.arange(done[0]), stream)
        self.out.setdefault("appends", []).append(
            {"durability": durability, "batch": batch, **r})
        if durability == "sync" and "sync_floor_ops_per_s" not in self.out:
            # The disk's bound on one caller at `sync` (pwrite + fdatasync rounds per second,
            # bench/appends.py): the report sets each sync point's 2x goal against it.
            from bench.appends import sync_floor

            self.out["sync_floor_ops_per_s"] = sync_floor(os.path.dirname(self.path) or ".")

    def _mix(self, is_read: np.ndarray, readers: np.ndarray, stream: dict,
             make_stream: Callable[[], dict], hot: int | None = None) -> dict:
        """One thread: op ``i`` reads the last ``mix_read_last`` of ``readers[i]`` or appends
        rows ``[i*b, (i+1)*b)`` of ``stream``; time-bounded. With ``hot``, reads of that user
        are timed apart from the others' ("cold")."""
        cfg = self.cfg
        store, b, last = self.store, cfg.mix_append_batch, cfg.mix_read_last
        lat: dict[str, list[int]] = {"read": [], "append": [], "hot_read": [], "cold_read": []}
        tcpu: dict[str, list[int]] = {"read": [], "hot_read": [], "cold_read": []}
        perf, thread_ns = time.perf_counter_ns, time.thread_time_ns
        appended: list[int] = []
        cpu0, wall0 = time.process_time(), perf()
        deadline = wall0 + int(cfg.mix_seconds * 1e9)
        done = 0
        for i in range(len(is_read)):
            c0, t0 = thread_ns(), perf()
            if is_read[i]:
                user = int(readers[i])
                store.read_last(user, last)
                t1 = perf()
                c1 = thread_ns() - c0
                kinds = ["read"] + ([] if hot is None else
                                    ["hot_read" if user == hot else "cold_read"])
                for kind in kinds:
                    lat[kind].append(t1 - t0)
                    tcpu[kind].append(c1)
            else:
                store.append_events(wl.slice_columns(stream, i * b, (i + 1) * b))
                t1 = perf()
                lat["append"].append(t1 - t0)
                appended.append(i)
            done += 1
            if t1 > deadline:
                break
        wall, cpu = (perf() - wall0) / 1e9, time.process_time() - cpu0
        rows = (np.asarray(appended, dtype=np.int64)[:, None] * b + np.arange(b)).ravel()
        self._record(make_stream, rows, stream)
        out = {"ops": done, "ops_per_s": done / wall, "cpu_ms_per_op": 1e3 * cpu / max(done, 1),
               "read_last": last, "append_batch": b, "reads": len(lat["read"]),
               "appends": len(lat["append"])}
        for kind, ls in lat.items():
            if kind == "append" or ls or hot is not None:
                out.update({f"{kind}_{k}": v for k, v in measure.percentiles_ms(
                    np.asarray(ls, dtype=np.float64)).items()})
        for kind, ls in tcpu.items():
            if ls or hot is not None:
                out.update({f"{kind}_tcpu_{k}": v for k, v in measure.percentiles_ms(
                    np.asarray(ls, dtype=np.float64)).items()})
        return out

    def phase_mix(self) -> None:
        """90% reads of the last ``mix_read_last`` of Zipf users, 10% appends of a batch; the
        Zipf law spans the whole population (no accidental hot user: see ``phase_hot_mix``)."""
        cfg = self.cfg
        rng = np.random.default_rng([self.w.seed, 20])
        n = cfg.mix_ops
        is_read = rng.random(n) < 0.9
        readers = wl.pick_users(rng, self.population, n, "zipf", self.w.user_zipf_a)
        n_events = cfg.mix_append_batch * n

        def make() -> dict:
            return wl.event_stream(self.w, self.population, n_events, salt=77)

        self.out["mix"] = self._mix(is_read, readers, make(), make)
        if self.system == "seqvault":
            # Where a fresh read's time goes (the mix's reads, after the append workloads).
            store, last = self.store, cfg.mix_read_last
            # Cycled: the profile is time-bounded, and fast reads used to run past a fixed list
            # (StopIteration from inside the profiled call failed the tiny preset's run).
            zipf = itertools.cycle(readers.tolist())
            self.out.setdefault("profiles", {})[
                f"read last {last:,}, Zipf users, fresh data (the mix's reads)"] = _profile(
                lambda: store.read_last(next(zipf), last), cfg.profile_seconds)

    def hot_user(self) -> tuple[int, int]:
        """(id, loaded history length) of the hot-user mix's hot user: the population's Zipf
        rank-1 user, so it has also received the largest share of every earlier append
        workload (all unmerged when the hot mix runs): the user whose fresh reads suffer most
        from many small real-time segments."""
        ids, lengths = wl.population_users(self.w)
        i = int(np.flatnonzero(ids == wl.hottest_user(ids))[0])
        return int(ids[i]), int(lengths[i])

    def phase_hot_mix(self) -> None:
        """The 90/10 mix where one user receives ``hot_share`` of the appended events and of
        the reads; the rest are Zipf over the other users. Reports that user's read latency
        against the other ("cold") users' reads of the same mix."""
        cfg = self.cfg
        hot, hot_len = self.hot_user()
        rng = np.random.default_rng([self.w.seed, 21])
        n = cfg.mix_ops
        is_read = rng.random(n) < 0.9
        others = self.population[self.population != hot]
        readers = wl.pick_users(rng, others, n, "zipf", self.w.user_zipf_a)
        readers = np.where(rng.random(n) < cfg.hot_share, np.int64(hot), readers)
        n_events = cfg.mix_append_batch * n

        def make() -> dict:
            return wl.hot_event_stream(self.w, others, n_events, 78, hot, cfg.hot_share)

        stream = make()
        before = getattr(self, "hot_appended", 0)
        r = self._mix(is_read, readers, stream, make, hot=hot)
        rows = self.appended[-1][1]
        r.update({"hot_user": hot, "hot_user_history": hot_len, "hot_share": cfg.hot_share,
                  "hot_events_before": before,
                  "hot_events_appended": int(np.sum(stream[wl.USER_COLUMN][rows] == hot)),
                  "events_appended": len(rows)})
        self.out["hot_mix"] = r

    def phase_merge(self) -> None:
        """Zipf reads while the store's background maintenance runs, against the same reads on
        the same data with nothing running (issue 12: "read p99 during a merge <= 2x the quiet
        p99").

        The quiet reads come first, on the store exactly as the merge will find it (after
        ``maintenance()`` has set it up: the background merger waiting, or the memtable flushed in
        explicit mode), paced at the same rate by the same loop as the reads during the merge.
        Until 2026-12 the quiet reads ran after the merge, in a tight loop, on freshly merged
        single segments, while the reads during it saw the pre-merge layout: that ratio mixed
        the merge's interference with the layout change. Those after-merge reads are still
        taken and reported as ``after_*`` (what the merged layout costs)."""
        work = self.store.maintenance()
        if work is None:
            self.out["merge"] = {"skipped": "SeqVault.merge() not available yet (lifetime merge "
                                            "issue); rerun when it lands"}
            return
        rng = np.random.default_rng([self.w.seed, 30])
        users = wl.pick_users(rng, self.population, 200_000, "zipf", self.w.user_zipf_a)
        store, last = self.store, self.cfg.merge_read_last
        state: dict[str, Any] = {}

        def background() -> None:
            t0 = time.perf_counter()
            state["start_ns"] = time.perf_counter_ns()
            try:
                summary = work()
                if isinstance(summary, dict):
                    state["summary"] = {k: v for k, v in summary.items()
                                        if isinstance(v, int | float | str)}
            except Exception as exc:  # reported, and the reads still stop
                state["error"] = repr(exc)
            state["seconds"] = time.perf_counter() - t0
            state["end_ns"] = time.perf_counter_ns()

        thread = threading.Thread(target=background, daemon=True)
        reader = self._start_ro_reader(users, last)
        quiet_s = max(self.cfg.merge_min_seconds, self.cfg.read_seconds)
        for u in users[: self.cfg.warmup].tolist():
            store.read_last(int(u), last)
        # The same users, in the same order, as the reads during the merge.
        q_lat, q_tcpu = self._paced_reads(users, last, lambda n, el: el < quiet_s)
        thread.start()
        min_s = self.cfg.merge_min_seconds
        lat, tcpu = self._paced_reads(users, last,
                                      lambda n, el: thread.is_alive() or el < min_s, state)
        thread.join()
        ro = self._stop_ro_reader(reader, state) if reader is not None else None
        n_during = state.get("during_ops", len(lat))
        during = np.asarray(lat[:n_during], dtype=np.float64)
        after = self._reads(users[: self.cfg.read_ops], self.cfg.read_seconds, last)
        q_ms = measure.percentiles_ms(np.asarray(q_lat, dtype=np.float64))
        self.out["merge"] = {
            "read_last": last,
            "merge_seconds": state.get("seconds"),
            "error": state.get("error"),
            "summary": state.get("summary"),
            "during_ops": len(during),
            "quiet_ops": len(q_lat),
            "quiet_when": "before the merge, same state, same paced loop",
            "read_rate": self.cfg.merge_read_rate,
            **{f"during_{k}": v for k, v in measure.percentiles_ms(during).items()},
            **{f"during_tcpu_{k}": v for k, v in measure.percentiles_ms(np.asarray(
                tcpu[:n_during], dtype=np.float64)).items()},
            **{f"quiet_{k}": q_ms[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms")},
            **{f"quiet_tcpu_{k}": v for k, v in measure.percentiles_ms(np.asarray(
                q_tcpu, dtype=np.float64)).items() if k in ("p50_ms", "p99_ms")},
            **{f"after_{k}": after[k] for k in ("p50_ms", "p95_ms", "p99_ms", "max_ms",
                                                 "tcpu_p50_ms", "tcpu_p99_ms")},
        }
        if ro is not None:
            self.out["merge"]["read_only_process"] = ro
        # Bytes on disk are compared after each system's full compaction (RocksDB:
        # compact_range, already what its maintenance ran; SeqVault: merge() rewriting files
        # of more than 10% garbage — the background pass above keeps up to 50% under load).
        self.store.merge()
        self._disk_after_merge()

    def _paced_reads(self, users: np.ndarray, last: int, go, state: dict | None = None,
                     ) -> tuple[list[int], list[int]]:
        """Reads of ``users`` (cycling, from the first) at ``merge_read_rate``, while
        ``go(reads_so_far, elapsed_seconds)``; returns wall and thread-CPU ns per read. With
        ``state``, records ``during_ops`` once ``state`` has an ``end_ns`` (the merge ended).
        Reads arrive at a steady rate, as a model server's do, rather than in a tight loop
        that would hold the GIL and starve an in-process merge (measuring the loop, not the
        store)."""
        store = self.store
        lat: list[int] = []
        tcpu: list[int] = []
        perf, thread_ns = time.perf_counter_ns, time.thread_time_ns
        period = int(1e9 / self.cfg.merge_read_rate)
        i, start = 0, perf()
        next_t = start
        while go(i, (perf() - start) / 1e9):
            now = perf()
            if now < next_t:
                time.sleep((next_t - now) / 1e9)
            next_t = max(next_t + period, now - 10 * period)  # behind: don't burst to catch up
            c0, t0 = thread_ns(), perf()
            store.read_last(int(users[i % len(users)]), last)
            lat.append(perf() - t0)
            tcpu.append(thread_ns() - c0)
            i += 1
            if state is not None and "end_ns" in state and "during_ops" not in state:
                state["during_ops"] = len(lat)
        return lat, tcpu

    def _start_ro_reader(self, users: np.ndarray, last: int):
        """SeqVault only: a second, read-only process reading at the same steady rate; it
        reads quietly while this process takes its quiet reads before the merge starts (and
        for ``merge_min_seconds`` after it ends)."""
        if self.system != "seqvault":
            return None
        users_npy = self.path + "-ro-users.npy"
        np.save(users_npy, users[:20_000])
        out = self.path + "-ro-lat.npz"
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.ro_reader", self.path, users_npy, str(last),
             str(self.cfg.merge_read_rate), out],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if proc.stdout is None or proc.stdout.readline().strip() != "ready":
            proc.kill()
            proc.wait()
            self.out["notes"].append("read-only reader process failed to open the store")
            return None
        return proc, out, users_npy

    def _stop_ro_reader(self, reader, state: dict) -> dict:
        proc, out, users_npy = reader
        time.sleep(self.cfg.merge_min_seconds)  # quiet reads after the merge
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write("stop\n")
            proc.stdin.flush()
            ok = proc.stdout.readline().strip() == "ok"
            proc.wait(timeout=30)
        except (OSError, AssertionError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()
            ok = False
        if not ok:
            return {"error": "read-only reader process failed"}
        data = np.load(out, allow_pickle=True)
        os.remove(out)
        os.remove(users_npy)
        starts, lat = data["starts"], data["lat"].astype(np.float64)
        t0, t1 = state.get("start_ns", 0), state.get("end_ns", 0)
        inside = (starts >= t0) & (starts <= t1)
        # Quiet: the reads before the merge (same data state as during it); the reads after it
        # see the merged layout and are reported apart.
        before, after = starts < t0, starts > t1
        return {"reads_during": int(inside.sum()), "reads_quiet": int(before.sum()),
                "reads_after": int(after.sum()),
                "errors": [str(e) for e in data["errors"]],
                **{f"during_{k}": v for k, v in measure.percentiles_ms(lat[inside]).items()},
                **{f"quiet_{k}": v for k, v in measure.percentiles_ms(lat[before]).items()},
                **{f"after_{k}": v for k, v in measure.percentiles_ms(lat[after]).items()}}

    def _disk_after_merge(self) -> None:
        """Bytes on disk once the append workloads are merged (compacted), and the events."""
        appended = sum(len(rows) for _, rows in self.appended)
        parts = {}
        if hasattr(self.store, "stats"):  # where the bytes are (SeqVault: data/wal/meta split)
            raw = self.store.stats().get("raw", {})
            parts = {k: raw[k] for k in ("data_bytes", "live_bytes", "garbage_bytes",
                                         "wal_bytes", "meta_bytes") if k in raw}
        self.out["after_appends"] = {"disk_bytes": self.store.disk_bytes(), "parts": parts,
                                     "events_appended": appended,
                                     "events": int(self.lengths.sum()) + appended}

    # ------------------------------------------------------------------ disk: clean load
    def _all_histories(self):
        """Every user's events as this store received them: the loaded history, then what the
        append workloads added (in arrival order)."""
        parts = []
        for make, rows in self.appended:
            if len(rows):
                cols = make()
                parts.append({k: v[rows] for k, v in cols.items()})
        extra: dict[int, dict[str, np.ndarray]] = {}
        if parts:
            app = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
            order = np.argsort(app[wl.USER_COLUMN], kind="stable")
            app = {k: v[order] for k, v in app.items()}
            uniq, starts = np.unique(app[wl.USER_COLUMN], return_index=True)
            bounds = list(starts[1:]) + [len(order)]
            for u, a, z in zip(uniq.tolist(), starts.tolist(), bounds, strict=True):
                extra[u] = {c: app[c][a:z] for c in wl.EVENT_COLUMNS}
        for user, n in zip(self.users.tolist(), self.lengths.tolist(), strict=True):
            hist = wl.user_history(self.w, user, n)
            more = extra.pop(user, None)
            if more is not None:
                hist = {c: np.concatenate([hist[c], more[c]]) for c in wl.EVENT_COLUMNS}
            yield user, hist
        yield from extra.items()

    def phase_clean_load(self) -> None:
        """Load every event this store holds into a fresh store in one clean bulk load (the
        same load path as ``load``), quiesce it, and compare bytes on disk with the store that
        received them through the append workloads and a merge."""
        if "after_appends" not in self.out:
            self._disk_after_merge()
        path = self.path + "-clean"
        scratch = path + "-input"
        os.makedirs(scratch, exist_ok=True)
        store = open_store(self.system, path, self.cfg.load_durability, self.w.blob_cap)
        try:
            prepared = (store.prepare_bulk(self._all_histories(), scratch)
                        if hasattr(store, "prepare_bulk") else None)
            t0 = time.perf_counter()
            events = prepared[0]() if prepared is not None else store.load(self._all_histories())
            store.quiesce()
            raw = store.stats().get("raw", {}) if hasattr(store, "stats") else {}
            self.out["clean_load"] = {"events": int(events), "disk_bytes": store.disk_bytes(),
                                      "parts": {k: raw[k] for k in (
                                          "data_bytes", "live_bytes", "garbage_bytes",
                                          "wal_bytes", "meta_bytes") if k in raw},
                                      "seconds": time.perf_counter() - t0,
                                      "method": getattr(store, "load_method", "write batches")}
        finally:
            store.close()
            shutil.rmtree(path, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)

    # ------------------------------------------------------------------ many-user batch load
    def phase_batch_load(self) -> None:
        """``append_batch`` of many distinct users with a few events each into a fresh store,
        then flush and merge (``batch_load``)."""
        cfg = self.cfg
        self.out["batch_load"] = batch_load(
            self.system, self.w, cfg.batchload_users, cfg.batchload_events_per_user,
            cfg.batchload_call_rows, self.path + "-batchload", cfg.load_durability)


def batch_load(system: str, w: WorkloadConfig, users: int, per_user: int, call_rows: int,
               path: str, durability: str = "batch") -> dict[str, Any]:
    """``append_batch`` of ``users`` distinct users with ``per_user`` events each into a fresh
    store at ``path``, in calls of ``call_rows`` rows, then flush and merge (RocksDB: write
    batches of the same rows, flush, full compaction). Process CPU (all threads) and wall time,
    end to end; a few users read back to check. Also run on its own by ``bench.batchload``."""
    rows = wl.many_user_rows(w, users, per_user)
    n = len(rows["ts"])
    calls = [wl.slice_columns(rows, i, i + call_rows) for i in range(0, n, call_rows)]
    store = open_store(system, path, durability, w.blob_cap)
    try:
        def write() -> None:
            for call in calls:
                store.append_events(call)

        _, w_wall, w_cpu = measure.timed(write)
        _, f_wall, f_cpu = measure.timed(store.flush)
        _, m_wall, m_cpu = measure.timed(store.merge)
        # Correctness: a few users read back whole (count and time order).
        rng = np.random.default_rng(w.seed + 6)
        sample = rng.choice(rows[wl.USER_COLUMN], min(20, n), replace=False)
        bad = 0
        for u in np.unique(sample).tolist():
            got = store.read_last(int(u), 1_000)
            want = np.sort(rows["ts"][rows[wl.USER_COLUMN] == u], kind="stable")
            bad += not np.array_equal(np.asarray(got["ts"]), want)
        disk = store.disk_bytes()
    finally:
        store.close()
        shutil.rmtree(path, ignore_errors=True)
    cpu, wall = w_cpu + f_cpu + m_cpu, w_wall + f_wall + m_wall
    return {
        "users": users, "events_per_user": per_user,
        "events": n, "call_rows": call_rows, "calls": len(calls),
        "write_seconds": w_wall, "write_cpu_seconds": w_cpu,
        "flush_seconds": f_wall, "flush_cpu_seconds": f_cpu,
        "merge_seconds": m_wall, "merge_cpu_seconds": m_cpu,
        "seconds": wall, "cpu_seconds": cpu,
        "events_per_cpu_second": n / max(cpu, 1e-9), "events_per_s": n / max(wall, 1e-9),
        "disk_bytes_per_event": disk / max(n, 1), "users_checked": len(np.unique(sample)),
        "mismatches": int(bad),
    }


def run_system(system: str, cfg: RunConfig, path: str) -> dict[str, Any]:
    return Runner(system, cfg, path).run()
