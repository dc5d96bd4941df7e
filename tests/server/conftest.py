"""The real-uvicorn harness of the HTTP tests, as fixtures.

- `serve(store_or_app, **create_app_kwargs)` → a `ServerThread`: uvicorn in a daemon thread of
  the test process, on a socket bound to 127.0.0.1:0 (use it as a context manager).
- `serve_subprocess(store, *serve_args)` → `(proc, url, sock)`: `python -m seqvault serve` as
  a real subprocess on an inherited listening socket; killed at teardown if a test left it.
- `free_socket()` → a listening 127.0.0.1 socket that a child process may inherit.

Sample data (schema, events, stores) is in helpers.py: plain functions, because parametrize
lists need them at import time. test_harness.py checks the harness itself.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402
import uvicorn  # noqa: E402

from seqvault.server import create_app  # noqa: E402
from seqvault.server.protocol import IMPORT_STRING  # noqa: E402

from .helpers import ROOT  # noqa: E402


class ServerThread:
    """uvicorn serving `app` on a socket bound to 127.0.0.1:0, in a daemon thread."""

    def __init__(self, app: Any, **config: Any) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        settings: dict[str, Any] = {"log_level": "warning", "access_log": False,
                                    "lifespan": "on", "http": IMPORT_STRING, **config}
        cfg = uvicorn.Config(app, **settings)
        self.server = uvicorn.Server(cfg)
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


def _free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    s.set_inheritable(True)
    return s


def _start_subprocess(store: Path, *args: str, env: dict[str, str] | None = None
                      ) -> tuple[subprocess.Popen[bytes], str, socket.socket]:
    """`python -m seqvault serve --store S --fd N ...` on an inherited listening socket."""
    sock = _free_socket()
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


@pytest.fixture(scope="session")
def serve() -> Callable[..., ServerThread]:
    """`serve(store_path_or_app, **kw)`: a ServerThread over `create_app(store, **kw)` (or over
    an app built by the test); start and stop it with `with`."""

    def start(target: Any, *, uvicorn_config: dict[str, Any] | None = None,
              **kw: Any) -> ServerThread:
        app = create_app(target, **kw) if isinstance(target, str | os.PathLike) else target
        return ServerThread(app, **(uvicorn_config or {}))

    return start


@pytest.fixture
def serve_subprocess() -> Iterator[Callable[..., tuple[subprocess.Popen[bytes], str,
                                                       socket.socket]]]:
    """`serve_subprocess(store, *args, env=None)` → (proc, url, listening socket)."""
    started: list[tuple[subprocess.Popen[bytes], socket.socket]] = []

    def start(store: Path, *args: str, env: dict[str, str] | None = None
              ) -> tuple[subprocess.Popen[bytes], str, socket.socket]:
        proc, url, sock = _start_subprocess(store, *args, env=env)
        started.append((proc, sock))
        return proc, url, sock

    yield start
    for proc, sock in started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()


@pytest.fixture
def free_socket() -> Callable[[], socket.socket]:
    return _free_socket
