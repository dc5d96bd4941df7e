"""Thread-CPU per read of the last 100 / 1,000 / 10,000 events, SeqVault beside both RocksDB
LastN layouts in one process, on fresh (real-time) and on merged data; plus a breakdown of
where one segment decode spends its time. The measurement behind docs/design/realtime.md
("Compiled decoder").

    .venv/bin/python -m bench.native_reads                  # whichever decoder is built
    SEQVAULT_NATIVE=0 .venv/bin/python -m bench.native_reads   # the pure-Python decoder
    .venv/bin/python -m bench.native_reads --users 40 --rounds 7 --json out.json
    .venv/bin/python -m bench.native_reads --sweep      # last 100 by history length, below

Data: ``--users`` users of 10,290 events each (bench.workload histories, late events
included). *Fresh*: appended in calls of 200 events, users interleaved, so each user has five
sealed 2,048-event real-time segments and a 50-event memtable tail (the real-time path's
steady state between merges). *Merged*: the same store after ``flush`` and ``merge``
(lifetime segments 2,048 / 8,192 / rest). RocksDB key-per-event and blob are loaded with the
same histories and compacted.

Figures are thread CPU time (``time.thread_time_ns``) per read, so other processes on a
shared machine do not inflate them: each round reads every user once in a shuffled order;
the report gives the median of the rounds' means and the min–max over rounds.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from bench import workload as wl

EVENTS = 5 * 2_048 + 50
LASTS = (100, 1_000, 10_000)


def histories(n_users: int) -> list[tuple[int, dict[str, np.ndarray]]]:
    cfg = wl.WorkloadConfig()
    return [(7_000 + u, wl.user_history(cfg, 7_000 + u, EVENTS)) for u in range(n_users)]


def load_fresh(path: Path, hist) -> object:
    from seqvault import Schema, SeqVault

    schema = Schema.from_arrow(wl.ARROW_SCHEMA, user_column=wl.USER_COLUMN,
                               time_column=wl.TIME_COLUMN)
    v = SeqVault.open(path, schema=schema, durability="none")
    step = 200
    for start in range(0, EVENTS, step):
        for user, cols in hist:
            v.append(user, {c: cols[c][start:start + step] for c in wl.EVENT_COLUMNS})
    return v


def thread_cpu_per_read(read, users: list[int], last: int, rounds: int, seed: int = 1
                        ) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    for u in users[:3]:  # warm: first page-in, caches
        read(u, last)
    means, lat = [], []
    tns, pns = time.thread_time_ns, time.perf_counter_ns
    for _ in range(rounds):
        order = rng.permutation(len(users))
        total = 0
        for i in order:
            c0, w0 = tns(), pns()
            read(users[i], last)
            w1, c1 = pns(), tns()
            total += c1 - c0
            lat.append(w1 - w0)
        means.append(total / len(users) / 1e3)
    arr = np.asarray(means)
    lat_ms = np.asarray(lat) / 1e6
    return {"cpu_us": float(np.median(arr)), "cpu_us_min": float(arr.min()),
            "cpu_us_max": float(arr.max()), "p50_ms": float(np.percentile(lat_ms, 50)),
            "p99_ms": float(np.percentile(lat_ms, 99))}


def breakdown(vault, user: int, reps: int = 400) -> dict[str, float]:
    """Thread-CPU µs of each step of decoding one user's newest sealed segment, the Python
    decoder's steps timed one by one (the compiled decoder does them all in one call)."""
    import zlib

    from seqvault import index as vindex
    from seqvault import segment as vseg
    from seqvault.encoding import FLAG_ZSTD, decode_column, decompressor

    kb = vseg.key_bytes(user)[1]
    tns = time.thread_time_ns
    ext = vault.manifest.index.extents_of(vindex.user_hash(kb))[0]  # newest
    files = vault.manifest.files
    buf = files.pread(ext.file, ext.off, ext.length)
    header = vseg.parse_header(buf)
    ids = [0] + [c.id for c in vault.schema.columns]
    view = memoryview(buf)

    def timeit(fn) -> float:
        fn()
        c0 = tns()
        for _ in range(reps):
            fn()
        return (tns() - c0) / reps / 1e3

    def crcs():
        for e in header.columns.values():
            zlib.crc32(view[e.offset:e.offset + e.stored_len])

    def zstds():
        d = decompressor()
        for e in header.columns.values():
            if e.flags & FLAG_ZSTD:
                d.decompress(view[e.offset:e.offset + e.stored_len], max_output_size=e.raw_len)

    def columns():
        for e in header.columns.values():
            decode_column(e, view[e.offset:e.offset + e.stored_len], header.count,
                          vseg.dtype_of(e.dtype_code))

    out = {
        "events_in_segment": float(header.count),
        "columns": float(len(header.columns)),
        "index_lookup": timeit(lambda: vault.manifest.index.extents_of(vindex.user_hash(kb))),
        "pread": timeit(lambda: files.pread(ext.file, ext.off, ext.length)),
        "parse_header": timeit(lambda: vseg.parse_header(buf)),
        "crc_all_columns": timeit(crcs),
        "zstd_all_columns": timeit(zstds),
        "decode_column_all": timeit(columns),  # zstd + unshuffle/widen/delta, no CRC
        "decode_segment": timeit(lambda: vseg.decode_segment(buf, ids)),
        "read_last_100": timeit(lambda: vault.read(user, last=100)),
    }
    out["unshuffle_delta_numpy"] = out["decode_column_all"] - out["zstd_all_columns"]
    return out


def decode_by_size(schema, reps: int = 300) -> dict[str, dict[str, float]]:
    """Thread-CPU µs of one `decode_segment` (every column; and the newest 100 rows) of
    segments of several sizes, each decoder in turn: the fixed cost per segment, and what a
    smaller newest tier would save a short read."""
    from seqvault import native
    from seqvault import segment as vseg

    hist = wl.expected_last(wl.user_history(wl.WorkloadConfig(), 4242, 16_384), 16_384)
    ids = [0] + [c.id for c in schema.columns]
    tns = time.thread_time_ns
    compiled = native.DECODER
    out: dict[str, dict[str, float]] = {}
    for n in (64, 256, 2_048, 8_192, 16_384):
        cols = [(c.id, c.type, hist[c.name][-n:], c.level) for c in schema.columns]
        buf = vseg.encode_segment(4242, 1, hist["ts"][-n:], cols)
        row: dict[str, float] = {}
        for name, dec in (("python", None), ("native", compiled)):
            if name == "native" and dec is None:
                continue
            native.DECODER = dec
            try:
                for label, rows in (("all", None), ("last100", 100)):
                    vseg.decode_segment(buf, ids, rows=rows)
                    c0 = tns()
                    for _ in range(reps):
                        vseg.decode_segment(buf, ids, rows=rows)
                    row[f"{name}_{label}_us"] = (tns() - c0) / reps / 1e3
            finally:
                native.DECODER = compiled
        out[str(n)] = row
    return out


SWEEP = ((1_000, 16), (10_000, 12), (100_000, 3))  # (events a user, users)


def _cpu_runs(read, users: list[int], rounds: int, reps: int) -> list[float]:
    """Thread-CPU µs per read of `rounds` runs of `reps` reads cycling over `users`."""
    tns = time.thread_time_ns
    got = []
    for _ in range(rounds):
        c0 = tns()
        for i in range(reps):
            read(users[i % len(users)])
        got.append((tns() - c0) / reps / 1e3)
    return got


def _sweep_one(schema, events: int, n_users: int, rounds: int, reps: int
               ) -> dict[str, list[float]]:
    from bench.rocks_baselines import RocksEventStore
    from seqvault import SeqVault, reads

    hist = [(9_000 + u, wl.user_history(wl.WorkloadConfig(), 9_000 + u, events))
            for u in range(n_users)]
    users = [u for u, _ in hist]
    tmp = Path(tempfile.mkdtemp(prefix="sv-sweep-"))
    plan, walk = reads.newest_sources, reads.newest_plan
    try:
        v = SeqVault.open(tmp / "sv", schema=schema, durability="none")
        for u, cols in hist:
            v.append(u, {c: cols[c] for c in wl.EVENT_COLUMNS})
        v.flush()
        v.merge()
        rocks = RocksEventStore(str(tmp / "re"), "none")
        rocks.load(iter(hist))
        rocks.quiesce()
        figs: dict[str, list[float]] = {"plan": [], "plan_objects": [], "general": [],
                                        "rocks_event": []}
        for _ in range(2):  # interleaved, so a noisy stretch hits every variant
            reads.newest_sources, reads.newest_plan = plan, walk
            figs["plan"] += _cpu_runs(lambda u: v.read(u, last=100), users, rounds, reps)
            # the plan from `Source` objects, as before the extent walk
            reads.newest_plan = lambda *a: None  # type: ignore[assignment]
            figs["plan_objects"] += _cpu_runs(lambda u: v.read(u, last=100), users, rounds,
                                              reps)
            reads.newest_sources = lambda sources, last: None  # type: ignore[assignment]
            figs["general"] += _cpu_runs(lambda u: v.read(u, last=100), users, rounds, reps)
            reads.newest_sources, reads.newest_plan = plan, walk
            figs["rocks_event"] += _cpu_runs(lambda u: rocks.read_last(u, 100), users, rounds,
                                             reps)
        v.close()
        rocks.close()
        return figs
    finally:
        reads.newest_sources, reads.newest_plan = plan, walk
        shutil.rmtree(tmp, ignore_errors=True)


def short_read_sweep(rounds: int, reps: int = 200) -> dict[str, dict[str, float]]:
    """Thread-CPU µs per read of the last 100 of users holding 1,000 / 10,000 / 100,000 events
    (loaded through append + flush + merge: the lifetime layout), SeqVault with and without
    the short-read plan (`reads.newest_sources`; without it every read takes the general
    choose/assemble path) beside RocksDB key-per-event, back to back in this process. Each
    figure is the minimum over runs of `reps` reads (the least disturbed run on a shared
    machine), with the maximum as the spread."""
    from seqvault import Schema

    schema = Schema.from_arrow(wl.ARROW_SCHEMA, user_column=wl.USER_COLUMN,
                               time_column=wl.TIME_COLUMN)
    out: dict[str, dict[str, float]] = {}
    for events, n_users in SWEEP:
        figs = _sweep_one(schema, events, n_users, rounds, reps)
        row = {f"{k}_us": min(x) for k, x in figs.items()}
        row.update({f"{k}_us_max": max(x) for k, x in figs.items()})
        out[str(events)] = row
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--sweep", action="store_true",
                    help="only the last-100 history sweep (short-read plan on and off)")
    args = ap.parse_args(argv)
    if args.sweep:
        sweep = short_read_sweep(max(args.rounds, 3))
        print("last 100 by history length; thread CPU µs per read, min [max] of rounds")
        for events, r in sweep.items():
            print(f"  {int(events):>7} events: plan {r['plan_us']:.1f} [{r['plan_us_max']:.1f}]"
                  f"  plan from objects {r['plan_objects_us']:.1f} "
                  f"[{r['plan_objects_us_max']:.1f}]  general {r['general_us']:.1f} [{r['general_us_max']:.1f}]  key/event "
                  f"{r['rocks_event_us']:.1f} [{r['rocks_event_us_max']:.1f}]  ratio plan "
                  f"{r['plan_us'] / r['rocks_event_us']:.2f}x, general "
                  f"{r['general_us'] / r['rocks_event_us']:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps({"sweep": sweep}, indent=1))
        return {"sweep": sweep}

    import seqvault
    from bench.rocks_baselines import RocksBlobStore, RocksEventStore

    hist = histories(args.users)
    users = [u for u, _ in hist]
    tmp = Path(tempfile.mkdtemp(prefix="sv-native-"))
    result: dict = {"decoder": "native" if seqvault.native_available() else "python",
                    "users": args.users, "events_per_user": EVENTS, "rounds": args.rounds}
    try:
        rocks = {"rocks_event": RocksEventStore(str(tmp / "re"), "none"),
                 "rocks_blob": RocksBlobStore(str(tmp / "rb"), "none")}
        for store in rocks.values():
            store.load(iter(hist))
            store.quiesce()
        vault = load_fresh(tmp / "sv", hist)
        result["decode_by_size"] = decode_by_size(vault.schema)
        result["breakdown_fresh"] = breakdown(vault, users[0])
        rows: dict = {}
        for phase in ("fresh", "merged"):
            if phase == "merged":
                vault.flush()
                vault.merge()
                result["breakdown_merged"] = breakdown(vault, users[0])

            def sv_read(u, n):
                return vault.read(u, last=n)

            for last in LASTS:
                rows[f"seqvault_{phase}:{last}"] = thread_cpu_per_read(
                    sv_read, users, last, args.rounds)
        for name, store in rocks.items():
            for last in LASTS:
                rows[f"{name}:{last}"] = thread_cpu_per_read(store.read_last, users, last,
                                                             args.rounds)
        result["reads"] = rows
        vault.close()
        for store in rocks.values():
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"decoder: {result['decoder']}  ({args.users} users x {EVENTS} events, "
          f"{args.rounds} rounds; thread CPU µs per read, median [min-max] of rounds)")
    for phase in ("fresh", "merged"):
        for last in LASTS:
            sv = rows[f"seqvault_{phase}:{last}"]
            ev, bl = rows[f"rocks_event:{last}"], rows[f"rocks_blob:{last}"]
            print(f"  {phase:6} last {last:>6}: seqvault {sv['cpu_us']:8.1f} "
                  f"[{sv['cpu_us_min']:.1f}-{sv['cpu_us_max']:.1f}]  key/event "
                  f"{ev['cpu_us']:8.1f}  blob {bl['cpu_us']:8.1f}  ratio vs key/event "
                  f"{sv['cpu_us'] / ev['cpu_us']:.2f}x  vs cheaper "
                  f"{sv['cpu_us'] / min(ev['cpu_us'], bl['cpu_us']):.2f}x  "
                  f"p50/p99 wall {sv['p50_ms']:.3f}/{sv['p99_ms']:.3f} ms "
                  f"(key/event {ev['p50_ms']:.3f}/{ev['p99_ms']:.3f})")
    for n, row in result["decode_by_size"].items():
        print(f"  decode_segment of {n:>6} events: " + ", ".join(f"{k} {v:.1f}"
                                                               for k, v in row.items()))
    for key in ("breakdown_fresh", "breakdown_merged"):
        print(f"  {key}: " + ", ".join(f"{k} {v:.1f}" for k, v in result[key].items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
