"""HTTP read latency and throughput against the embedded read of the same request.

    python -m bench.http_bench                      # defaults: 64 users x 12,000 events
    python -m bench.http_bench --requests 500 --max-seconds 15 --json-out /tmp/http.json

What it does:

1. builds a store (sealed segments, timestamps inside the retention window) in a temp dir;
2. starts `seqvault serve` (one worker, read-only) as a subprocess on 127.0.0.1, on a socket this
   process binds and hands over;
3. for each `last` in 100, 1,000, 10,000 and each format (JSON, MessagePack, Arrow), runs a
   separate load-generating process (this script with --client; stdlib http.client) that
   issues requests for random users over one keep-alive connection per client thread, with
   `Accept-Encoding:
   identity` (loopback: compression only costs time), timing each request until its whole body
   has arrived (decoding is not timed). Each cell is bounded by --requests and --max-seconds
   after --warmup requests;
4. times `vault.read(user, last=N)` in-process for the same users (the embedded read);
5. prints a Markdown table: requests/s, p50/p99 (ms), body size, HTTP p50 / embedded p50, and
   the server process's CPU time per request (psutil) against the embedded read's CPU time —
   a figure that stays meaningful when the machine is shared and wall-clock latency is not.

The figures in docs/design/http.md come from this script; rerun it with the command above.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve_proc import repo_pythonpath, start_serve

REPO = Path(__file__).resolve().parent.parent
ACCEPT = {"json": "application/json", "msgpack": "application/vnd.msgpack",
          "arrow": "application/vnd.apache.arrow.stream"}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ------------------------------------------------------------------ load generator (child)
def client_main(args: argparse.Namespace) -> None:
    """Closed-loop load: each thread keeps one keep-alive connection (stdlib http.client, the
    lightest client at hand, so the figures are the server's more than the client's)."""
    import http.client
    from urllib.parse import urlsplit

    host = urlsplit(args.url)
    users = [int(u) for u in args.users.split(",")]
    rng = np.random.default_rng(args.seed)
    lat: list[float] = []
    sizes: list[int] = []
    lock = threading.Lock()
    stop_at = [0.0]
    budget = [args.requests]
    headers = {"Accept": ACCEPT[args.format], "Accept-Encoding": args.encoding}

    def worker(tid: int) -> None:
        order = rng.permutation(len(users)) if tid else np.arange(len(users))
        conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)

        def get(user: int) -> bytes:
            conn.request("GET", f"/users/{user}/sequence?last={args.last}", headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            if resp.status != 200:
                raise RuntimeError(f"HTTP {resp.status}: {body[:200]!r}")
            return body

        try:
            for i in range(args.warmup):
                get(users[order[i % len(users)]])
            i = 0
            while True:
                with lock:
                    if budget[0] <= 0 or (stop_at[0] and time.perf_counter() > stop_at[0]):
                        return
                    budget[0] -= 1
                user = users[order[i % len(users)]]
                i += 1
                t0 = time.perf_counter()
                body = get(user)
                dt = time.perf_counter() - t0
                with lock:
                    lat.append(dt)
                    sizes.append(len(body))
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.concurrency)]
    start = time.perf_counter()
    stop_at[0] = start + args.max_seconds
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    json.dump({"latencies": lat, "bytes": int(statistics.median(sizes)) if sizes else 0,
               "wall": wall}, sys.stdout)


# ------------------------------------------------------------------ driver
def build_store(path: Path, users: int, events: int) -> list[int]:
    sys.path.insert(0, str(REPO))
    from seqvault import Schema, SeqVault

    rng = np.random.default_rng(0)
    actions = np.array(["impression", "click", "like", "collect", "share", "comment"],
                       dtype=object)
    scen = np.array(["feed", "video", "search"], dtype=object)
    now = int(time.time() * 1000)
    ids = [int(x) for x in rng.choice(10**12, size=users, replace=False)]
    with SeqVault.open(path, schema=Schema.load(REPO / "schema" / "behavior.toml")) as v:
        for u in ids:
            v.append(u, {
                "ts": now - 10 * events + np.arange(events, dtype=np.int64) * 10,
                "item_id": rng.integers(0, 2**40, events),
                "action": actions[rng.integers(0, actions.size, events)],
                "category": rng.integers(0, 500, events).astype(np.uint16),
                "dwell_ms": rng.integers(0, 60_000, events).astype(np.uint32),
                "scenario": scen[rng.integers(0, scen.size, events)],
            })
        v.flush()
    return ids


def embedded(path: Path, ids: list[int], last: int, n: int) -> list[float]:
    from seqvault import SeqVault

    out = []
    with SeqVault.open(path, read_only=True) as v:
        for i in range(min(20, n)):  # warm-up, as the server had
            v.read(ids[i % len(ids)], last=last)
        for i in range(n):
            t0 = time.perf_counter()
            v.read(ids[i % len(ids)], last=last)
            out.append(time.perf_counter() - t0)
    return out


def start_server(store: Path, workers: int = 1) -> tuple[subprocess.Popen[bytes], str]:
    return start_serve(store, "--workers", str(workers))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_bench", description=__doc__)
    ap.add_argument("--users", type=int, default=64)
    ap.add_argument("--events", type=int, default=12_000, help="events per user")
    ap.add_argument("--lasts", default="100,1000,10000")
    ap.add_argument("--formats", default="json,msgpack,arrow")
    ap.add_argument("--requests", type=int, default=300, help="timed requests per cell (max)")
    ap.add_argument("--max-seconds", type=float, default=10.0, help="time bound per cell")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--concurrency", type=int, default=1, help="client threads")
    ap.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    ap.add_argument("--encoding", default="identity", help="Accept-Encoding to send")
    ap.add_argument("--store", type=Path, help="reuse a store (its users must be given too)")
    ap.add_argument("--json-out", type=Path)
    # --client: the load-generating child process
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--format", help=argparse.SUPPRESS)
    ap.add_argument("--last", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--user-ids", dest="users_csv", help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.client:
        args.users = args.users_csv
        client_main(args)
        return 0

    tmp = tempfile.TemporaryDirectory(prefix="seqvault-http-bench-")
    store = Path(tmp.name) / "store"
    t0 = time.perf_counter()
    ids = build_store(store, args.users, args.events)
    print(f"store: {args.users} users x {args.events} events built in "
          f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    proc, url = start_server(store, args.workers)
    import psutil

    server = psutil.Process(proc.pid)
    if args.workers > 1:  # the supervisor's children do the work; count them all
        time.sleep(1.0)

    class _Tree:
        def cpu_times(self) -> Any:
            procs = [server, *server.children(recursive=True)]
            user = sum(p.cpu_times().user for p in procs)
            system = sum(p.cpu_times().system for p in procs)
            return argparse.Namespace(user=user, system=system)

    tree = _Tree()
    rows: list[dict[str, Any]] = []
    try:
        for last in [int(x) for x in args.lasts.split(",")]:
            c0 = time.process_time()
            emb = embedded(store, ids, last, args.requests)
            emb_cpu = (time.process_time() - c0) / (len(emb) + min(20, args.requests)) * 1e3
            emb_p50, emb_p99 = pct(emb, 50) * 1e3, pct(emb, 99) * 1e3
            rows.append({"last": last, "format": "embedded read", "rps": 1 / statistics.mean(emb),
                         "p50_ms": emb_p50, "p99_ms": emb_p99, "bytes": None, "ratio": 1.0,
                         "n": len(emb), "cpu_ms": emb_cpu, "cpu_ratio": 1.0})
            for fmt in args.formats.split(","):
                cmd = [sys.executable, "-m", "bench.http_bench", "--client", "--url", url,
                       "--format", fmt, "--last", str(last), "--user-ids",
                       ",".join(map(str, ids)), "--requests", str(args.requests),
                       "--max-seconds", str(args.max_seconds), "--warmup", str(args.warmup),
                       "--concurrency", str(args.concurrency), "--encoding", args.encoding]
                cpu0 = tree.cpu_times()
                out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                                     env={**os.environ, "PYTHONPATH": repo_pythonpath()},
                                     timeout=args.max_seconds + 120, check=True)
                cpu1 = tree.cpu_times()
                res = json.loads(out.stdout)
                lat = res["latencies"]
                p50 = pct(lat, 50) * 1e3
                served = len(lat) + args.warmup * args.concurrency
                cpu_ms = ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / served * 1e3
                rows.append({"last": last, "format": fmt, "rps": len(lat) / res["wall"],
                             "p50_ms": p50, "p99_ms": pct(lat, 99) * 1e3,
                             "bytes": res["bytes"], "ratio": p50 / emb_p50, "n": len(lat),
                             "cpu_ms": cpu_ms, "cpu_ratio": cpu_ms / emb_cpu})
                print(f"last={last} {fmt}: p50 {p50:.2f} ms ({p50 / emb_p50:.2f}x embedded)",
                      file=sys.stderr)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        tmp.cleanup()

    try:
        import httptools  # noqa: F401
        parser = "httptools"
    except ImportError:
        parser = "h11"
    try:
        import uvloop  # noqa: F401
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    print(f"\nHTTP reads on 127.0.0.1, {args.workers} uvicorn worker(s) ({parser}, {loop}), "
          f"{args.concurrency} client thread(s), "
          f"Accept-Encoding: {args.encoding}; {args.users} users x {args.events} events; "
          f"cpu count {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}\n")
    print("| last | format | requests/s | p50 ms | p99 ms | body bytes | p50 / embedded p50 "
          "| server CPU ms/req | CPU / embedded CPU |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        size = f"{r['bytes']:,}" if r["bytes"] is not None else "-"
        print(f"| {r['last']:,} | {r['format']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {size} | {r['ratio']:.2f}x | {r['cpu_ms']:.2f} | "
              f"{r['cpu_ratio']:.2f}x |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                             "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
