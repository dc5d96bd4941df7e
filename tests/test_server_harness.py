"""Shared helpers for the HTTP tests: a real uvicorn server on an ephemeral 127.0.0.1 port
(in a thread of the test process, or as a `seqvault serve` subprocess), and sample stores.

Other test_server_*.py modules import from here; the two tests at the bottom check the
harness itself (the server really listens on a socket and really stops).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import uvicorn  # noqa: E402

from seqvault import Schema, SeqVault  # noqa: E402
from seqvault.server import create_app  # noqa: E402,F401
from seqvault.server.protocol import IMPORT_STRING  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "schema" / "behavior.toml"
ACTIONS = np.array(["impression", "click", "like", "collect", "share", "comment"], dtype=object)
SCENARIOS = np.array(["feed", "video", "search"], dtype=object)
TOKEN = "s3cret-token-for-tests"


def now_ms() -> int:
    return int(time.time() * 1000)


def events(n: int, *, start: int | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """`n` events in the behavior.toml schema, timestamps inside the retention window."""
    rng = np.random.default_rng(seed)
    t0 = (now_ms() - 10 * n - 1000) if start is None else start
    return {
        "ts": t0 + np.arange(n, dtype=np.int64) * 10,
        "item_id": rng.integers(0, 2**62, n, dtype=np.int64),
        "action": ACTIONS[rng.integers(0, ACTIONS.size, n)],
        "category": rng.integers(0, 2**16, n).astype(np.uint16),
        "dwell_ms": rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32),
        "scenario": SCENARIOS[rng.integers(0, SCENARIOS.size, n)],
    }


def make_store(path: Path, users: dict[Any, int], *, flush: bool = True,
               schema: Schema | None = None) -> Path:
    """A store with `users[u]` events for each user; sealed segments when `flush`."""
    with SeqVault.open(path, schema=schema or Schema.load(SCHEMA)) as v:
        for i, (u, n) in enumerate(users.items()):
            v.append(u, events(n, seed=i))
        if flush:
            v.flush()
    return path


class ServerThread:
    """uvicorn serving `app` on a socket bound to 127.0.0.1:0, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                http=IMPORT_STRING)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()

    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


def serve(store: Path, **kw: Any) -> ServerThread:
    return ServerThread(create_app(store, **kw))


def free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


def serve_subprocess(store: Path, *args: str, env: dict[str, str] | None = None
                     ) -> tuple[subprocess.Popen[bytes], str, socket.socket]:
    """`python -m seqvault serve --store S --fd N ...` on an inherited listening socket."""
    sock = free_socket()
    port = sock.getsockname()[1]
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqvault", "serve", "--store", str(store), "--fd",
         str(sock.fileno()), *args],
        pass_fds=(sock.fileno(),), env=full_env, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(url + "/livez", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out = proc.communicate()[0].decode(errors="replace")
            raise RuntimeError(f"seqvault serve did not start:\n{out}")
        time.sleep(0.05)
    return proc, url, sock


# ------------------------------------------------------------------ the harness itself
def test_server_thread_listens_on_loopback_and_stops(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {1: 3})
    with serve(store) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        with srv.client() as c:
            assert c.get("/livez").json() == {"status": "alive"}
    with pytest.raises(httpx.ConnectError):
        httpx.get(srv.url + "/livez", timeout=2)


def test_make_store_holds_the_events(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {1: 5, 2: 7})
    with SeqVault.open(store, read_only=True) as v:
        assert len(v.read(1)) == 5 and len(v.read(2)) == 7
