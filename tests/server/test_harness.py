"""The harness itself (conftest.py): the server really listens on a socket and really stops;
sample stores hold what they say."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from seqvault import SeqVault

from .helpers import make_store


def test_server_thread_listens_on_loopback_and_stops(tmp_path: Path,
                                                     serve: Callable[..., Any]) -> None:
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
