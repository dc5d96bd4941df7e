"""Lifetime merge benchmark (issue 3): space after a month of appends, read p99 while merge
runs, merge throughput.

    .venv/bin/python -m bench.merge_bench                  # default scale (about 2 minutes)
    .venv/bin/python -m bench.merge_bench --users 300 --days 10 --per-day 20   # smoke

1. *A month*: `--days` days; each day every user gets a log-normal number of events (mean
   `--per-day`), appended in hourly `append_batch` calls across users; 10% of the events are
   late (timestamps up to 3 days in the past). `vault.merge()` runs once a day (with
   reclamation), as the background merger would. At the end: one more merge.
2. *A fresh bulk load* of exactly the same events (one BulkWriter transaction) into a new store.
   Reported: data bytes/event and disk bytes/event (data + log + LMDB) of both, and the ratio.
3. *Read latency*: a separate read-only process reads `last=100` for random users in a loop.
   Three windows: at rest after a day of appends (rt + lt segments), *while merge folds that
   day* (the writer merges at full speed), and at rest after the merge. p50/p99 and the
   during/at-rest ratio (target ≤ 2×). The same with the reader as a thread of the writer
   process (shares the GIL with merge) is reported too.
4. *Merge throughput*: events read+rewritten per second of merge wall time (from the merge
   summaries), for the daily merges and for the final timed merge.

Results are printed as JSON and written to bench/results/merge_bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqvault import SeqVault, sample  # noqa: E402
from seqvault.merge import lower_thread_priority  # noqa: E402
from seqvault.validate import validate_events  # noqa: E402

DAY_MS = 86_400_000

READER = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from pathlib import Path
from seqvault import SeqVault
path, stop, users, seed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = np.random.default_rng(seed)
r = SeqVault.open(path, read_only=True)
lat = []
print("ready", flush=True)
while not stop.exists():
    u = int(rng.integers(0, users))
    t = time.perf_counter()
    r.read(u, last=100)
    lat.append(time.perf_counter() - t)
r.close()
print(json.dumps(lat))
"""


def day_events(rng: np.random.Generator, users: int, per_day: float, day: int, t0: int,
               late_frac: float) -> dict[str, np.ndarray]:
    counts = np.maximum(0, rng.lognormal(np.log(per_day) - 0.5, 1.0, users)).astype(np.int64)
    n = int(counts.sum())
    uid = np.repeat(np.arange(users, dtype=np.int64), counts)
    ts = t0 + day * DAY_MS + rng.integers(0, DAY_MS, n)
    late = rng.random(n) < late_frac
    ts[late] -= rng.integers(1, 3 * DAY_MS, int(late.sum()))
    return {"user_id": uid, "ts": ts, **sample.event_columns(rng, n, n_items=10_000_000)}


def hour_slices(ev: dict[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Arrival order: by (true) hour of the day, late events arrive with their hour."""
    n = ev["ts"].size
    arrival = np.sort(np.random.default_rng(0).integers(0, 24, n))
    order = np.random.default_rng(1).permutation(n)
    out = []
    for h in range(24):
        idx = order[arrival == h]
        if idx.size:
            out.append({k: v[idx] for k, v in ev.items()})
    return out


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pct(lat: list[float], q: float) -> float:
    return float(np.percentile(np.array(lat) * 1000, q)) if lat else float("nan")


def start_reader(path: Path, stop: Path, users: int, seed: int) -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, "-c", READER.format(root=str(ROOT)), str(path),
                          str(stop), str(users), str(seed)], stdout=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == b"ready"
    return p


def stop_reader(p: subprocess.Popen[bytes], stop: Path) -> list[float]:
    stop.touch()
    out, _ = p.communicate(timeout=120)
    stop.unlink()
    return json.loads(out.decode().strip().splitlines()[-1])


def read_window(path: Path, users: int, seconds: float, seed: int, tmp: Path) -> list[float]:
    stop = tmp / "stop"
    p = start_reader(path, stop, users, seed)
    time.sleep(seconds)
    return stop_reader(p, stop)


def thread_reads(v: SeqVault, users: int, until: threading.Event, out: list[float]) -> None:
    rng = np.random.default_rng(7)
    while not until.is_set():
        u = int(rng.integers(0, users))
        t = time.perf_counter()
        v.read(u, last=100)
        out.append(time.perf_counter() - t)


def background_pass(v: SeqVault) -> dict[str, Any]:
    """One pass as the background merger runs it: merge_duty pace, merge_nice, merge_worker
    (by default the heavy part in the merge process; with "thread", in a niced thread)."""
    out: dict[str, Any] = {}
    worker = str(v.settings["merge_worker"])
    nice = int(v.settings["merge_nice"])

    def work() -> None:
        if worker == "thread":
            lower_thread_priority(nice)
        out.update(v._get_merger().run(duty=float(v.settings["merge_duty"]), worker=worker,
                                       nice=nice))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--per-day", type=float, default=40.0)
    ap.add_argument("--late", type=float, default=0.10)
    ap.add_argument("--rest-seconds", type=float, default=10.0,
                    help="length of each at-rest read window")
    ap.add_argument("--dir", type=str, default=None)
    ap.add_argument("--out", type=str, default=str(ROOT / "bench" / "results" /
                                                   "merge_bench.json"))
    args = ap.parse_args(argv)
    tmp = Path(args.dir or tempfile.mkdtemp(prefix="sv-merge-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    schema = sample.behavior_schema()
    rng = np.random.default_rng(42)
    t0 = int(time.time() * 1000) - (args.days + 1) * DAY_MS  # inside max_age
    days = [day_events(rng, args.users, args.per_day, d, t0, args.late)
            for d in range(args.days + 1)]
    month, extra_day = days[:-1], days[-1]
    total = sum(int(d["ts"].size) for d in month)

    # ---------------------------------------------------------------- 1. a month of appends
    a_path = tmp / "appended"
    shutil.rmtree(a_path, ignore_errors=True)
    v = SeqVault.open(a_path, schema=schema, durability="batch")
    daily: list[dict[str, Any]] = []
    t_app = 0.0
    for d, ev in enumerate(month):
        t = time.perf_counter()
        for sl in hour_slices(ev):
            v.append_batch(sl)
        v.flush()
        t_app += time.perf_counter() - t
        res = v.merge()
        daily.append({"day": d, "events_in": res["events_in"], "seconds": res["seconds"],
                      "files_reclaimed": res["files_reclaimed"]})
    final = v.merge()
    st0 = v.stats()
    v.close()
    before_compaction = {"data_bytes": st0["data_bytes"], "disk_bytes": dir_bytes(a_path),
                         "garbage_bytes": st0["garbage_bytes"]}
    v = SeqVault.open(a_path)
    compaction = v.merge(reclaim_ratio=0.9)  # what auto_merge does when idle
    st = v.stats()
    v.close()
    appended = {"before_idle_compaction": before_compaction,
                "idle_compaction": {k: compaction[k] for k in
                                    ("events_in", "seconds", "files_reclaimed",
                                     "bytes_reclaimed")},"events": st["events"], "data_bytes": st["data_bytes"],
                "disk_bytes": dir_bytes(a_path), "segments": st["segments"],
                "garbage_bytes": st["garbage_bytes"], "files": st["files"],
                "append_events_per_s": round(total / t_app, 1)}
    assert st["events"] == total, (st["events"], total)

    # ---------------------------------------------------------------- 2. fresh bulk load
    b_path = tmp / "bulk"
    shutil.rmtree(b_path, ignore_errors=True)
    allev = {k: np.concatenate([d[k] for d in month]) for k in month[0]}
    # arrival order = the order the month appended them (day, then hour slices)
    arrival = {k: np.concatenate([sl[k] for d in month for sl in hour_slices(d)])
               for k in month[0]}
    del allev
    order = np.argsort(arrival["user_id"], kind="stable")
    uids = arrival["user_id"][order]
    cols = {k: v_[order] for k, v_ in arrival.items() if k != "user_id"}
    bounds = np.flatnonzero(np.diff(uids)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [uids.size]])
    b = SeqVault.open(b_path, schema=schema, durability="batch")
    t = time.perf_counter()
    with b.bulk_writer() as bw:
        for s_, e_ in zip(starts.tolist(), ends.tolist()):
            ts, vc = validate_events(schema, {k: a[s_:e_] for k, a in cols.items()})
            bw.add(int(uids[s_]), ts, vc)
    t_bulk = time.perf_counter() - t
    bst = b.stats()
    b.close()
    bulk = {"events": bst["events"], "data_bytes": bst["data_bytes"],
            "disk_bytes": dir_bytes(b_path), "segments": bst["segments"],
            "bulk_events_per_s": round(total / t_bulk, 1)}
    # same answers
    with SeqVault.open(a_path, read_only=True) as ra, SeqVault.open(b_path, read_only=True) as rb:
        for u in range(0, args.users, max(1, args.users // 50)):
            x, y = ra.read(u), rb.read(u)
            assert x["ts"].tolist() == y["ts"].tolist() and \
                x["item_id"].tolist() == y["item_id"].tolist(), f"user {u} differs"

    # ---------------------------------------------------------------- 3. reads during merge
    v = SeqVault.open(a_path)
    for sl in hour_slices(extra_day):
        v.append_batch(sl)
    v.flush()
    rest_before = read_window(a_path, args.users, args.rest_seconds, 1, tmp)
    stop = tmp / "stop"
    p = start_reader(a_path, stop, args.users, 2)
    res = v.merge()  # full speed (duty 1.0)
    during = stop_reader(p, stop)
    rest_after = read_window(a_path, args.users, args.rest_seconds, 3, tmp)
    rest = rest_before + rest_after
    # the background merger's default pace (merge_duty 0.5) on another day of appends
    day1 = day_events(np.random.default_rng(8), args.users, args.per_day, args.days, t0,
                      args.late)
    for sl in hour_slices(day1):
        v.append_batch(sl)
    v.flush()
    p = start_reader(a_path, stop, args.users, 4)
    res_bg = background_pass(v)
    during_bg = stop_reader(p, stop)
    # in-process reader thread (shares the GIL with merge)
    day2 = day_events(np.random.default_rng(9), args.users, args.per_day, args.days + 1, t0,
                      args.late)
    for sl in hour_slices(day2):
        v.append_batch(sl)
    v.flush()
    ev_stop = threading.Event()
    th_rest: list[float] = []
    th = threading.Thread(target=thread_reads, args=(v, args.users, ev_stop, th_rest))
    th.start()
    time.sleep(args.rest_seconds)
    ev_stop.set()
    th.join()
    ev_stop.clear()
    th_during: list[float] = []
    th = threading.Thread(target=thread_reads, args=(v, args.users, ev_stop, th_during))
    th.start()
    res_paced = background_pass(v)
    ev_stop.set()
    th.join()
    v.close()

    def summary(lat: list[float]) -> dict[str, float]:
        return {"reads": len(lat), "p50_ms": round(pct(lat, 50), 4),
                "p99_ms": round(pct(lat, 99), 4)}

    out = {
        "config": vars(args) | {"events": total, "dir": str(tmp)},
        "space": {
            "appended_and_merged": appended, "fresh_bulk_load": bulk,
            "data_bytes_per_event": {
                "merged_before_idle_compaction": round(before_compaction["data_bytes"] / total, 3),
                "merged": round(appended["data_bytes"] / total, 3),
                                     "bulk": round(bulk["data_bytes"] / total, 3)},
            "disk_bytes_per_event": {
                "merged_before_idle_compaction": round(before_compaction["disk_bytes"] / total, 3),
                "merged": round(appended["disk_bytes"] / total, 3),
                                     "bulk": round(bulk["disk_bytes"] / total, 3)},
            "data_ratio_merged_vs_bulk": round(appended["data_bytes"] / bulk["data_bytes"], 4),
            "disk_ratio_merged_vs_bulk": round(appended["disk_bytes"] / bulk["disk_bytes"], 4),
        },
        "reads_last100_other_process": {
            "rest_before_merge": summary(rest_before), "during_merge": summary(during),
            "rest_after_merge": summary(rest_after),
            "rest_pooled": summary(rest),
            "p99_during_vs_rest": round(pct(during, 99) / pct(rest, 99), 3),
            "merge_seconds": res["seconds"], "merge_events": res["events_in"],
            "during_background_merge": summary(during_bg),
            "p99_during_background_vs_rest": round(pct(during_bg, 99) / pct(rest, 99), 3),
            "background_merge_seconds": res_bg["seconds"],
        },
        "reads_last100_same_process_thread": {
            "rest": summary(th_rest), "during_background_merge": summary(th_during),
            "p99_during_vs_rest": round(pct(th_during, 99) / pct(th_rest, 99), 3),
            "merge_seconds": res_paced["seconds"],
        },
        "merge_throughput": {
            "daily_events_per_s": round(sum(d["events_in"] for d in daily)
                                        / max(1e-9, sum(d["seconds"] for d in daily)), 1),
            "final_day_merge_events_per_s": res["events_per_s"],
            "daily_merge_seconds_mean": round(float(np.mean([d["seconds"] for d in daily])), 3),
            "final_merge": {k: final[k] for k in ("events_in", "seconds", "files_reclaimed")},
        },
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
