"""Start `seqvault serve` as a subprocess on a fresh 127.0.0.1 port (an inherited listening
socket, so there is no race for the port) and wait until `/readyz` answers: shared by the
HTTP benchmarks (http_bench, http_load, ui_bench)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def repo_pythonpath(checkout: str | None = None) -> str:
    """This checkout (or `checkout`) first, then whatever PYTHONPATH the caller had."""
    rest = os.environ.get("PYTHONPATH", "")
    return (checkout or str(REPO)) + (os.pathsep + rest if rest else "")


def start_serve(store: Path, *args: str, checkout: str | None = None, backlog: int = 512,
                timeout: float = 60.0) -> tuple[subprocess.Popen[bytes], str]:
    """(process, base url) of `seqvault serve --store STORE ARGS...`, ready. `checkout`: run
    another source tree's SeqVault (before/after comparisons)."""
    import httpx

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen([sys.executable, "-m", "seqvault", "serve", "--store", str(store),
                             "--fd", str(sock.fileno()), "--log-level", "warning", *args],
                            pass_fds=(sock.fileno(),), cwd=checkout,  # `-m` looks in cwd first
                            env={**os.environ, "PYTHONPATH": repo_pythonpath(checkout)})
    sock.close()  # the child holds its own copy
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"seqvault serve did not become ready at {url}")
        time.sleep(0.1)
