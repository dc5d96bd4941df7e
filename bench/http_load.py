"""Bounded mixed load against `seqvault serve`: reads and writes, one and several workers.

    python -m bench.http_load                                   # 8 clients, 1 and 2 workers
    python -m bench.http_load --clients 8 --workers-list 1,2 --seconds 15 --json-out /tmp/l.json

What it does, for each worker count W in --workers-list:

1. builds a store (--users users x --events events, sealed) in a temp dir;
2. starts a *writer* `seqvault serve --allow-writes` (one process: the store has one writer)
   and a *reader* `seqvault serve --workers W` (read-only) on the same store, each on its own
   127.0.0.1 port — the process model of docs/design/http.md;
3. runs --clients closed-loop client threads in a separate process (stdlib http.client, one
   keep-alive connection per thread and server), each picking at random:
   70% `GET /users/{u}/sequence?last=100` (JSON), 10% `?last=1000` (Arrow),
   10% `POST /sequences:batchGet` of 10 users with last=100, 10% `POST /users/{w}/events`
   of one event to the writer, where `w` is one of --write-users dedicated users and the
   event's item_id is unique (client, sequence number);
   the run is bounded by --seconds and --max-requests;
4. samples the resident memory (VmRSS, /proc) of every server process every 0.25 s;
5. stops the servers (SIGTERM), opens the store and checks the writes: every acknowledged
   event is present and no item_id appears twice;
6. prints a Markdown table per W: requests/s, p50/p99 ms and errors per endpoint, and server
   RSS (start / peak / end, MiB); --json-out keeps the raw figures.

Figures in docs/design/http.md ("Load test") come from this script.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
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
TOKEN = "load-test-token"
ENDPOINTS = ("get last=100 json", "get last=1000 arrow", "batchGet 10x100", "append 1 event")
MIX = (0.7, 0.1, 0.1, 0.1)
WRITE_BASE = 10_000_000  # write users are WRITE_BASE + i: apart from the read users


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": repo_pythonpath()}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


# ------------------------------------------------------------------ client (child process)
def client_main(args: argparse.Namespace) -> None:
    import http.client
    from urllib.parse import urlsplit

    reader, writer = urlsplit(args.reader), urlsplit(args.writer)
    lat: dict[str, list[float]] = {e: [] for e in ENDPOINTS}
    errors: dict[str, int] = {e: 0 for e in ENDPOINTS}
    acked: list[tuple[int, int]] = []  # (user, item_id) of acknowledged appends
    lock = threading.Lock()
    budget = [args.max_requests]
    stop_at = time.perf_counter() + args.seconds
    now_ms = int(time.time() * 1000)

    def worker(tid: int) -> None:
        rng = random.Random(args.seed * 1000 + tid)
        rconn = http.client.HTTPConnection(reader.hostname, reader.port, timeout=60)
        wconn = http.client.HTTPConnection(writer.hostname, writer.port, timeout=60)
        seq = 0
        try:
            while True:
                with lock:
                    if budget[0] <= 0 or time.perf_counter() > stop_at:
                        return
                    budget[0] -= 1
                kind = rng.choices(ENDPOINTS, MIX)[0]
                user = rng.randrange(args.users)
                conn, method, body = rconn, "GET", None
                headers = {"Accept-Encoding": "identity"}
                if kind == ENDPOINTS[0]:
                    path = f"/users/{user}/sequence?last=100"
                elif kind == ENDPOINTS[1]:
                    path = f"/users/{user}/sequence?last=1000"
                    headers["Accept"] = "application/vnd.apache.arrow.stream"
                elif kind == ENDPOINTS[2]:
                    method, path = "POST", "/sequences:batchGet"
                    ids = [rng.randrange(args.users) for _ in range(10)]
                    body = json.dumps({"user_ids": ids, "last": 100}).encode()
                    headers["Content-Type"] = "application/json"
                else:
                    seq += 1
                    wuser = WRITE_BASE + rng.randrange(args.write_users)
                    item = tid * 1_000_000_000 + seq
                    conn, method, path = wconn, "POST", f"/users/{wuser}/events"
                    body = json.dumps({"columns": {
                        "ts": [now_ms + seq], "item_id": [item], "action": ["click"],
                        "category": [1], "dwell_ms": [10], "scenario": ["feed"]}}).encode()
                    headers.update({"Content-Type": "application/json",
                                    "Authorization": f"Bearer {TOKEN}"})
                t0 = time.perf_counter()
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    resp.read()
                    ok = resp.status == 200
                except (OSError, http.client.HTTPException):
                    ok = False
                    conn.close()  # reconnects on the next request
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat[kind].append(dt)
                        if kind == ENDPOINTS[3]:
                            acked.append((wuser, item))
                    else:
                        errors[kind] += 1
        finally:
            rconn.close()
            wconn.close()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(args.clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump({"latencies": lat, "errors": errors, "acked": acked,
               "wall": time.perf_counter() - start}, sys.stdout)


# ------------------------------------------------------------------ driver
def build_store(path: Path, users: int, events: int) -> None:
    from seqvault import Schema, SeqVault

    rng = np.random.default_rng(0)
    t0 = int(time.time() * 1000) - 10 * events - 60_000
    actions = np.array(["impression", "click", "like"], dtype=object)
    with SeqVault.open(path, schema=Schema.load(REPO / "schema" / "behavior.toml")) as v:
        for u in range(users):
            v.append(u, {"ts": t0 + np.arange(events, dtype=np.int64) * 10,
                         "item_id": rng.integers(0, 2**40, events, dtype=np.int64),
                         "action": actions[rng.integers(0, 3, events)],
                         "category": rng.integers(0, 500, events).astype(np.uint16),
                         "dwell_ms": rng.integers(0, 10_000, events).astype(np.uint32),
                         "scenario": np.array(["feed"] * events, dtype=object)})
        v.flush()
        v.merge()


def start(store: Path, *args: str, pythonpath: str | None = None
          ) -> tuple[subprocess.Popen[bytes], str]:
    """`seqvault serve` (this checkout's, or the one at `pythonpath`) on a fresh port."""
    return start_serve(store, *args, checkout=pythonpath)


def rss_of_tree(pid: int) -> int:
    """Resident bytes of a process and its children (uvicorn's workers)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def run_one(workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    store = tmp / f"store-w{workers}"
    build_store(store, args.users, args.events)
    token = tmp / "token"
    token.write_text(TOKEN)
    token.chmod(0o600)
    wproc, wurl = start(store, "--allow-writes", "--token-file", str(token))
    rproc, rurl = start(store, "--workers", str(workers))
    samples: list[tuple[float, int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        t0 = time.perf_counter()
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_of_tree(rproc.pid),
                            rss_of_tree(wproc.pid)))
            stop.wait(0.25)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        out = subprocess.run(
            [sys.executable, "-m", "bench.http_load", "--client", "--reader", rurl,
             "--writer", wurl, "--users", str(args.users), "--write-users",
             str(args.write_users), "--clients", str(args.clients), "--seconds",
             str(args.seconds), "--max-requests", str(args.max_requests), "--seed",
             str(args.seed)], capture_output=True, text=True, env=_env(), check=True,
            timeout=args.seconds + 120)
        time.sleep(0.5)
    finally:
        stop.set()
        sampler.join()
        for proc in (rproc, wproc):
            proc.send_signal(signal.SIGTERM)
        for proc in (rproc, wproc):
            proc.wait(timeout=60)
    res = json.loads(out.stdout)
    res["verify"] = verify(store, res["acked"], args.write_users)
    res["rss"] = samples
    res["workers"] = workers
    del res["acked"]
    return res


def verify(store: Path, acked: list[list[int]], write_users: int) -> dict[str, int]:
    """Every acknowledged append present; no item_id twice."""
    from seqvault import SeqVault

    want: dict[int, set[int]] = {}
    for user, item in acked:
        want.setdefault(user, set()).add(item)
    missing = duplicated = stored = 0
    with SeqVault.open(store, read_only=True) as v:
        for i in range(write_users):
            user = WRITE_BASE + i
            items = v.read(user, columns=["item_id"])["item_id"].tolist()
            stored += len(items)
            duplicated += len(items) - len(set(items))
            missing += len(want.get(user, set()) - set(items))
    return {"acknowledged": len(acked), "stored": stored, "missing": missing,
            "duplicated": duplicated}


def table(res: dict[str, Any]) -> str:
    wall = res["wall"]
    lines = [f"workers = {res['workers']} (reader) + 1 writer, wall {wall:.1f} s",
             "", "| endpoint | requests/s | p50 ms | p99 ms | errors |",
             "|---|---:|---:|---:|---:|"]
    total = 0
    for e in ENDPOINTS:
        lat = res["latencies"][e]
        total += len(lat)
        lines.append(f"| {e} | {len(lat) / wall:,.0f} | {pct(lat, 50) * 1e3:.1f} | "
                     f"{pct(lat, 99) * 1e3:.1f} | {res['errors'][e]} |")
    lines.append(f"| **all** | **{total / wall:,.0f}** | | | "
                 f"**{sum(res['errors'].values())}** |")
    r = [s[1] for s in res["rss"]] or [0]
    w = [s[2] for s in res["rss"]] or [0]
    mib = 1 << 20
    lines += ["", f"reader RSS (all workers) start/peak/end: {r[0] / mib:.0f} / "
              f"{max(r) / mib:.0f} / {r[-1] / mib:.0f} MiB; writer: {w[0] / mib:.0f} / "
              f"{max(w) / mib:.0f} / {w[-1] / mib:.0f} MiB",
              f"writes: {res['verify']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_load",
                                 description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--reader", help=argparse.SUPPRESS)
    ap.add_argument("--writer", help=argparse.SUPPRESS)
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--events", type=int, default=2_000)
    ap.add_argument("--write-users", type=int, default=20)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers-list", default="1,2")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--max-requests", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="seqvault-load-") as tmp:
        for w in (int(x) for x in args.workers_list.split(",")):
            res = run_one(w, args, Path(tmp))
            print(table(res) + "\n", flush=True)
            results.append(res)
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))
    bad = any(r["verify"]["missing"] or r["verify"]["duplicated"] for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
