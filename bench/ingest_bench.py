"""Ingest throughput and peak memory: `seqvault ingest` vs a RocksDB per-event bulk load.

Both load the *same* Parquet file (seqvault.sample: heavy-tailed histories, Zipf items, bursts
of equal timestamps, rows in time order), each in a fresh subprocess so peak RSS (ru_maxrss) is
that loader's alone:

- seqvault: `seqvault.ingest.ingest` into a new store (spill partitions, sort, lifetime
  segments, one commit) — exactly what `seqvault ingest FILE` runs.
- rocksdb: rocksdict (raw mode, zstd, WAL on, no fsync, the bench/rocks_baselines.py options),
  one key per event `user | ts | seq` (big-endian, sign-flipped: byte order = numeric order,
  seq keeps ties in input order), value = the other columns packed (18 bytes; strings as
  dictionary codes), written in WriteBatches of 10,000 events; keys and values are built with
  numpy per record batch so the Python cost is one `put` call per event. The load ends with a
  flush of the memtable (so both sides end with data in files).

    python -m bench.ingest_bench --events 5000000            # generates bench-data/ingest-5M
    python -m bench.ingest_bench --file my.parquet --skip-rocks

Writes a JSON result to bench/results/ingest-<events>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARTITION_ROWS = 1_000_000  # seqvault.ingest.core.DEFAULT_PARTITION_ROWS
WRITE_BATCH_EVENTS = 10_000


def _dir_bytes(path: Path) -> int:
    total = 0
    for root, _d, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            total += min(st.st_size, st.st_blocks * 512)
    return total


def _peak_rss() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _cpu_s() -> float:
    """User + system CPU seconds of the whole process (all threads: RocksDB's background
    compaction and zstd worker threads count)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_seqvault(file: str, store: str, partition_rows: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from seqvault import SeqVault, sample
    from seqvault.ingest import ingest

    c0 = _cpu_s()
    t0 = time.perf_counter()
    with SeqVault.open(store, schema=sample.behavior_schema()) as v:
        s = ingest(v, [file], rows_per_partition=partition_rows)
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    return {"loader": "seqvault", "events": s.events, "users": s.users, "elapsed_s": elapsed,
            "cpu_s": cpu, "events_per_cpu_s": s.events / cpu,
            "events_per_s": s.events / elapsed, "peak_rss_bytes": _peak_rss(),
            "disk_bytes": _dir_bytes(Path(store)), "phases_s": s.phases_s,
            "partitions": s.partitions, "bytes_written": s.bytes_written,
            "compression_ratio": s.compression_ratio}


def run_rocks(file: str, store: str) -> dict[str, Any]:
    import numpy as np
    import pyarrow.parquet as pq
    from rocksdict import Rdict, WriteBatch, WriteOptions

    sys.path.insert(0, str(ROOT))
    from bench.rocks_baselines import _options

    key_dt = np.dtype([("user", ">u8"), ("ts", ">u8"), ("seq", ">u8")])
    val_dt = np.dtype([("item_id", "<i8"), ("action", "u1"), ("category", "<u2"),
                       ("dwell_ms", "<u4"), ("scenario", "u1"), ("pad", "u2")])
    klen, vlen = key_dt.itemsize, val_dt.itemsize
    sign = np.uint64(1 << 63)
    codes: dict[str, dict[str, int]] = {"action": {}, "scenario": {}}

    def dict_codes(name: str, arr: Any) -> np.ndarray:
        enc = arr.dictionary_encode()
        table = codes[name]
        mapping = np.array([table.setdefault(s, len(table)) for s in enc.dictionary.to_pylist()],
                           dtype=np.uint8)
        return mapping[enc.indices.to_numpy(zero_copy_only=False)]

    c0 = _cpu_s()
    t0 = time.perf_counter()
    db = Rdict(store, _options(8))
    wo = WriteOptions()
    wo.sync = False
    db.set_write_options(wo)
    pf = pq.ParquetFile(file)
    seq = 0
    events = 0
    for rb in pf.iter_batches(batch_size=WRITE_BATCH_EVENTS):
        n = rb.num_rows
        keys = np.empty(n, dtype=key_dt)
        keys["user"] = rb.column("user_id").to_numpy().view(np.uint64) ^ sign
        keys["ts"] = rb.column("ts").to_numpy().view(np.uint64) ^ sign
        keys["seq"] = np.arange(seq, seq + n, dtype=np.uint64)
        seq += n
        vals = np.zeros(n, dtype=val_dt)
        vals["item_id"] = rb.column("item_id").to_numpy()
        vals["category"] = rb.column("category").to_numpy()
        vals["dwell_ms"] = rb.column("dwell_ms").to_numpy()
        vals["action"] = dict_codes("action", rb.column("action"))
        vals["scenario"] = dict_codes("scenario", rb.column("scenario"))
        kb, vb = keys.tobytes(), vals.tobytes()
        batch = WriteBatch(raw_mode=True)
        put = batch.put
        for i in range(n):
            put(kb[i * klen:(i + 1) * klen], vb[i * vlen:(i + 1) * vlen])
        db.write(batch)
        events += n
    db.flush(True)
    db.close()
    elapsed = time.perf_counter() - t0
    cpu = _cpu_s() - c0
    return {"loader": "rocksdb", "events": events, "elapsed_s": elapsed, "cpu_s": cpu,
            "events_per_cpu_s": events / cpu,
            "events_per_s": events / elapsed, "peak_rss_bytes": _peak_rss(),
            "disk_bytes": _dir_bytes(Path(store)), "write_batch_events": WRITE_BATCH_EVENTS}


def _child(loader: str, file: str, workdir: Path, partition_rows: int) -> dict[str, Any]:
    store = workdir / f"{loader}-store"
    shutil.rmtree(store, ignore_errors=True)
    cmd = [sys.executable, "-m", "bench.ingest_bench", "--child", loader, "--file", file,
           "--store", str(store), "--partition-rows", str(partition_rows)]
    out = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    result = json.loads(out.stdout.strip().splitlines()[-1])
    shutil.rmtree(store, ignore_errors=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="seqvault ingest vs RocksDB per-event bulk load")
    ap.add_argument("--events", type=int, default=5_000_000)
    ap.add_argument("--file", default=None, help="Parquet file (default: generate one)")
    ap.add_argument("--workdir", default=None, help="Where stores go (default: a temp dir)")
    ap.add_argument("--partition-rows", type=int, default=DEFAULT_PARTITION_ROWS)
    ap.add_argument("--skip-rocks", action="store_true")
    ap.add_argument("--child", choices=["seqvault", "rocksdb"], help=argparse.SUPPRESS)
    ap.add_argument("--store", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help="Result JSON path")
    args = ap.parse_args(argv)
    if args.child:
        fn = run_seqvault(args.file, args.store, args.partition_rows) if args.child == "seqvault" \
            else run_rocks(args.file, args.store)
        print(json.dumps(fn))
        return
    sys.path.insert(0, str(ROOT))
    from seqvault.sample import generate

    file = args.file
    info: dict[str, Any] = {}
    if file is None:
        file = str(ROOT / "bench-data" / f"ingest-{args.events}.parquet")
        if not Path(file).exists():
            print(f"generating {file} ...", file=sys.stderr)
            info = generate(file, args.events)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="ingest-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {"file": file, "file_bytes": os.path.getsize(file), "cpus": os.cpu_count(),
               "generated": info}
    print("seqvault ingest ...", file=sys.stderr)
    results["seqvault"] = _child("seqvault", file, workdir, args.partition_rows)
    if not args.skip_rocks:
        print("rocksdb per-event load ...", file=sys.stderr)
        results["rocksdb"] = _child("rocksdb", file, workdir, args.partition_rows)
        results["throughput_ratio"] = (results["seqvault"]["events_per_s"]
                                       / results["rocksdb"]["events_per_s"])
        results["cpu_throughput_ratio"] = (results["seqvault"]["events_per_cpu_s"]
                                           / results["rocksdb"]["events_per_cpu_s"])
    results["load_average"] = os.getloadavg()
    shutil.rmtree(workdir, ignore_errors=True) if args.workdir is None else None
    events = results["seqvault"]["events"]
    out = Path(args.out or ROOT / "bench" / "results" / f"ingest-{events}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"{'loader':<10}{'events':>12}{'wall s':>9}{'events/s':>12}{'CPU s':>8}"
          f"{'events/CPU-s':>14}{'peak RSS MiB':>14}{'disk MiB':>10}")
    for name in ("seqvault", "rocksdb"):
        r = results.get(name)
        if r:
            print(f"{name:<10}{r['events']:>12,}{r['elapsed_s']:>9.1f}{r['events_per_s']:>12,.0f}"
                  f"{r['cpu_s']:>8.1f}{r['events_per_cpu_s']:>14,.0f}"
                  f"{r['peak_rss_bytes'] / 2**20:>14.0f}{r['disk_bytes'] / 2**20:>10.1f}")
    if "throughput_ratio" in results:
        print(f"throughput ratio seqvault/rocksdb: wall {results['throughput_ratio']:.2f}x, "
              f"per CPU-second {results['cpu_throughput_ratio']:.2f}x "
              f"(load average {results['load_average'][0]:.1f})")
    print(f"result: {out}")


if __name__ == "__main__":
    main()
