"""Fixtures for the store explorer tests: a demo-like store, a real `seqvault serve` on
127.0.0.1, and headless Chromium driven by Selenium.

The store is built the way `make demo` builds one (seqvault.sample's heavy-tailed log, loaded
with `seqvault ingest`), smaller, plus a user whose item ids are above 2^53 (JavaScript's exact
integer limit) and one with long bursts of equal timestamps (the paging edge case).

Chromium comes from Debian (`make browser`, which `make test` runs, installs it when it can).
Without it the browser tests skip and say why; under CI=true they fail instead, so a CI run
can never pass by silently skipping them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx  # noqa: E402

from seqvault import Schema, SeqVault  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "schema" / "behavior.toml"
BIG_IDS_USER = 4242
BURSTY_USER = 777
DEMO_EVENTS = 40_000


# ============================================================ the store
def big_id_events(n: int, now_ms: int) -> dict[str, Any]:
    rng = np.random.default_rng(1)
    return {
        "ts": now_ms - 3_600_000 + np.arange(n, dtype=np.int64) * 1000,
        # above 2^53: a JSON number would come back rounded in JavaScript
        "item_id": (np.int64(1) << 62) + rng.integers(0, 1 << 40, n, dtype=np.int64),
        "action": np.array(["click", "impression"], dtype=object)[np.arange(n) % 2],
        "category": np.full(n, 7, dtype=np.uint16),
        "dwell_ms": np.arange(n, dtype=np.uint32),
        "scenario": np.array(["feed"] * n, dtype=object),
    }


def bursty_events(n: int, now_ms: int) -> dict[str, Any]:
    # 10 distinct timestamps for 230 events: most page boundaries fall inside a burst
    ts = now_ms - 86_400_000 + (np.arange(n, dtype=np.int64) // max(1, n // 9)) * 60_000
    return {
        "ts": ts, "item_id": np.arange(n, dtype=np.int64),
        "action": np.array(["like", "share", "click"], dtype=object)[np.arange(n) % 3],
        "category": (np.arange(n) % 5).astype(np.uint16),
        "dwell_ms": np.zeros(n, dtype=np.uint32),
        "scenario": np.array(["video"] * n, dtype=object),
    }


@pytest.fixture(scope="session")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from seqvault.sample import generate

    root = tmp_path_factory.mktemp("ui")
    log = root / "events.parquet"
    generate(log, DEMO_EVENTS)
    store = root / "store"
    subprocess.run([sys.executable, "-m", "seqvault", "ingest", str(log), "--store", str(store),
                    "--schema", str(SCHEMA)], check=True, capture_output=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    now_ms = int(time.time() * 1000)
    with SeqVault.open(store, schema=Schema.load(SCHEMA)) as v:
        v.append(BURSTY_USER, bursty_events(230, now_ms))
        v.flush()
        # left in the write-ahead log, unsealed: the overview's backlog, read from the WAL
        v.append(BIG_IDS_USER, big_id_events(120, now_ms))
        v.close(flush=False)
    return store


@pytest.fixture(scope="session")
def vault(demo_store: Path) -> Iterator[SeqVault]:
    with SeqVault.open(demo_store, read_only=True) as v:
        yield v


@pytest.fixture(scope="session")
def heavy_user(vault: SeqVault) -> int:
    """The user with the longest history (several pages, thousands of events)."""
    counts = {u: vault.read(u, columns=["ts"]).count for u in vault.users()}
    return max(counts, key=lambda u: counts[u])


# ============================================================ the server
@contextlib.contextmanager
def served(store: Path) -> Iterator[str]:
    """`seqvault serve --store S` as a user runs it, on a socket bound to 127.0.0.1:0 that
    this process hands over (no port race); yields its URL, stops it after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.set_inheritable(True)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "seqvault", "serve", "--store", str(store), "--fd",
         str(sock.fileno()), "--log-level", "warning"],
        pass_fds=(sock.fileno(),), env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sock.close()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/livez", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                out = proc.communicate()[0].decode(errors="replace")
                raise RuntimeError(f"seqvault serve did not start:\n{out}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def server_url(demo_store: Path) -> Iterator[str]:
    with served(demo_store) as url:
        yield url


STRING_USERS = ["alice", "bob/ü 1?#", "<script>x</script>"]


@pytest.fixture(scope="session")
def string_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store keyed by strings, with keys that need URL escaping and HTML escaping."""
    d = Schema.load(SCHEMA).to_dict()
    d["user"] = {"column": "user_id", "type": "string"}
    store = tmp_path_factory.mktemp("ui-str") / "store"
    now_ms = int(time.time() * 1000)
    with SeqVault.open(store, schema=Schema.from_dict(d)) as v:
        for i, user in enumerate(STRING_USERS):
            v.append(user, bursty_events(40 + 10 * i, now_ms))
    return store


@pytest.fixture(scope="session")
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=30) as c:
        yield c


# ============================================================ the browser
def chromium_paths() -> tuple[str | None, str | None]:
    browser = os.environ.get("CHROMIUM_BIN") or next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
    driver = os.environ.get("CHROMEDRIVER_BIN") or shutil.which("chromedriver")
    return browser, driver


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests cannot run under CI: {reason}", pytrace=False)
    pytest.skip(f"browser tests skipped: {reason}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _unavailable("selenium is not installed (pip install -e '.[dev]')")
    binary, driver = chromium_paths()
    if not (binary and driver and os.access(binary, os.X_OK) and os.access(driver, os.X_OK)):
        _unavailable("chromium / chromedriver not found; `make browser` installs Debian's "
                     "chromium and chromium-driver (needs root and apt-get)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = binary  # type: ignore[assignment]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1600", "--disable-extensions", "--no-first-run"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console errors for tests
    # Given the driver's path, Selenium does not try to download one (no network here).
    d = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    d.set_page_load_timeout(60)
    try:
        yield d
    finally:
        d.quit()
