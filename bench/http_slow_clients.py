"""Idle flood and slow clients against `seqvault serve` with its default connection limits.

    python -m bench.http_slow_clients                       # 1,500 idle + 3 x 50 partial
    python -m bench.http_slow_clients --idle 3000 --header-timeout 5

Opens --idle connections that send nothing, then 50 that stop mid-head and 50 that stop
mid-body, all to one `seqvault serve` (one worker, defaults unless given), and reports: how
many were answered 503 at once (over --max-connections), whether a normal request is still
answered during the flood, how long until every connection was closed by the server, what the
server answered them, and the server's RSS. Bounded: every socket has a hang guard of
header/body timeout + 30 s.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

from bench.http_load import build_store, start
from seqvault.server.memory import rss_bytes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.http_slow_clients")
    ap.add_argument("--idle", type=int, default=1_500)
    ap.add_argument("--partial", type=int, default=50)
    ap.add_argument("--header-timeout", type=float, default=10.0)
    ap.add_argument("--body-timeout", type=float, default=60.0)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqvault-slow-") as tmp:
        store = Path(tmp) / "s"
        build_store(store, 2, 10)
        proc, url = start(store, "--header-timeout", str(args.header_timeout),
                          "--body-timeout", str(args.body_timeout))
        port = int(url.rsplit(":", 1)[1])
        base, _ = rss_bytes(proc.pid)
        socks: dict[socket.socket, str] = {}
        t0 = time.monotonic()
        try:
            for _ in range(args.idle):
                socks[socket.create_connection(("127.0.0.1", port))] = "idle"
            for _ in range(args.partial):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
                socks[s] = "partial head"
            for _ in range(args.partial):
                s = socket.create_connection(("127.0.0.1", port))
                s.sendall(b"POST /sequences:batchGet HTTP/1.1\r\nHost: x\r\nContent-Type: "
                          b"application/json\r\nContent-Length: 100\r\n\r\n{\"user_ids\"")
                socks[s] = "partial body"
            during = httpx.get(url + "/users/1/sequence?last=5", timeout=30).status_code
            sel = selectors.DefaultSelector()
            for s in socks:
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
            answers: Counter[tuple[str, str]] = Counter()
            closed_at: list[float] = []
            got: dict[socket.socket, bytes] = {s: b"" for s in socks}
            guard = t0 + max(args.header_timeout, args.body_timeout) + 30
            while len(closed_at) < len(socks) and time.monotonic() < guard:
                for key, _ in sel.select(timeout=0.5):
                    s = key.fileobj
                    assert isinstance(s, socket.socket)
                    try:
                        chunk = s.recv(65536)
                    except OSError:
                        chunk = b""
                    if chunk:
                        got[s] += chunk
                        continue
                    sel.unregister(s)
                    closed_at.append(time.monotonic() - t0)
                    status = got[s][9:12].decode() or "closed, no answer"
                    answers[(socks[s], status)] += 1
            still_open = len(socks) - len(closed_at)
            after = httpx.get(url + "/users/1/sequence?last=5", timeout=30).status_code
            rss, peak = rss_bytes(proc.pid)
        finally:
            for s in socks:
                s.close()
            proc.terminate()
            proc.wait(timeout=30)
    mib = 1 << 20
    print(f"{len(socks)} slow connections; a normal read during the flood: {during}, after: "
          f"{after}; still open at the end: {still_open}; last closed after "
          f"{max(closed_at, default=0):.1f} s")
    for (kind, status), n in sorted(answers.items()):
        print(f"  {kind}: {n} x {status}")
    print(f"server RSS baseline {base / mib:.0f} MiB, peak +{(peak - base) / mib:.0f} MiB, "
          f"end +{(rss - base) / mib:.0f} MiB")
    return 1 if still_open else 0


if __name__ == "__main__":
    sys.exit(main())
