"""Cluster scaling: ingest events/s and routed read throughput against shards and workers.

For each worker count W (Ray started with W CPUs, W "nodes", S = shards_per_worker × W shards):

- ingest: `seqvault.cluster.ingest` of the same Parquet files, timed as the second job of
  the Ray session (after W warm-up tasks and one small ingest job: a cold Ray worker spends
  seconds importing, and Ray Data starts its executor on a driver's first Dataset — costs a
  long-lived cluster pays once) (Ray Data staging + one
  all-or-nothing store ingest per shard, each task 1 CPU) → events/s, wall clock from the call
  to the published epoch; the single-node `seqvault.ingest` of the same files, in the same run,
  is the baseline (ratio = cluster / single node);
- routed reads: W Ray tasks, each an embedded `SeqVaultCluster` doing `read_many` of
  `--batch` random users (last=100, scatter-gather by shard) for `--read-seconds` after a
  warm-up → users read per second, summed over tasks, with the p50/p99 of one read_many.

    python -m bench.cluster_bench --events 2000000 --workers 1,2,4,8 --out bench/results/cluster
    python -m bench.cluster_bench --events 200000 --workers 1,2     # a quick look on 2 cores

Writes <out>/cluster.json, <out>/cluster.md and <out>/cluster_scaling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA = {
    "user": {"column": "user_id", "type": "int64"},
    "time": {"column": "ts", "unit": "ms"},
    "columns": [{"name": "item_id", "type": "int64", "default": 0},
                {"name": "action", "type": "string", "default": "view"},
                {"name": "dwell", "type": "uint32", "default": 0}],
}
ACTIONS = ["view", "click", "like", "share", "comment"]


def make_input(d: Path, events: int, users: int, files: int, seed: int = 0) -> list[Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out = []
    per = events // files
    for f in range(files):
        n = per if f < files - 1 else events - per * (files - 1)
        # Zipf-ish users: a few heavy users, a long tail.
        u = (rng.zipf(1.3, n) - 1) % users
        t = pa.table({"user_id": u.astype(np.int64),
                      "ts": np.sort(rng.integers(1_600_000_000_000, 1_700_000_000_000, n)),
                      "item_id": rng.integers(0, 1 << 40, n),
                      "action": pa.array(np.array(ACTIONS, dtype=object)[
                          rng.integers(0, len(ACTIONS), n)].tolist(), pa.string()),
                      "dwell": rng.integers(0, 60_000, n).astype(np.uint32)})
        p = d / f"part-{f:04d}.parquet"
        pq.write_table(t, p, row_group_size=64_000)
        out.append(p)
    return out


def single_node(files: list[Path], d: Path) -> dict[str, Any]:
    from seqvault import Schema, SeqVault
    from seqvault.ingest import ingest

    store = d / "single"
    t0 = time.perf_counter()
    with SeqVault.open(store, schema=Schema.from_dict(SCHEMA)) as v:
        s = ingest(v, files)
        users = v.stats()["users"]
    dt = time.perf_counter() - t0
    shutil.rmtree(store)
    return {"events": s.events, "users": users, "seconds": dt, "events_per_s": s.events / dt}


def read_task(cluster_dir: str, users: list[int], batch: int, seconds: float,
              seed: int) -> dict[str, Any]:
    from seqvault.cluster import SeqVaultCluster

    rng = np.random.default_rng(seed)
    arr = np.asarray(users)
    lat = []
    with SeqVaultCluster(cluster_dir) as c:
        for _ in range(3):  # warm-up: open every store this task will touch
            c.read_many(rng.choice(arr, batch).tolist(), last=100)
        n = 0
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            t1 = time.perf_counter()
            c.read_many(rng.choice(arr, batch).tolist(), last=100)
            lat.append(time.perf_counter() - t1)
            n += batch
        dt = time.perf_counter() - t0
    return {"users": n, "seconds": dt, "lat": lat}


def warm_worker() -> float:
    """Import what an ingest task imports, so the timed job meets warm Ray workers (a cold
    worker spends ~2-4 s importing pyarrow, Ray Data and seqvault: once per worker process in
    a long-lived cluster, but every time in a benchmark that restarts Ray)."""
    t0 = time.perf_counter()
    import pyarrow.parquet  # noqa: F401

    import seqvault.cluster.ingest  # noqa: F401
    import seqvault.ingest  # noqa: F401

    time.sleep(0.5)  # hold the CPU so that W tasks land on W distinct workers
    return time.perf_counter() - t0


def run_workers(w: int, files: list[Path], warm_files: list[Path], d: Path,
                args: argparse.Namespace, sample_users: list[int]) -> dict[str, Any]:
    import ray

    from seqvault import Schema
    from seqvault.cluster import init_cluster, status
    from seqvault.cluster.ingest import ingest
    from seqvault.cluster.runtime import init_local

    nodes = [f"n{i}" for i in range(w)]
    shards = args.shards_per_worker * w
    root = d / f"cluster-w{w}"
    t_init = time.perf_counter()
    init_local(nodes, num_cpus=w, object_store_mb=args.object_store_mb)
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ray_start_s = time.perf_counter() - t_init
    try:
        t_warm = time.perf_counter()
        ray.get([ray.remote(warm_worker).options(num_cpus=1).remote() for _ in range(w)],
                timeout=args.timeout)
        # and one small job through the same path (Ray Data's executor and its actors start
        # on the first Dataset of a driver, ~2-4 s here): the timed job is a later one.
        warm_root = d / f"warm-w{w}"
        init_cluster(warm_root, Schema.from_dict(SCHEMA), shards, nodes)
        ingest(warm_root, warm_files, timeout_s=args.timeout, cpus_per_task=1.0)
        shutil.rmtree(warm_root, ignore_errors=True)
        warm_s = time.perf_counter() - t_warm
        init_cluster(root, Schema.from_dict(SCHEMA), shards, nodes)
        t0 = time.perf_counter()
        s = ingest(root, files, timeout_s=args.timeout, cpus_per_task=1.0)
        ingest_s = time.perf_counter() - t0
        st = status(root)
        assert st["events"] == s.events == args.events, (st["events"], s.events)
        task = ray.remote(read_task).options(num_cpus=1)
        refs = [task.remote(str(root), sample_users, args.batch, args.read_seconds, i)
                for i in range(w)]
        res = ray.get(refs, timeout=args.timeout)
    finally:
        ray.shutdown()
    lat = np.concatenate([np.asarray(r["lat"]) for r in res]) * 1e3
    reads = sum(r["users"] / r["seconds"] for r in res)
    shutil.rmtree(root, ignore_errors=True)
    return {"workers": w, "shards": shards, "ray_start_s": ray_start_s, "warm_up_s": warm_s,
            "ingest_s": ingest_s, "ingest_events_per_s": s.events / ingest_s,
            "ingest_phases_s": s.phases_s, "read_users_per_s": reads,
            "read_many_p50_ms": float(np.percentile(lat, 50)),
            "read_many_p99_ms": float(np.percentile(lat, 99)), "read_calls": int(lat.size)}


def http_bench(args: argparse.Namespace, d: Path, files: list[Path]) -> dict[str, Any]:
    """Routed reads through `cluster serve` (HTTP, msgpack) against the embedded client, on
    the same cluster: p50/p99 of read(last=100) and read_many(64 users, last=100), and the
    bytes on the wire per answer (what the capacity plan's network figure uses)."""
    import httpx
    import ray

    from seqvault import Schema
    from seqvault.cluster import SeqVaultCluster, init_cluster
    from seqvault.cluster.ingest import ingest
    from seqvault.cluster.runtime import init_local
    from seqvault.cluster.serve import serve

    nodes = ["n0", "n1"]
    root = d / "cluster-http"
    init_local(nodes, num_cpus=2, object_store_mb=args.object_store_mb)
    out: dict[str, Any] = {"shards": 4}
    try:
        init_cluster(root, Schema.from_dict(SCHEMA), 4, nodes)
        ingest(root, files, timeout_s=args.timeout)
        servers = serve(root, timeout_s=120)
        try:
            rng = np.random.default_rng(5)
            users = rng.integers(0, 2_000, 4_000).tolist()  # the heavier (Zipf head) users
            for mode in ("embedded", "http"):
                with SeqVaultCluster(root, mode=mode) as c:
                    c.read_many(users[:64], last=100)
                    one, many = [], []
                    for u in users[:args.http_reads]:
                        t = time.perf_counter()
                        c.read(u, last=100)
                        one.append(time.perf_counter() - t)
                    for i in range(args.http_reads // 10):
                        batch = users[(i * 64) % 3_900:(i * 64) % 3_900 + 64]
                        t = time.perf_counter()
                        c.read_many(batch, last=100)
                        many.append(time.perf_counter() - t)
                a1, am = np.asarray(one) * 1e3, np.asarray(many) * 1e3
                out[mode] = {"read_p50_ms": float(np.percentile(a1, 50)),
                             "read_p99_ms": float(np.percentile(a1, 99)),
                             "read_many64_p50_ms": float(np.percentile(am, 50)),
                             "read_many64_p99_ms": float(np.percentile(am, 99))}
            # bytes on the wire: the heaviest user, last=100 / 1,000, msgpack and Arrow
            m = SeqVaultCluster(root)
            heavy = 0  # Zipf: user 0 has the most events
            shard = m.shard_of(heavy)
            url = m.manifest.entry(shard).primary.server
            m.close()
            sizes = {}
            with httpx.Client(timeout=10) as h:
                for last in (100, 1000):
                    for fmt, accept in (("msgpack", "application/vnd.msgpack"),
                                        ("arrow", "application/vnd.apache.arrow.stream")):
                        r = h.get(f"{url}/users/{heavy}/sequence", params={"last": last},
                                  headers={"Accept": accept, "Accept-Encoding": "zstd"})
                        # num_bytes_downloaded: as sent (compressed); content: decoded
                        sizes[f"{fmt}_last{last}_wire_bytes"] = r.num_bytes_downloaded
                        sizes[f"{fmt}_last{last}_decoded_bytes"] = len(r.content)
                        sizes[f"{fmt}_last{last}_encoding"] = r.headers.get(
                            "content-encoding", "identity")
                        sizes[f"{fmt}_last{last}_events"] = int(r.headers["X-SeqVault-Count"])
            out["wire"] = sizes
        finally:
            servers.stop()
    finally:
        ray.shutdown()
        shutil.rmtree(root, ignore_errors=True)
    return out


def plot(rows: list[dict[str, Any]], base: dict[str, Any], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = [r["workers"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    ax[0].plot(w, [r["ingest_events_per_s"] / 1e3 for r in rows], "o-", label="cluster ingest")
    ax[0].axhline(base["events_per_s"] / 1e3, color="gray", ls="--", label="single-node ingest")
    ax[0].set(xlabel="workers (CPUs)", ylabel="k events/s", title="ingest", xscale="log",
              xticks=w, xticklabels=[str(x) for x in w])
    ax[0].legend()
    ax[1].plot(w, [r["read_users_per_s"] / 1e3 for r in rows], "o-",
               label="read_many, last=100")
    ax[1].set(xlabel="workers (CPUs)", ylabel="k users read/s", title="routed reads",
              xscale="log", xticks=w, xticklabels=[str(x) for x in w])
    ax[1].legend()
    for a in ax:
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--shards-per-worker", type=int, default=4)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--read-seconds", type=float, default=5.0)
    ap.add_argument("--object-store-mb", type=int, default=512)
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--out", default="bench/results/cluster")
    ap.add_argument("--tmp", default=None)
    ap.add_argument("--http", action="store_true",
                    help="Only the HTTP vs embedded routed-read comparison (writes http.json)")
    ap.add_argument("--http-reads", type=int, default=2_000)
    ap.add_argument("--single-node-events-per-s", type=float, default=None,
                    help="Skip the single-node baseline and use this figure (from an earlier "
                         "run of the same --events/--users/--files: the input is seeded)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix="cluster-bench-", dir=args.tmp))
    try:
        files = make_input(d, args.events, args.users, args.files)
        if args.http:
            res = http_bench(args, d, files)
            res["args"] = vars(args)
            res["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
            (out / "http.json").write_text(json.dumps(res, indent=1))
            print(json.dumps(res, indent=1))
            return
        (d / "warm").mkdir()
        warm_files = make_input(d / "warm", 2_000 * args.files, 1_000, args.files, seed=9)
        base = (single_node(files, d) if args.single_node_events_per_s is None else
                {"events": args.events, "users": 0, "seconds": 0.0,
                 "events_per_s": args.single_node_events_per_s, "from_earlier_run": True})
        rng = np.random.default_rng(1)
        sample = rng.integers(0, args.users, 5_000).tolist()
        rows = []
        for w in [int(x) for x in args.workers.split(",")]:
            r = run_workers(w, files, warm_files, d, args, sample)
            r["ingest_vs_single_node"] = r["ingest_events_per_s"] / base["events_per_s"]
            rows.append(r)
            print(json.dumps(r), flush=True)
            (out / "cluster.partial.json").write_text(json.dumps({"single_node": base,
                                                                  "rows": rows}, indent=1))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    result = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "platform": platform.platform()},
              "args": vars(args), "single_node": base, "rows": rows}
    (out / "cluster.json").write_text(json.dumps(result, indent=1))
    lines = ["| workers | shards | ingest events/s | vs single node | read users/s | "
             "read_many p50 ms | p99 ms |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['shards']} | {r['ingest_events_per_s']:,.0f} | "
                     f"{r['ingest_vs_single_node']:.2f}× | {r['read_users_per_s']:,.0f} | "
                     f"{r['read_many_p50_ms']:.2f} | {r['read_many_p99_ms']:.2f} |")
    lines.append(f"\nsingle-node ingest of the same files: {base['events_per_s']:,.0f} events/s "
                 f"({base['events']:,} events, {base['users']:,} users); {os.cpu_count()} CPUs")
    (out / "cluster.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot(rows, base, out / "cluster_scaling.png")


if __name__ == "__main__":
    main()


def plot_runs(paths: list[str], labels: list[str], out: str) -> None:
    """One figure from several result files (e.g. cold and warm workers):
    python -c "from bench.cluster_bench import plot_runs; plot_runs([...], [...], 'x.png')"."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    base = None
    ticks: set[int] = set()
    for path, label in zip(paths, labels):
        res = json.loads(Path(path).read_text())
        rows = res["rows"]
        w = [r["workers"] for r in rows]
        ticks.update(w)
        base = res["single_node"]["events_per_s"]
        ax[0].plot(w, [r["ingest_events_per_s"] / 1e3 for r in rows], "o-", label=label)
        ax[1].plot(w, [r["read_users_per_s"] / 1e3 for r in rows], "o-", label=label)
    if base:
        ax[0].axhline(base / 1e3, color="gray", ls="--", label="single-node ingest")
    t = sorted(ticks)
    ax[0].set(xlabel="workers (CPUs)", ylabel="k events/s", title="cluster ingest",
              xscale="log", xticks=t, xticklabels=[str(x) for x in t])
    ax[1].set(xlabel="workers (CPUs)", ylabel="k users read/s",
              title="routed read_many (64 users, last=100)", xscale="log", xticks=t,
              xticklabels=[str(x) for x in t])
    for a in ax:
        a.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        a.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
