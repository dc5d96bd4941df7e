"""The batchGet amplification request of issue 13, finding 1: status, size and server memory.

    python -m bench.http_amplification                     # this checkout's server
    python -m bench.http_amplification --pythonpath OLD    # another checkout's (before/after)

Builds a store with one user of 100,000 events, starts `seqvault serve` (one worker), sends one
warm-up request, reads the server's VmRSS (/proc/<pid>/status), then sends the ~2.8 KB body
`{"user_ids": [1, 1, ... 100 times]}` and reports the status, the response size, the time, the
peak RSS (VmHWM) and the RSS afterwards, both above the baseline.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.http_load import build_store, start
from seqvault.server.memory import rss_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_amplification")
    ap.add_argument("--pythonpath", help="serve another checkout (its repository root)")
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--copies", type=int, default=100)
    args = ap.parse_args(argv)
    mib = 1 << 20
    with tempfile.TemporaryDirectory(prefix="seqvault-amp-") as tmp:
        store = Path(tmp) / "s"
        build_store(store, 2, 10)
        from seqvault import SeqVault

        with SeqVault.open(store) as v:  # user 1 gets the heavy history
            now = int(time.time() * 1000)
            n = args.events
            v.append(1, {"ts": now - 10 * n + 10 * __import__("numpy").arange(n),
                         "item_id": list(range(n)), "action": ["click"] * n,
                         "category": [1] * n, "dwell_ms": [5] * n, "scenario": ["feed"] * n})
            v.flush()
        proc, url = start(store, pythonpath=args.pythonpath)
        try:
            with httpx.Client(base_url=url, timeout=600) as c:
                c.post("/sequences:batchGet", json={"user_ids": [0]})
                base, _ = rss_bytes(proc.pid)
                body = json.dumps({"user_ids": [1] * args.copies}).encode()
                t0 = time.perf_counter()
                resp = c.post("/sequences:batchGet", content=body,
                              headers={"Content-Type": "application/json"})
                wall = time.perf_counter() - t0
                time.sleep(1.0)
                rss, peak = rss_bytes(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    print(f"request body {len(body)} B -> status {resp.status_code}, response "
          f"{len(resp.content) / mib:.1f} MiB in {wall:.1f} s; server RSS baseline "
          f"{base / mib:.0f} MiB, peak +{(peak - base) / mib:.0f} MiB, after "
          f"+{(rss - base) / mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
