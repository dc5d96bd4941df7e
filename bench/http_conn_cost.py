"""What the connection deadlines cost per request: server CPU time, limits on against off.

    python -m bench.http_conn_cost                  # 3 rounds x 2,000 requests per setting
    python -m bench.http_conn_cost --requests 5000 --rounds 5

Starts `seqvault serve` twice on a small store: with the default connection limits
(`--header-timeout 10 --body-timeout 60 --max-connections 1024`) and with the deadlines off
(`--header-timeout 0 --body-timeout 0`). For each it sends --requests `GET /livez` on one
keep-alive connection and --requests / 10 requests on fresh connections (where the head
deadline is armed at connect), and reads the server process's user+system CPU time around
each phase (psutil): CPU per request is steadier than wall time on a shared machine.
Settings alternate over --rounds; the table shows the median per setting.
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.http_load import build_store, start

SETTINGS = {"limits on (defaults)": [],
            "deadlines off": ["--header-timeout", "0", "--body-timeout", "0"]}


def cpu(pid: int) -> float:
    import psutil

    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def measure(url: str, pid: int, n: int) -> tuple[float, float]:
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    for _ in range(50):  # warm-up
        conn.request("GET", "/livez")
        conn.getresponse().read()
    c0 = cpu(pid)
    for _ in range(n):
        conn.request("GET", "/livez")
        conn.getresponse().read()
    keep = (cpu(pid) - c0) / n
    conn.close()
    m = max(n // 10, 1)
    c0 = cpu(pid)
    for _ in range(m):
        fresh = http.client.HTTPConnection(host, int(port), timeout=30)
        fresh.request("GET", "/livez")
        fresh.getresponse().read()
        fresh.close()
    return keep, (cpu(pid) - c0) / m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_conn_cost")
    ap.add_argument("--requests", type=int, default=2_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    got: dict[str, list[tuple[float, float]]] = {k: [] for k in SETTINGS}
    with tempfile.TemporaryDirectory(prefix="seqvault-conn-") as tmp:
        store = Path(tmp) / "s"
        build_store(store, 2, 10)
        for _ in range(args.rounds):
            for name, extra in SETTINGS.items():
                proc, url = start(store, *extra)
                try:
                    got[name].append(measure(url, proc.pid, args.requests))
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                time.sleep(0.2)
    print("| setting | server CPU µs/request, keep-alive | server CPU µs/request, new "
          "connection each |\n|---|---:|---:|")
    for name, rows in got.items():
        keep = statistics.median(r[0] for r in rows) * 1e6
        fresh = statistics.median(r[1] for r in rows) * 1e6
        print(f"| {name} | {keep:.0f} | {fresh:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
