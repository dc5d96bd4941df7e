"""The last step of `make demo`: serve a store over HTTP and fetch one user's sequence.

    from seqvault.server.demo import serve_and_fetch
    serve_and_fetch("demo-store")            # starts `seqvault serve`, GETs, prints, stops

The server runs as a real `seqvault serve` subprocess on a socket this process binds to
127.0.0.1:0 and hands over (no port race); it is stopped with SIGTERM (SIGKILL after 10 s).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ..vault import SeqVault


def _first_user(store_path: str | os.PathLike[str]) -> Any:
    with SeqVault.open(store_path, read_only=True) as v:
        for user in v.users():
            return user
    raise SystemExit(f"{store_path}: the store has no users to fetch")


def serve_and_fetch(store_path: str | os.PathLike[str], user_id: Any = None, *, last: int = 5,
                    timeout: float = 60.0, out: Any = None) -> dict[str, Any]:
    """Start `seqvault serve --store store_path`, GET /users/{user_id}/sequence?last=N as JSON,
    print it, stop the server and return the decoded body. `user_id` defaults to any user."""
    out = out or sys.stdout
    if user_id is None:
        user_id = _first_user(store_path)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "seqvault", "serve", "--store", str(store_path),
           "--fd", str(sock.fileno()), "--log-level", "warning"]
    from ..shell import seqvault_command  # the spelling that works in this shell

    print(f"$ {seqvault_command()} serve --store {store_path}   (listening on {url})", file=out)
    proc = subprocess.Popen(cmd, pass_fds=(sock.fileno(),), env=env)
    sock.close()  # the child holds its own copy
    try:
        with httpx.Client(base_url=url, timeout=10) as client:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError(f"seqvault serve exited with code {proc.returncode}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"seqvault serve was not ready after {timeout} s")
                time.sleep(0.1)
            path = f"/users/{user_id}/sequence"
            resp = client.get(path, params={"last": last})
            resp.raise_for_status()
            doc = resp.json()
        print(f"$ curl '{url}{path}?last={last}'   → {resp.status_code} "
              f"{resp.headers['content-type']}, {doc['count']} events", file=out)
        cols = doc["columns"]
        names = list(cols)
        widths = [max(len(n), *(len(str(v)) for v in cols[n])) if cols[n] else len(n)
                  for n in names]
        print("  " + "  ".join(n.ljust(w) for n, w in zip(names, widths)).rstrip(), file=out)
        for i in range(doc["count"]):
            row = "  ".join(str(cols[n][i]).ljust(w) for n, w in zip(names, widths))
            print("  " + row.rstrip(), file=out)
        return doc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    serve_and_fetch(sys.argv[1], *(sys.argv[2:3] or []))
